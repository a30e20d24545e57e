"""The official `anthropic` SDK against the gateway (`format: anthropic`),
for every vendor behind it."""

from __future__ import annotations

import anthropic
import pytest

from conftest import vendor_saw
from targets import TARGETS

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

targets = pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])


@targets
def test_plain(target, mocks, anthropic_client):
    m = anthropic_client(target).messages.create(
        model=target.model, max_tokens=256, messages=[{"role": "user", "content": "What is up?"}]
    )
    rec = vendor_saw(mocks, target)
    assert rec["summary"]["system"] is None
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == rec["answer"]["text"]
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == rec["answer"]["input_tokens"]
    assert m.usage.output_tokens == rec["answer"]["output_tokens"]


@targets
def test_system_prompt(target, mocks, anthropic_client):
    m = anthropic_client(target).messages.create(
        model=target.model, max_tokens=256, system="You are terse.", messages=[{"role": "user", "content": "Hi"}]
    )
    rec = vendor_saw(mocks, target)
    assert rec["summary"]["system"] == "You are terse."
    assert [x["role"] for x in rec["summary"]["messages"]] == ["user"]
    assert m.content[0].text == rec["answer"]["text"]


@targets
def test_stream_arrives_incrementally_with_usage(target, mocks, anthropic_client):
    pacer = mocks[target.mock].pace()
    text = ""
    with anthropic_client(target).messages.stream(
        model=target.model, max_tokens=256, messages=[{"role": "user", "content": "Tell me four words"}]
    ) as stream:
        for piece in stream.text_stream:
            text += piece
            pacer.ack_text(text)
        final = stream.get_final_message()
    rec = vendor_saw(mocks, target)
    assert not pacer.timed_out, "the mock waited in vain: the gateway held an event back"
    assert pacer.sent == len(pacer.pieces) >= 4
    assert text == rec["answer"]["text"]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == rec["answer"]["input_tokens"]
    assert final.usage.output_tokens == rec["answer"]["output_tokens"]


@targets
def test_tools_round_trip(target, mocks, anthropic_client):
    client = anthropic_client(target)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    m = client.messages.create(model=target.model, max_tokens=256, tools=[WEATHER], messages=ask)
    rec = vendor_saw(mocks, target)
    assert rec["summary"]["tools"] == ["get_weather"]
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id
    mocks.reset()
    m2 = client.messages.create(model=target.model, max_tokens=256, tools=[WEATHER], messages=ask + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"}]},
    ])
    rec = vendor_saw(mocks, target)
    last = rec["summary"]["messages"][-1]
    assert last["role"] == "tool" and last["tool_result"] == "sunny, 21C"
    assert m2.content[0].text == "The tool said: sunny, 21C"


@targets
def test_tools_streamed_input_arrives_intact(target, mocks, anthropic_client):
    with anthropic_client(target).messages.stream(
        model=target.model, max_tokens=256, tools=[WEATHER], messages=[{"role": "user", "content": "Weather?"}]
    ) as stream:
        final = stream.get_final_message()
    vendor_saw(mocks, target)
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


ERRORS = [
    (400, anthropic.BadRequestError),
    (401, anthropic.AuthenticationError),
    (429, anthropic.RateLimitError),
    (500, anthropic.InternalServerError),
]


@targets
@pytest.mark.parametrize("status,exc", ERRORS, ids=[str(s) for s, _ in ERRORS])
def test_vendor_errors_surface_as_sdk_exceptions(target, status, exc, mocks, anthropic_client):
    mocks[target.mock].fail("status", status=status, retry_after=7 if status == 429 else None)
    with pytest.raises(exc) as info:
        anthropic_client(target).messages.create(model=target.model, max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    if status == 429:
        assert info.value.response.headers.get("retry-after") == "7"
    assert mocks[target.mock].count == 1


@targets
def test_midstream_vendor_error_surfaces_as_sdk_error(target, mocks, anthropic_client):
    mocks[target.mock].fail("midstream", after=2)
    text = ""
    with pytest.raises(anthropic.APIError) as info:
        with anthropic_client(target).messages.stream(
            model=target.model, max_tokens=256, messages=[{"role": "user", "content": "one two three four"}]
        ) as stream:
            for piece in stream.text_stream:
                text += piece
    assert not isinstance(info.value, anthropic.APIConnectionError), "the stream was cut, not ended with an error event"
    rec = vendor_saw(mocks, target)
    assert text == "".join(rec["answer"]["pieces"][:2])


@targets
def test_vendor_error_body_with_200_is_an_error(target, mocks, anthropic_client):
    mocks[target.mock].fail("error_body", status=500)
    with pytest.raises(anthropic.APIStatusError) as info:
        anthropic_client(target).messages.create(model=target.model, max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code >= 500
    assert mocks[target.mock].count == 1


@targets
def test_vendor_connection_cut_midstream_ends_with_an_error_event(target, mocks, anthropic_client):
    mocks[target.mock].fail("drop", after=2)
    text = ""
    with pytest.raises(anthropic.APIError) as info:
        with anthropic_client(target).messages.stream(
            model=target.model, max_tokens=256, messages=[{"role": "user", "content": "one two three four"}]
        ) as stream:
            for piece in stream.text_stream:
                text += piece
    assert not isinstance(info.value, anthropic.APIConnectionError)
    rec = vendor_saw(mocks, target)
    assert text == "".join(rec["answer"]["pieces"][:2])
