"""`ai/router` failover through the official `openai` SDK, as applications
use it: `max_retries` left at the SDK's default (2).

One gateway runs `routing_config` below: a primary (the OpenAI mock), a
secondary (the Anthropic mock, served to OpenAI clients) and a provider
nothing listens on. The mocks fail on command and count what they receive;
`Wire` records every exchange between the SDK and the gateway. Each
scenario asserts the mocks' counts equal exactly what the gateway's
failover made, and the wire shows one exchange per SDK call: the SDK never
retries what the gateway already failed over. When every provider fails,
the gateway's one error carries `x-should-retry: false`, which is what
stops the SDK from retrying a 429 or a 5xx (it retries both otherwise, as
`test_without_the_router_the_sdk_retries_what_the_gateway_answers` shows).

Mirrors tests/routing.rs (the same scenarios over raw HTTP).
"""

from __future__ import annotations

import json
import time

import openai
import pytest

from conftest import CLIENT_KEY, launch_gateway, sdk_with_default_retries, stop_gateway
from mock_vendors import RefusingPort

PRIMARY, SECONDARY = "openai", "anthropic"  # the mocks behind the two providers
ASK = [{"role": "user", "content": "one two three four"}]


def routing_config(mocks, refusing: RefusingPort) -> dict:
    def provider(name, vendor, model, endpoint, credentials):
        return {"name": name, "provider": vendor, "model": model, "endpoint": endpoint,
                "credentials": credentials, "format": "openai"}

    def endpoint(path, router):
        return {"endpoint": path, "method": "POST", "output_encoding": "no-op", "timeout": "20s",
                "input_headers": ["X-Plan"],  # gates see only the headers an endpoint forwards
                "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/unused",
                             "extra_config": {"ai/router": router}}]}

    openai_key, anthropic_key = '{{ env "OPENAI_API_KEY" }}', '{{ env "ANTHROPIC_API_KEY" }}'
    failover = {"failover": "secondary", "retry": {"attempt_timeout": "1s"}, "routes": [{"provider": "primary"}]}
    return {
        "version": 3,
        "timeout": "30s",
        "extra_config": {
            "ai/providers": {"providers": [
                provider("primary", "openai", "gpt-5.4-mini", mocks[PRIMARY].url + "/v1/chat/completions", openai_key),
                provider("secondary", "anthropic", "claude-haiku-4-5", mocks[SECONDARY].url + "/v1/messages", anthropic_key),
                provider("unreachable", "openai", "gpt-5.4-mini", refusing.url + "/v1/chat/completions", openai_key),
            ]},
            "ai/classifiers": {"gates": [
                {"name": "pro", "rule": "header", "header": {"name": "X-Plan", "value": "pro"}},
            ]},
        },
        "endpoints": [
            # The primary fails → the secondary answers (one attempt each).
            endpoint("/failover/v1/chat/completions", failover),
            # The primary cannot be reached at all.
            endpoint("/unreachable/v1/chat/completions", {**failover, "routes": [{"provider": "unreachable"}]}),
            # Two attempts on the primary before failing over.
            endpoint("/retry/v1/chat/completions",
                     {"failover": "secondary", "retry": {"attempts": 2, "backoff": "10ms", "attempt_timeout": "5s"},
                      "routes": [{"provider": "primary"}]}),
            # A breaker that opens after two failures and probes after 1 s.
            endpoint("/breaker/v1/chat/completions",
                     {"failover": "secondary", "routes": [{"provider": "primary"}],
                      "circuit_breaker": {"interval": 60, "timeout": 1, "max_errors": 2, "log_status_change": True}}),
            # Router rules: a header gate, a model alias, no catch-all.
            endpoint("/routed/v1/chat/completions",
                     {"routes": [{"gates": ["pro"], "provider": "secondary"},
                                 {"models": {"aliases": {"fast": ["primary", "secondary"]}}}]}),
            # Hedging: both at once, the first good answer wins.
            endpoint("/hedged/v1/chat/completions",
                     {"routes": [{"fan_out": {"providers": ["primary", "secondary"], "mode": "first"}}]}),
            # No router: the primary alone (the control).
            {"endpoint": "/plain/v1/chat/completions", "method": "POST", "output_encoding": "no-op",
             "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/unused",
                          "extra_config": {"ai/llm": {"provider": "primary"}}}]},
        ],
    }


@pytest.fixture(scope="module")
def routing_gateway(mocks, tmp_path_factory):
    refusing = RefusingPort()
    config = json.dumps(routing_config(mocks, refusing), indent=1)
    gw = launch_gateway(config, tmp_path_factory.mktemp("routing-gateway"), mocks.env)
    yield gw
    stop_gateway(gw)
    refusing.close()


@pytest.fixture
def sdk(routing_gateway, wire):
    def make(prefix, **kw):
        return sdk_with_default_retries(f"{routing_gateway.url}/{prefix}/v1", wire, **kw)

    return make


def read_stream(stream, pacer=None):
    """(text, finish_reason, chunk ids) of a streamed chat completion."""
    text, finish, ids = "", None, set()
    for chunk in stream:
        ids.add(chunk.id)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if pacer is not None and pacer.pieces:
            pacer.ack_text(text)
    return text, finish, ids


def eventually(check, what, limit=10.0):
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# How the primary fails, for plain and streamed requests: (id, fail kwargs).
FAILURES = [
    ("500", dict(mode="status", status=500)),
    ("503-retry-after", dict(mode="status", status=503, retry_after=1)),
    ("429-retry-after", dict(mode="status", status=429, retry_after=1)),
    ("401", dict(mode="status", status=401)),
    ("200-error-body", dict(mode="error_body", status=500)),
    ("hang-past-attempt-timeout", dict(mode="hang")),
    ("connection-reset", dict(mode="reset")),
]
# Streams only: the vendor's stream fails before its first real event.
STREAM_FAILURES = FAILURES + [
    ("stream-error-before-first-event", dict(mode="midstream", after=0)),
    ("stream-cut-before-first-event", dict(mode="drop", after=0)),
]


@pytest.mark.parametrize("failure", [f for _, f in FAILURES], ids=[i for i, _ in FAILURES])
def test_primary_fails_secondary_answers(failure, mocks, sdk, wire):
    mocks[PRIMARY].fail(**failure)
    r = sdk("failover").chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    answer = mocks[SECONDARY].last["answer"]
    assert r.choices[0].message.content == answer["text"]
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (answer["input_tokens"], answer["output_tokens"])
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (1, 1)
    assert wire.statuses == [200], "the SDK sent the request once"
    if failure["mode"] == "hang":
        eventually(lambda: mocks[PRIMARY].last["closed_by_client"],
                   "the gateway did not close the hanging attempt's connection")


@pytest.mark.parametrize("failure", [f for _, f in STREAM_FAILURES], ids=[i for i, _ in STREAM_FAILURES])
def test_primary_fails_secondary_answers_streamed(failure, mocks, sdk, wire):
    mocks[PRIMARY].fail(**failure)
    pacer = mocks[SECONDARY].pace()
    stream = sdk("failover").chat.completions.create(
        model="gpt-5.4-mini", messages=ASK, stream=True, stream_options={"include_usage": True})
    text, finish, ids = read_stream(stream, pacer)
    answer = mocks[SECONDARY].last["answer"]
    assert text == answer["text"], "one clean answer, the secondary's"
    assert finish == "stop"
    assert len(ids) == 1, f"one answer, not several spliced: {ids}"
    assert not pacer.timed_out and pacer.sent == len(pacer.pieces), "the secondary's answer streamed as it came"
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (1, 1)
    assert wire.statuses == [200]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_unreachable_primary_fails_over(stream, mocks, sdk, wire):
    create = sdk("unreachable").chat.completions.create
    if stream:
        text, finish, _ = read_stream(create(model="gpt-5.4-mini", messages=ASK, stream=True))
    else:
        r = create(model="gpt-5.4-mini", messages=ASK)
        text, finish = r.choices[0].message.content, r.choices[0].finish_reason
    assert (text, finish) == (mocks[SECONDARY].last["answer"]["text"], "stop")
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (0, 1)
    assert wire.statuses == [200]


@pytest.mark.parametrize("mode", ["midstream", "drop"])
@pytest.mark.parametrize("after", [1, 2])
def test_a_stream_that_dies_after_its_first_byte_is_an_sdk_error(mode, after, mocks, sdk, wire):
    mocks[PRIMARY].fail(mode, after=after)
    text, finish = "", None
    with pytest.raises(openai.APIError) as info:
        for chunk in sdk("failover").chat.completions.create(model="gpt-5.4-mini", messages=ASK, stream=True):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
    assert not isinstance(info.value, openai.APIConnectionError), "the stream ended in an error event, not a cut"
    assert text == "".join(mocks[PRIMARY].last["answer"]["pieces"][:after]), "what was streamed, nothing spliced in"
    assert finish is None, "no normal finish for a stream that died"
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (1, 0), "no failover after the first byte"
    assert wire.statuses == [200]


LAST_FAILURES = [
    (dict(mode="status", status=503), 503, openai.InternalServerError),
    (dict(mode="status", status=429, retry_after=1), 429, openai.RateLimitError),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("last,status,exc", LAST_FAILURES, ids=["503", "429-retry-after"])
def test_when_every_provider_fails_the_sdk_gets_one_error_and_does_not_retry(last, status, exc, stream, mocks, sdk, wire):
    mocks[PRIMARY].fail("status", status=500)
    mocks[SECONDARY].fail(**last)
    with pytest.raises(exc) as info:
        r = sdk("failover").chat.completions.create(model="gpt-5.4-mini", messages=ASK, stream=stream)
        if stream:
            read_stream(r)
    assert info.value.status_code == status
    assert info.value.response.headers.get("x-should-retry") == "false"
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (1, 1)
    assert wire.count == 1, f"the SDK retried the gateway's final error: {wire.statuses}"


def test_without_the_router_the_sdk_retries_what_the_gateway_answers(mocks, sdk, wire):
    # The control for the counts above: a plain `ai/llm` endpoint passes a
    # vendor's 500 on as it is, and the SDK (max_retries=2) retries it.
    mocks[PRIMARY].fail("status", status=500, times=3)
    with pytest.raises(openai.InternalServerError) as info:
        sdk("plain").chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    assert info.value.response.headers.get("x-should-retry") is None
    assert wire.statuses == [500, 500, 500]
    assert mocks[PRIMARY].count == 3


def test_a_client_error_is_answered_without_failover_or_sdk_retry(mocks, sdk, wire):
    mocks[PRIMARY].fail("status", status=400)
    with pytest.raises(openai.BadRequestError):
        sdk("failover").chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (1, 0)
    assert wire.statuses == [400]


def test_the_gateway_retries_after_retry_after_and_the_sdk_sees_one_answer(mocks, sdk, wire):
    mocks[PRIMARY].fail("status", status=429, retry_after=1)
    r = sdk("retry").chat.completions.with_raw_response.create(model="gpt-5.4-mini", messages=ASK)
    assert r.retries_taken == 0
    assert r.parse().choices[0].message.content == mocks[PRIMARY].last["answer"]["text"]
    first, second = mocks[PRIMARY].requests
    assert second["at"] - first["at"] >= 0.9, "the retry waited what Retry-After said (1 s)"
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (2, 0)
    assert wire.statuses == [200]


def test_an_open_breaker_skips_the_primary_and_a_probe_restores_it(mocks, sdk, wire):
    client = sdk("breaker")
    mocks[PRIMARY].fail("status", status=500, times=2)
    for _ in range(4):
        r = client.chat.completions.create(model="gpt-5.4-mini", messages=ASK)
        assert r.choices[0].message.content.startswith("Hello from anthropic")
    # The primary would answer now, but the open breaker no longer calls it.
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (2, 4)
    time.sleep(1.2)  # the breaker's timeout: half-open afterwards
    r = client.chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    assert r.choices[0].message.content.startswith("Hello from openai")
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (3, 4), "one probe, and it closed the breaker"
    client.chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    assert mocks[PRIMARY].count == 4
    assert wire.statuses == [200] * 6


def test_router_rules_through_the_sdk(mocks, sdk, wire):
    client = sdk("routed")
    # A header gate.
    r = client.chat.completions.create(model="gpt-5.4-mini", messages=ASK, extra_headers={"X-Plan": "pro"})
    assert r.choices[0].message.content.startswith("Hello from anthropic")
    # A model alias: its providers in failover order; the vendor gets its own model.
    r = client.chat.completions.create(model="fast", messages=ASK)
    assert r.choices[0].message.content.startswith("Hello from openai")
    assert mocks[PRIMARY].last["summary"]["model"] == "gpt-5.4-mini"
    mocks[PRIMARY].fail("status", status=503)
    r = client.chat.completions.create(model="fast", messages=ASK)
    assert r.choices[0].message.content.startswith("Hello from anthropic")
    # No route matches: a 400 the SDK does not retry.
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    assert info.value.code == "no_route_matched"
    assert info.value.response.headers.get("x-should-retry") == "false"
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (2, 2)
    assert wire.statuses == [200, 200, 200, 400]


def test_hedging_takes_the_first_good_answer_and_cancels_the_other(mocks, sdk, wire):
    mocks[PRIMARY].fail("hang")
    r = sdk("hedged").chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    assert r.choices[0].message.content == mocks[SECONDARY].last["answer"]["text"]
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (1, 1)
    eventually(lambda: mocks[PRIMARY].last["closed_by_client"], "the losing attempt was not cancelled")
    assert wire.statuses == [200]


def test_a_client_that_gives_up_cancels_every_attempt(mocks, routing_gateway):
    # The client's own timeout (1 s, no retry) comes long before the
    # endpoint's (20 s): the vendors see their connections close because the
    # client went away.
    mocks[PRIMARY].fail("hang")
    mocks[SECONDARY].fail("hang")
    client = openai.OpenAI(base_url=routing_gateway.url + "/hedged/v1", api_key=CLIENT_KEY,
                           timeout=1.0, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-5.4-mini", messages=ASK)
    assert (mocks[PRIMARY].count, mocks[SECONDARY].count) == (1, 1)
    eventually(lambda: mocks[PRIMARY].last["closed_by_client"] and mocks[SECONDARY].last["closed_by_client"],
               "an attempt outlived its client", limit=10.0)
