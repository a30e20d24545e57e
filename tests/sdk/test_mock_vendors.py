"""The mock vendors themselves, driven directly (no gateway).

The official SDKs talk to the mocks unchanged, which checks that the mocks'
wire formats are the vendors'; raw requests check validation, failure
modes, pacing and the binary framings."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone

import anthropic
import openai
import pytest

from mock_vendors import Pacer, eventstream_decode, eventstream_message, sigv4_signature

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

OPENAI_STYLE = {
    # mock -> (base path the SDK appends /chat/completions to, model)
    "openai": ("/v1", "gpt-5.4-mini"),
    "mistral": ("/v1", "mistral-small-latest"),
    "deepseek": ("", "deepseek-chat"),
    "alibaba": ("/compatible-mode/v1", "qwen3.8-flash"),
    "ollama": ("/v1", "llama3.2"),
    "compat": ("/v1", "local-model"),
}


def raw(url, body=None, headers=None, method="POST"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(autouse=True)
def _ollama_key(mocks, monkeypatch):
    # The SDK always sends a key; a keyless mock Ollama would (rightly) refuse it.
    monkeypatch.setattr(mocks["ollama"], "key", "ollama-direct")


def oa(mocks, name, **kw):
    base, model = OPENAI_STYLE[name]
    key = mocks[name].key
    return openai.OpenAI(base_url=mocks[name].url + base, api_key=key, max_retries=0, **kw), model


# ------------------------------------------------------------ algorithms


def test_sigv4_matches_the_aws_documented_example():
    # The worked example of AWS's SigV4 documentation (IAM ListUsers).
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "host": "iam.amazonaws.com",
        "x-amz-date": "20150830T123600Z",
    }
    sig, canonical = sigv4_signature(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "GET", "/", "Action=ListUsers&Version=2010-05-08",
        headers, ["content-type", "host", "x-amz-date"], b"", "20150830T123600Z", "us-east-1", "iam",
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    assert sig == "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"


def test_eventstream_round_trip_and_crc():
    msgs = eventstream_message({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}')
    msgs += eventstream_message({":event-type": "messageStop"}, b"{}")
    out = eventstream_decode(msgs)
    assert out[0] == ({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}')
    assert out[1][0] == {":event-type": "messageStop"}
    broken = bytearray(msgs)
    broken[20] ^= 1
    with pytest.raises(ValueError):
        eventstream_decode(bytes(broken))


def test_pacer_counts_whole_pieces_in_order():
    p = Pacer(limit=0.01)
    p.pieces = ["Hello ", "from ", "x"]
    assert p.ack_text("Hello fr") == 1
    assert p.ack_text("Hello from x") == 3
    assert p.before_piece(3)
    q = Pacer(limit=0.01)
    assert q.before_piece(0) and not q.before_piece(1) and q.timed_out


# ------------------------------------------------ OpenAI-style mocks via the SDK


@pytest.mark.parametrize("name", OPENAI_STYLE)
def test_openai_sdk_plain_against_mock(mocks, name):
    client, model = oa(mocks, name)
    r = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}]
    )
    rec = mocks[name].last
    assert r.choices[0].message.content == rec["answer"]["text"] == f"Hello from {name}! You said: hi there"
    assert rec["summary"]["system"] == "Be brief."
    assert r.usage.prompt_tokens == rec["answer"]["input_tokens"]
    assert r.usage.completion_tokens == rec["answer"]["output_tokens"]


@pytest.mark.parametrize("name", OPENAI_STYLE)
def test_openai_sdk_stream_and_tools_against_mock(mocks, name):
    client, model = oa(mocks, name)
    extra = {} if name == "mistral" else {"stream_options": {"include_usage": True}}
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "go"}], stream=True, **extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == mocks[name].last["answer"]["text"]
    assert [c.usage for c in chunks if c.usage][-1].completion_tokens == mocks[name].last["answer"]["output_tokens"]
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], stream=True, **extra)
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments for c in stream if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(args) == {"city": "Paris"}
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER])
    call = r.choices[0].message.tool_calls[0]
    r2 = client.chat.completions.create(model=model, tools=[WEATHER], messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert r2.choices[0].message.content == "The tool said: sunny"


@pytest.mark.parametrize(
    "status,exc",
    [(400, openai.BadRequestError), (401, openai.AuthenticationError), (429, openai.RateLimitError), (500, openai.InternalServerError)],
)
def test_openai_sdk_errors_on_command(mocks, status, exc):
    client, model = oa(mocks, "openai")
    mocks["openai"].fail("status", status=status, retry_after=7 if status == 429 else None)
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"
    assert mocks["openai"].count == 1


def test_openai_sdk_midstream_error_and_pacing(mocks):
    client, model = oa(mocks, "openai")
    mocks["openai"].fail("midstream", after=2)
    with pytest.raises(openai.APIError) as info:
        for _ in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a b c d"}], stream=True):
            pass
    assert not isinstance(info.value, openai.APIConnectionError)
    pacer = mocks["openai"].pace()
    got = ""
    for c in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "one two three"}], stream=True):
        got += (c.choices[0].delta.content or "") if c.choices else ""
        pacer.ack_text(got)
    assert not pacer.timed_out and pacer.sent == len(pacer.pieces) > 3


@pytest.mark.rejections_expected
def test_openai_mock_refuses_bad_requests(mocks):
    url = mocks["openai"].url + "/v1/chat/completions"
    ok = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "x"}]}
    key = {"Authorization": f"Bearer {mocks['openai'].key}"}
    assert raw(url, ok, key)[0] == 200
    for body, headers, why in [
        (ok, {}, "missing Authorization"),
        (ok, {"Authorization": "Bearer nope"}, "configured key"),
        ({**ok, "model": "gpt-0"}, key, "does not exist"),
        ({**ok, "frobnicate": 1}, key, "unknown field"),
        ({"model": "gpt-5.4-mini", "messages": []}, key, "non-empty"),
        ({**ok, "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}, key, "answers no earlier"),
        ({**ok, "max_tokens": 5}, key, "max_completion_tokens"),
        ({**ok, "stream_options": {"include_usage": True}}, key, "only allowed with stream"),
    ]:
        status, _, data = raw(url, body, headers)
        assert status == 400 and why in json.loads(data)["error"]["message"], (why, data)
    assert len(mocks["openai"].rejections) == 8


@pytest.mark.rejections_expected
def test_mistral_refuses_stream_options(mocks):
    client, model = oa(mocks, "mistral")
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], stream=True,
                                       stream_options={"include_usage": True})


def test_responses_via_sdk(mocks):
    client = openai.OpenAI(base_url=mocks["openai"].url + "/v1", api_key=mocks["openai"].key, max_retries=0)
    r = client.responses.create(model="gpt-5.4-mini", input="hello", instructions="sys")
    assert r.output_text == "Hello from openai! You said: hello"
    assert r.usage.input_tokens == mocks["openai"].last["answer"]["input_tokens"]
    events = list(client.responses.create(model="gpt-5.4-mini", input="hello", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == r.output_text
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}
    r = client.responses.create(model="gpt-5.4-mini", input="weather?", tools=[tool])
    call = r.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    r2 = client.responses.create(model="gpt-5.4-mini", tools=[tool], input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "rain"},
    ])
    assert r2.output_text == "The tool said: rain"


# ------------------------------------------------------- Anthropic via the SDK


def test_anthropic_sdk_against_mock(mocks):
    client = anthropic.Anthropic(base_url=mocks["anthropic"].url, api_key=mocks["anthropic"].key, max_retries=0)
    m = client.messages.create(model="claude-haiku-4-5", max_tokens=100, system="sys", messages=[{"role": "user", "content": "hey"}])
    assert m.content[0].text == "Hello from anthropic! You said: hey"
    assert mocks["anthropic"].last["summary"]["system"] == "sys"
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hey"}]) as s:
        assert "".join(s.text_stream) == m.content[0].text
        final = s.get_final_message()
    assert final.usage.output_tokens == mocks["anthropic"].last["answer"]["output_tokens"]
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, tools=[tool], messages=[{"role": "user", "content": "w"}]) as s:
        final = s.get_final_message()
    use = final.content[0]
    assert use.type == "tool_use" and use.input == {"city": "Paris"}
    m2 = client.messages.create(model="claude-haiku-4-5", max_tokens=100, tools=[tool], messages=[
        {"role": "user", "content": "w"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "snow"}]},
    ])
    assert m2.content[0].text == "The tool said: snow"
    mocks["anthropic"].fail("midstream", after=1)
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "a b c"}]) as s:
            for _ in s:
                pass
    mocks["anthropic"].fail("status", status=429, retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "3"


@pytest.mark.rejections_expected
def test_anthropic_mock_refuses_bad_keys_and_missing_max_tokens(mocks):
    url = mocks["anthropic"].url + "/v1/messages"
    body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    good = {"x-api-key": mocks["anthropic"].key, "anthropic-version": "2023-06-01"}
    assert raw(url, body, good)[0] == 200
    assert raw(url, body, {"Authorization": "Bearer " + mocks["anthropic"].key, "anthropic-version": "2023-06-01"})[0] == 200
    assert raw(url, body, {**good, "Authorization": "Bearer other"})[0] == 400
    assert raw(url, {**body, "max_tokens": None}, good)[0] == 400
    assert raw(url, {**body, "messages": [{"role": "system", "content": "x"}]}, good)[0] == 400
    assert len(mocks["anthropic"].rejections) == 3


# --------------------------------------------------------- the other natives


@pytest.mark.rejections_expected
def test_gemini_native(mocks):
    g = mocks["gemini"]
    body = {"systemInstruction": {"parts": [{"text": "sys"}]}, "contents": [{"role": "user", "parts": [{"text": "yo"}]}]}
    status, _, data = raw(g.url + "/v1beta/models/gemini-2.5-flash:generateContent", body, {"x-goog-api-key": g.key})
    assert status == 200
    out = json.loads(data)
    assert out["candidates"][0]["content"]["parts"][0]["text"] == "Hello from gemini! You said: yo"
    assert out["usageMetadata"]["promptTokenCount"] == g.last["answer"]["input_tokens"]
    status, hdrs, data = raw(g.url + f"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={g.key}", body)
    assert status == 200 and hdrs["Content-Type"] == "text/event-stream"
    events = [json.loads(line[6:]) for line in data.decode().splitlines() if line.startswith("data: ")]
    assert "".join(p["text"] for e in events for p in e["candidates"][0]["content"]["parts"]) == "Hello from gemini! You said: yo"
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert raw(g.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent", body, {"x-goog-api-key": g.key})[0] == 400
    assert raw(g.url + "/v1beta/models/gemini-2.5-flash:generateContent", body, {"Authorization": "Bearer " + g.key})[0] == 400
    assert raw(g.url + "/v1beta/models/gemini-2.5-flash:generateContent", {**body, "messages": []}, {"x-goog-api-key": g.key})[0] == 400


def _sign(mocks, url_path, body: bytes, secret=None):
    b = mocks["bedrock"]
    host = f"127.0.0.1:{b.port}"
    amz = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    headers = {"content-type": "application/json", "host": host, "x-amz-date": amz}
    signed = ["content-type", "host", "x-amz-date"]
    sig, _ = sigv4_signature(secret or b.secret, "POST", url_path, "", headers, signed, body, amz, "eu-west-1", "bedrock")
    return {
        "Content-Type": "application/json", "X-Amz-Date": amz,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={b.key}/{amz[:8]}/eu-west-1/bedrock/aws4_request, "
                         f"SignedHeaders={';'.join(signed)}, Signature={sig}",
    }


@pytest.mark.rejections_expected
def test_bedrock_native_signed(mocks):
    b = mocks["bedrock"]
    body = json.dumps({"system": [{"text": "sys"}], "messages": [{"role": "user", "content": [{"text": "hola"}]}],
                       "inferenceConfig": {"maxTokens": 50}}).encode()
    path = "/model/eu.amazon.nova-lite-v1%3A0/converse"
    status, _, data = raw(b.url + path, body, _sign(mocks, path, body))
    assert status == 200, data
    assert json.loads(data)["output"]["message"]["content"][0]["text"] == "Hello from bedrock! You said: hola"
    assert b.last["region"] == "eu-west-1" and b.last["summary"]["system"] == "sys"
    spath = "/model/eu.amazon.nova-lite-v1:0/converse-stream"
    status, hdrs, data = raw(b.url + spath, body, _sign(mocks, spath, body))
    assert status == 200 and hdrs["Content-Type"] == "application/vnd.amazon.eventstream"
    events = eventstream_decode(data)
    kinds = [h[":event-type"] for h, _ in events]
    assert kinds[0] == "messageStart" and kinds[-1] == "metadata"
    text = "".join(json.loads(p)["delta"]["text"] for h, p in events if h[":event-type"] == "contentBlockDelta")
    assert text == "Hello from bedrock! You said: hola"
    assert raw(b.url + path, body, _sign(mocks, path, body, secret="wrong"))[0] == 400
    assert raw(b.url + path, body, {"Authorization": "Bearer x"})[0] == 400
    assert "signature does not match" in b.rejections[0]["rejected"]


def test_cohere_and_ollama_native(mocks):
    c = mocks["cohere"]
    body = {"model": "command-a-03-2025", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "yo"}], "stream": True}
    status, _, data = raw(c.url + "/v2/chat", body, {"Authorization": "Bearer " + c.key})
    assert status == 200
    events = [json.loads(line[6:]) for line in data.decode().splitlines() if line.startswith("data: ")]
    assert "".join(e["delta"]["message"]["content"]["text"] for e in events if e["type"] == "content-delta") == "Hello from cohere! You said: yo"
    assert events[-1]["delta"]["usage"]["tokens"]["output_tokens"] == c.last["answer"]["output_tokens"]
    o = mocks["ollama"]
    status, hdrs, data = raw(o.url + "/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "yo"}]})
    lines = [json.loads(x) for x in data.decode().splitlines()]
    assert hdrs["Content-Type"] == "application/x-ndjson" and lines[-1]["done"] and lines[-1]["eval_count"] == len(lines) - 1
    status, _, data = raw(o.url + "/api/chat", {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "yo"}]})
    assert json.loads(data)["message"]["content"] == "Hello from ollama! You said: yo"


def test_control_over_http_and_hang_release(mocks):
    o = mocks["openai"]
    assert raw(o.url + "/__mock/fail", {"mode": "status", "status": 503})[0] == 200
    body = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "x"}]}
    assert raw(o.url + "/v1/chat/completions", body, {"Authorization": "Bearer " + o.key})[0] == 503
    log = json.loads(raw(o.url + "/__mock/requests", method="GET")[2])
    assert len(log) == 1 and log[0]["failed"]["status"] == 503
    o.fail("hang")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", raw_safe(o.url + "/v1/chat/completions", body, o.key)))
    t.start()
    while o.count < 2:
        threading.Event().wait(0.01)
    o.reset()
    t.join(10)
    assert not t.is_alive() and result["r"] == "dropped"


def raw_safe(url, body, key):
    try:
        raw(url, body, {"Authorization": "Bearer " + key})
        return "answered"
    except Exception:
        return "dropped"


def test_reset_refusing_port_and_hang_seeing_the_client_close(mocks):
    from mock_vendors import RefusingPort

    o = mocks["openai"]
    body = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "x"}]}
    o.fail("reset")
    with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
        raw(o.url + "/v1/chat/completions", body, {"Authorization": "Bearer " + o.key})
    assert o.count == 1 and o.last["failed"]["mode"] == "reset"
    refusing = RefusingPort()
    try:
        with pytest.raises(urllib.error.URLError) as info:
            raw(refusing.url + "/v1/chat/completions", body)
        assert isinstance(info.value.reason, ConnectionRefusedError)
    finally:
        refusing.close()
    # A hanging request notices its client going away.
    o.fail("hang")
    sock = socket.create_connection(("127.0.0.1", o.port))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + o.key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    while o.count < 2:
        threading.Event().wait(0.01)
    sock.close()
    for _ in range(500):
        if o.last["closed_by_client"]:
            break
        threading.Event().wait(0.01)
    assert o.last["closed_by_client"], "the hanging mock did not see its client close"
