"""The official `openai` SDK against the gateway (`format: openai`), for
every vendor behind it."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import vendor_saw
from targets import TARGETS

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

targets = pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])


@targets
def test_plain(target, mocks, openai_client):
    r = openai_client(target).chat.completions.create(
        model=target.model, messages=[{"role": "user", "content": "What is up?"}]
    )
    rec = vendor_saw(mocks, target)
    assert rec["summary"]["system"] is None
    assert r.choices[0].message.content == rec["answer"]["text"]
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == rec["answer"]["input_tokens"]
    assert r.usage.completion_tokens == rec["answer"]["output_tokens"]


@targets
def test_system_prompt(target, mocks, openai_client):
    r = openai_client(target).chat.completions.create(
        model=target.model,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    )
    rec = vendor_saw(mocks, target)
    assert rec["summary"]["system"] == "You are terse."
    assert [m["role"] for m in rec["summary"]["messages"]] == ["user"]
    assert r.choices[0].message.content == rec["answer"]["text"]


@targets
def test_stream_arrives_incrementally_with_usage(target, mocks, openai_client):
    pacer = mocks[target.mock].pace()
    stream = openai_client(target).chat.completions.create(
        model=target.model, messages=[{"role": "user", "content": "Tell me four words"}],
        stream=True, stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
        if pacer.pieces:
            pacer.ack_text(text)
    rec = vendor_saw(mocks, target)
    assert not pacer.timed_out, "the mock waited in vain: the gateway held an event back"
    assert pacer.sent == len(pacer.pieces) >= 4
    assert text == rec["answer"]["text"]
    assert finish == "stop"
    assert usage is not None, "no usage chunk although stream_options.include_usage was set"
    assert usage.prompt_tokens == rec["answer"]["input_tokens"]
    assert usage.completion_tokens == rec["answer"]["output_tokens"]


@targets
def test_stream_without_usage_asked_has_none(target, mocks, openai_client):
    chunks = list(openai_client(target).chat.completions.create(
        model=target.model, messages=[{"role": "user", "content": "Hi"}], stream=True,
    ))
    rec = vendor_saw(mocks, target)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == rec["answer"]["text"]
    assert [c.usage for c in chunks if c.usage] == []


@targets
def test_tools_round_trip(target, mocks, openai_client):
    client = openai_client(target)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model=target.model, messages=ask, tools=[WEATHER])
    rec = vendor_saw(mocks, target)
    assert rec["summary"]["tools"] == ["get_weather"]
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    mocks.reset()
    r2 = client.chat.completions.create(model=target.model, tools=[WEATHER], messages=ask + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ])
    rec = vendor_saw(mocks, target)
    last = rec["summary"]["messages"][-1]
    assert last["role"] == "tool" and last["tool_result"] == "sunny, 21C"
    assert rec["summary"]["messages"][-2]["tool_call"]["arguments"] == {"city": "Paris"}
    assert r2.choices[0].message.content == "The tool said: sunny, 21C"


@targets
def test_tools_streamed_arguments_arrive_intact(target, mocks, openai_client):
    stream = openai_client(target).chat.completions.create(
        model=target.model, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                c["id"] = tc.id or c["id"]
                if tc.function:
                    c["name"] = tc.function.name or c["name"]
                    c["arguments"] += tc.function.arguments or ""
    vendor_saw(mocks, target)
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert finish == "tool_calls"


ERRORS = [
    (400, openai.BadRequestError),
    (401, openai.AuthenticationError),
    (429, openai.RateLimitError),
    (500, openai.InternalServerError),
]


@targets
@pytest.mark.parametrize("status,exc", ERRORS, ids=[str(s) for s, _ in ERRORS])
def test_vendor_errors_surface_as_sdk_exceptions(target, status, exc, mocks, openai_client):
    mocks[target.mock].fail("status", status=status, retry_after=7 if status == 429 else None)
    with pytest.raises(exc) as info:
        openai_client(target).chat.completions.create(model=target.model, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    if status == 429:
        assert info.value.response.headers.get("retry-after") == "7"
    assert mocks[target.mock].count == 1


@targets
def test_midstream_vendor_error_surfaces_as_sdk_error(target, mocks, openai_client):
    mocks[target.mock].fail("midstream", after=2)
    text, finish = "", None
    with pytest.raises(openai.APIError) as info:
        for chunk in openai_client(target).chat.completions.create(
            model=target.model, messages=[{"role": "user", "content": "one two three four"}], stream=True,
        ):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
    assert not isinstance(info.value, openai.APIConnectionError), "the stream was cut, not ended with an error event"
    rec = vendor_saw(mocks, target)
    assert text == "".join(rec["answer"]["pieces"][:2])
    assert finish is None, "a normal finish was reported before the error"


@targets
def test_vendor_error_body_with_200_is_an_error(target, mocks, openai_client):
    mocks[target.mock].fail("error_body", status=500)
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(target).chat.completions.create(model=target.model, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code >= 500
    assert mocks[target.mock].count == 1


@targets
def test_vendor_connection_cut_midstream_ends_with_an_error_event(target, mocks, openai_client):
    mocks[target.mock].fail("drop", after=2)
    text, finish = "", None
    with pytest.raises(openai.APIError) as info:
        for chunk in openai_client(target).chat.completions.create(
            model=target.model, messages=[{"role": "user", "content": "one two three four"}], stream=True,
        ):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
    assert not isinstance(info.value, openai.APIConnectionError)
    rec = vendor_saw(mocks, target)
    assert text == "".join(rec["answer"]["pieces"][:2])
    assert finish is None, "a normal finish was reported for a cut stream"
