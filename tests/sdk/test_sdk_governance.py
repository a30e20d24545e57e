"""Quotas and rate limits (in memory) as the official `openai` SDK sees them,
with `max_retries` left at the SDK's default (2).

What the SDK does with a 429 (openai-python `_should_retry`): it obeys
`x-should-retry` when present; otherwise it retries 408, 409, 429 and 5xx,
waiting `Retry-After` when that is at most 120 s, and it never retries a
`Retry-After` beyond 120 s. So:

- a **hard stop** (a quota whose window reopens more than a minute away)
  answers 429 with `x-should-retry: false` and a long `Retry-After`: the SDK
  raises `RateLimitError` after exactly one exchange, and the vendor is
  never called;
- a **soft stop** (a quota window of a second, a client rate limit, the
  endpoint's `max_rate`) answers 429 (503 for `max_rate`) with a short
  `Retry-After` and no `x-should-retry`: the SDK waits that long, retries
  once, and the retry is admitted. The refused exchanges never reach the
  vendor.

The wire (`Wire`, an httpx hook) counts the exchanges per SDK call; the
mock vendor counts what the gateway forwarded.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import openai
import pytest

from conftest import launch_gateway, sdk_with_default_retries, stop_gateway

VENDOR = "openai"
MODEL = "gpt-5.4-mini"
ASK = [{"role": "user", "content": "Hello there"}]


def governance_config(mocks) -> dict:
    def tiers(rule):
        return [{"rule_name": rule, "tier_value_as": "*", "strategy": "header", "key": "X-Team"}]

    def endpoint(path, extra):
        return {"endpoint": path, "method": "POST", "output_encoding": "no-op", "timeout": "20s",
                "input_headers": ["X-Team"], "extra_config": extra,
                "backend": [{"host": [mocks[VENDOR].url], "url_pattern": "/unused",
                             "extra_config": {"ai/llm": {"provider": "openai"}}}]}

    return {
        "version": 3,
        "extra_config": {
            "ai/providers": {"providers": [
                {"name": "openai", "provider": "openai", "model": MODEL, "format": "openai",
                 "endpoint": mocks[VENDOR].url + "/v1/chat/completions",
                 "credentials": '{{ env "OPENAI_API_KEY" }}'}]},
            "governance/processors": {"quotas": [
                {"name": "requests", "rules": [{"name": "two-a-year", "limits": [{"amount": 2, "unit": "year"}]}]},
                {"name": "tokens", "rules": [{"name": "small", "limits": [{"amount": 400, "unit": "year"}]}]},
                {"name": "per-second", "rules": [{"name": "one", "limits": [{"amount": 1, "unit": "second"}]}]},
            ]},
        },
        "endpoints": [
            endpoint("/hard/v1/chat/completions", {"governance/quota": {
                "quota_name": "requests", "tier_key": "X-Team", "tiers": tiers("two-a-year")}}),
            endpoint("/tokens/v1/chat/completions", {"governance/quota": {
                "quota_name": "tokens", "tier_key": "X-Team", "weight_strategy": "usage", "tiers": tiers("small")}}),
            endpoint("/soft/v1/chat/completions", {"governance/quota": {
                "quota_name": "per-second", "tier_key": "X-Team", "tiers": tiers("one")}}),
            endpoint("/client-rate/v1/chat/completions", {"qos/ratelimit/router": {
                "client_max_rate": 1, "client_capacity": 1, "every": "1s", "strategy": "header", "key": "X-Team"}}),
            endpoint("/max-rate/v1/chat/completions", {"qos/ratelimit/router": {
                "max_rate": 1, "capacity": 1, "every": "1s"}}),
        ],
    }


@pytest.fixture(scope="module")
def governance_gateway(mocks, tmp_path_factory):
    config = json.dumps(governance_config(mocks), indent=1)
    gw = launch_gateway(config, tmp_path_factory.mktemp("governance-gateway"), mocks.env)
    yield gw
    stop_gateway(gw)


@pytest.fixture
def sdk(governance_gateway, wire):
    """An SDK client for one endpoint, as a caller of its own (a fresh team)."""
    def make(prefix, team=None):
        team = team or "team-" + uuid.uuid4().hex[:8]
        return sdk_with_default_retries(f"{governance_gateway.url}/{prefix}/v1", wire,
                                        default_headers={"X-Team": team})

    return make


@pytest.fixture
def far_from_new_year():
    # A yearly window reopens at New Year (UTC): right before it, a hard stop
    # is soft. Not worth a flaky run once a year.
    now = dt.datetime.now(dt.timezone.utc)
    if (dt.datetime(now.year + 1, 1, 1, tzinfo=dt.timezone.utc) - now).total_seconds() < 300:
        pytest.skip("the yearly window reopens within five minutes")


def eventually_remaining(gateway, team, expected, limit=5.0):
    """Waits until the token quota's reconciliation shows `expected` left,
    read from refusals outside the SDK (an oversized reservation)."""
    deadline = time.monotonic() + limit
    while True:
        status, headers, _ = gateway.post("/tokens/v1/chat/completions",
                                          {"model": MODEL, "messages": ASK, "max_tokens": 100000},
                                          {"X-Team": team})
        assert status == 429
        remaining = int({k.lower(): v for k, v in headers.items()}["x-quota-remaining"])
        if remaining == expected:
            return
        assert time.monotonic() < deadline, f"remaining {remaining}, expected {expected}"
        time.sleep(0.02)


def test_a_request_quota_hard_stop_is_not_retried_by_the_sdk(far_from_new_year, mocks, sdk, wire):
    client = sdk("hard")
    for _ in range(2):
        r = client.chat.completions.with_raw_response.create(model=MODEL, messages=ASK)
        assert r.retries_taken == 0 and r.http_response.status_code == 200
    assert wire.statuses == [200, 200]
    assert r.headers["x-quota-remaining"] == "0"
    wire.clear()
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model=MODEL, messages=ASK)
        headers = info.value.response.headers
        assert info.value.code == "quota_exceeded"
        assert headers["x-should-retry"] == "false"
        assert int(headers["retry-after"]) > 60
    assert wire.statuses == [429, 429], "exactly one exchange per SDK call: no retry of a hard stop"
    assert mocks[VENDOR].count == 2, "refused calls never reach the vendor"


def test_a_token_quota_refuses_a_reservation_that_does_not_fit_and_the_sdk_does_not_retry(
        far_from_new_year, governance_gateway, mocks, sdk, wire):
    team = "team-" + uuid.uuid4().hex[:8]
    client = sdk("tokens", team)
    # Reserved before the call: prompt bytes / 4 + max_tokens; charged when
    # the answer ends: the vendor's usage (a few tokens).
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    used = r.usage.prompt_tokens + r.usage.completion_tokens
    assert mocks[VENDOR].count == 1
    eventually_remaining(governance_gateway, team, 400 - used)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1000)
    assert info.value.code == "quota_exceeded"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert int(info.value.response.headers["x-quota-remaining"]) == 400 - used
    assert mocks[VENDOR].count == 1, "a reservation that does not fit is refused before the vendor"
    # What fits still goes through.
    client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    assert mocks[VENDOR].count == 2
    assert wire.statuses == [200, 429, 200]


def test_a_quota_window_of_a_second_is_retried_by_the_sdk_after_retry_after(mocks, sdk, wire):
    client = sdk("soft")
    client.chat.completions.create(model=MODEL, messages=ASK)
    # Calls right after one another share a one-second window (or, across a
    # boundary, do not): at most a few calls until one is refused.
    for calls in range(2, 7):
        wire.clear()
        r = client.chat.completions.with_raw_response.create(model=MODEL, messages=ASK)
        assert r.http_response.status_code == 200
        if r.retries_taken:
            break
    else:
        pytest.fail("no call was refused by a one-per-second quota")
    assert r.retries_taken == 1
    assert wire.statuses == [429, 200], "refused once, retried once by the SDK, admitted"
    _, _, _, refused = wire.exchanges[0]
    assert refused["retry-after"] == "1"
    assert "x-should-retry" not in refused, "a window that reopens within a minute may be retried"
    assert mocks[VENDOR].count == calls, "only admitted calls reach the vendor"


@pytest.mark.parametrize("prefix,status", [("client-rate", 429), ("max-rate", 503)])
def test_a_rate_limit_refusal_is_retried_by_the_sdk_after_retry_after(prefix, status, mocks, sdk, wire):
    client = sdk(prefix)
    client.chat.completions.create(model=MODEL, messages=ASK)
    # The bucket (1 a second, burst 1) is empty now; it refills continuously,
    # so the next call is refused and the SDK's retry after Retry-After fits.
    r = client.chat.completions.with_raw_response.create(model=MODEL, messages=ASK)
    assert r.retries_taken == 1
    assert wire.statuses == [200, status, 200]
    _, _, _, refused = wire.exchanges[1]
    assert refused["retry-after"] == "1"
    assert "x-should-retry" not in refused
    assert refused["ratelimit"].endswith("r=0;t=1")
    assert mocks[VENDOR].count == 2, "the refused exchange never reached the vendor"
