#!/usr/bin/env python3
"""Mock LLM vendors that speak each vendor's native API and check every request.

One HTTP server per vendor, each on its own 127.0.0.1 port (standard library
only). Every request is validated the way the vendor would: the credential
header exactly as the vendor expects it, the request shape (unknown fields
refused), the model. A request that fails validation is answered 400 with
a body naming the reason, in the vendor's error shape, and recorded as a
rejection, so a test can fail loudly on it.

Vendors and paths:

  openai     POST /v1/chat/completions, /v1/responses        Bearer
  anthropic  POST /v1/messages                               x-api-key + anthropic-version
  gemini     POST /v1beta/models/<m>:generateContent,
                  /v1beta/models/<m>:streamGenerateContent?alt=sse
                                                             x-goog-api-key or ?key=
  mistral    POST /v1/chat/completions                       Bearer
  deepseek   POST /chat/completions, /v1/chat/completions    Bearer
  alibaba    POST /compatible-mode/v1/chat/completions,
                  /compatible-mode/v1/responses              Bearer
  ollama     POST /api/chat (NDJSON stream), /v1/chat/completions
                                                             none (or Bearer)
  cohere     POST /v2/chat                                   Bearer
  bedrock    POST /model/<id>/converse, /model/<id>/converse-stream
                                                             AWS SigV4 (verified)
  compat     POST /v1/chat/completions (any OpenAI-compatible server)  Bearer

Answers are deterministic: with tools and no tool result yet, a call of the
first tool with arguments filled from its schema; after a tool result, a
text naming the result; otherwise ``Hello from <vendor>! You said: <text>``.
Usage is ``input = words of all input text + 3``, ``output = answer pieces``.

Test control, in process (``MockVendors``) or over HTTP on any vendor port:

  GET  /__mock/requests          the request log (JSON)
  POST /__mock/fail              {"mode": ..., "status": .., "after": .., "times": ..,
                                  "retry_after": "..", "message": ".."}
       modes: status (answer `status`, Retry-After kept), error_body (200
       with the vendor's error body), midstream (k=`after` content events,
       then the vendor's own stream error), drop (k events, then the
       connection is cut), hang (no answer until reset, or until the
       client closes the connection: the record's `closed_by_client`),
       reset (the request is read, then the connection is reset, no answer)
  POST /__mock/pace              the next stream sends piece k+1 only after ack(k+1)
  POST /__mock/ack?n=N           the client has received N pieces
  POST /__mock/reset             forget the log, commands and hanging requests

``RefusingPort`` is a vendor address that refuses every connection (a port
bound but never listening), for a provider that cannot be reached at all.

Standalone: ``python3 tests/sdk/mock_vendors.py`` listens on 18101..18110
(``--base-port``), prints the vendor URLs and the environment the gateway
config reads (``--print-env`` prints only the exports).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import select
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# name -> (port offset, environment variable of the key, harmless default key)
VENDORS = {
    "openai": (1, "OPENAI_API_KEY", "sk-mock-openai"),
    "anthropic": (2, "ANTHROPIC_API_KEY", "sk-ant-mock"),
    "gemini": (3, "GEMINI_API_KEY", "mock-gemini-key"),
    "mistral": (4, "MISTRAL_API_KEY", "mock-mistral-key"),
    "deepseek": (5, "DEEPSEEK_API_KEY", "sk-mock-deepseek"),
    "alibaba": (6, "DASHSCOPE_API_KEY", "sk-mock-dashscope"),
    "ollama": (7, "OLLAMA_API_KEY", ""),
    "cohere": (8, "COHERE_API_KEY", "mock-cohere-key"),
    "bedrock": (9, "AWS_ACCESS_KEY_ID", "AKIDMOCKBEDROCK"),
    "compat": (10, "OPENAI_COMPATIBLE_API_KEY", "mock-compat-key"),
}
BEDROCK_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "mock/bedrock/secret")
BASE_PORT = 18100

MODELS = {
    "openai": {"gpt-5.4-mini", "gpt-5-nano", "gpt-4o-mini"},
    "anthropic": {"claude-haiku-4-5", "claude-sonnet-4-5"},
    "gemini": {"gemini-3.5-flash", "gemini-2.5-flash"},
    "mistral": {"mistral-small-latest", "mistral-large-latest"},
    "deepseek": {"deepseek-chat", "deepseek-reasoner"},
    "alibaba": {"qwen3.8-flash", "qwen-plus"},
    "ollama": {"llama3.2", "qwen3:0.6b"},
    "cohere": {"command-a-03-2025", "command-r7b-12-2024"},
    "bedrock": {"eu.amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"},
    "compat": {"local-model"},
}

WAIT_LIMIT = 20.0  # seconds a paced stream waits for an ack before giving up


class Reject(Exception):
    """A request the real vendor would refuse (always answered 400)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def env_defaults() -> dict[str, str]:
    """The environment the gateway config reads, with the mock's defaults."""
    out = {}
    for _, env, default in VENDORS.values():
        out[env] = os.environ.get(env, default)
    out[BEDROCK_SECRET_ENV[0]] = os.environ.get(*BEDROCK_SECRET_ENV)
    # The signing region when the endpoint's host names none (the mock's).
    out["AWS_REGION"] = os.environ.get("AWS_REGION", "eu-west-1")
    return out


# ---------------------------------------------------------------- AWS SigV4


def _uri_encode(segment: str) -> str:
    return urllib.parse.quote(segment, safe="-_.~")


def sigv4_signature(
    secret: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    signed: list[str],
    body: bytes,
    amz_date: str,
    region: str,
    service: str,
) -> tuple[str, str]:
    """The SigV4 signature of a request as received, and the canonical request.

    The canonical URI encodes each segment of the path as sent once more
    (what AWS does for every service but S3)."""
    uri = "/".join(_uri_encode(seg) for seg in raw_path.split("/")) or "/"
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        k, _, v = part.partition("=")
        pairs.append(
            (_uri_encode(urllib.parse.unquote(k)), _uri_encode(urllib.parse.unquote(v)))
        )
    query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    canon_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed
    )
    payload = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [method, uri, query, canon_headers, ";".join(signed), payload]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), canonical


SIGV4_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Za-z0-9]+)/(?P<date>\d{8})/"
    r"(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)/aws4_request, ?"
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=(?P<sig>[0-9a-f]{64})$"
)


def check_sigv4(req: "Request", access_key: str, secret: str) -> str:
    """Checks the SigV4 Authorization of a Bedrock request; returns the region."""
    auth = req.headers.get("authorization")
    if not auth:
        raise Reject("missing Authorization header (AWS SigV4 expected)")
    m = SIGV4_RE.match(auth)
    if not m:
        raise Reject(f"Authorization is not a well-formed AWS4-HMAC-SHA256 header: {auth[:60]!r}")
    if m["akid"] != access_key:
        raise Reject(f"unknown access key id {m['akid']!r}")
    if m["service"] != "bedrock":
        raise Reject(f"credential scope names service {m['service']!r}, expected 'bedrock'")
    amz_date = req.headers.get("x-amz-date", "")
    if not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        raise Reject(f"missing or malformed X-Amz-Date {amz_date!r}")
    if amz_date[:8] != m["date"]:
        raise Reject("X-Amz-Date and the credential scope name different days")
    signed = m["signed"].split(";")
    if signed != sorted(signed):
        raise Reject("SignedHeaders are not sorted")
    for needed in ("host", "x-amz-date"):
        if needed not in signed:
            raise Reject(f"SignedHeaders lack {needed!r}")
    for name in signed:
        if name not in req.headers:
            raise Reject(f"signed header {name!r} is not in the request")
    sha = req.headers.get("x-amz-content-sha256")
    if sha and sha != hashlib.sha256(req.raw_body).hexdigest():
        raise Reject("x-amz-content-sha256 does not match the body")
    expected, _ = sigv4_signature(
        secret,
        req.method,
        req.raw_path,
        req.raw_query,
        req.headers,
        signed,
        req.raw_body,
        amz_date,
        m["region"],
        "bedrock",
    )
    if not hmac.compare_digest(expected, m["sig"]):
        raise Reject("the request signature does not match (SigV4 recomputed by the mock)")
    return m["region"]


# ------------------------------------------------------- AWS eventstream


def eventstream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One binary eventstream message (string headers only)."""
    hb = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        hb += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + hb + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def eventstream_decode(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Decodes concatenated eventstream messages, checking both CRCs."""
    out = []
    while data:
        total, hlen = struct.unpack(">II", data[:8])
        (pcrc,) = struct.unpack(">I", data[8:12])
        if zlib.crc32(data[:8]) != pcrc:
            raise ValueError("prelude CRC mismatch")
        msg = data[:total]
        (mcrc,) = struct.unpack(">I", msg[-4:])
        if zlib.crc32(msg[:-4]) != mcrc:
            raise ValueError("message CRC mismatch")
        hb = msg[12 : 12 + hlen]
        headers = {}
        i = 0
        while i < len(hb):
            nl = hb[i]
            name = hb[i + 1 : i + 1 + nl].decode()
            i += 1 + nl
            if hb[i] != 7:
                raise ValueError("only string headers are decoded here")
            (vl,) = struct.unpack(">H", hb[i + 1 : i + 3])
            headers[name] = hb[i + 3 : i + 3 + vl].decode()
            i += 3 + vl
        out.append((headers, msg[12 + hlen : -4]))
        data = data[total:]
    return out


# ------------------------------------------------------------- the answer


def words(text: str) -> int:
    return len(text.split())


def fill_args(schema) -> dict:
    """Arguments for a tool call, filled from the tool's JSON schema."""
    props = (schema or {}).get("properties") or {}
    out = {}
    for name, prop in props.items():
        t = (prop or {}).get("type")
        if isinstance(t, list):
            t = t[0] if t else None
        if prop and prop.get("enum"):
            out[name] = prop["enum"][0]
        elif t == "string":
            out[name] = "Paris"
        elif t in ("number", "integer"):
            out[name] = 3
        elif t == "boolean":
            out[name] = True
        elif t == "array":
            out[name] = []
        elif t == "object":
            out[name] = {}
        else:
            out[name] = None
    return out


def split_pieces(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text) or [text]


def split_json(text: str, parts: int = 3) -> list[str]:
    """A JSON text cut into `parts` pieces at arbitrary places."""
    if len(text) < parts:
        return [text]
    step = max(1, len(text) // parts)
    pieces = [text[i : i + step] for i in range(0, len(text), step)]
    return pieces


class Summary:
    """A request in vendor-neutral terms, for tests to check what arrived."""

    def __init__(self):
        self.system: str | None = None
        self.messages: list[dict] = []  # {"role", "text"} | {"role": "assistant", "tool_call": ...} | {"role": "tool", "tool_result": ..}
        self.tools: list[dict] = []  # {"name", "parameters"}
        self.stream = False
        self.model: str | None = None
        self.max_tokens = None
        self.raw: dict = {}

    def add_system(self, text: str):
        self.system = text if self.system is None else self.system + "\n" + text

    def to_json(self):
        return {
            "system": self.system,
            "messages": self.messages,
            "tools": [t["name"] for t in self.tools],
            "stream": self.stream,
            "model": self.model,
            "max_tokens": self.max_tokens,
        }


class Answer:
    def __init__(self, vendor: str, summary: Summary):
        last = summary.messages[-1] if summary.messages else {}
        input_text = (summary.system or "") + " " + " ".join(
            m.get("text") or json.dumps(m.get("tool_call") or m.get("tool_result") or "")
            for m in summary.messages
        )
        self.input_tokens = words(input_text) + 3
        self.tool_call = None
        self.text = None
        if summary.tools and last.get("role") != "tool":
            tool = summary.tools[0]
            self.tool_call = {
                "id": "call" + hashlib.sha1(repr(summary.messages).encode()).hexdigest()[:9],
                "name": tool["name"],
                "arguments": fill_args(tool.get("parameters")),
            }
            self.arguments_json = json.dumps(self.tool_call["arguments"], separators=(",", ":"))
            self.pieces = split_json(self.arguments_json)
            self.output_tokens = 7
        else:
            if last.get("role") == "tool":
                self.text = f"The tool said: {last.get('tool_result')}"
            else:
                said = (last.get("text") or "")[:80]
                self.text = f"Hello from {vendor}! You said: {said}"
            self.pieces = split_pieces(self.text)
            self.output_tokens = len(self.pieces)

    def to_json(self):
        return {
            "text": self.text,
            "tool_call": self.tool_call,
            "pieces": self.pieces,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


# ------------------------------------------------------------ validation


def need(cond, reason):
    if not cond:
        raise Reject(reason)


def only_keys(obj, allowed, where):
    need(isinstance(obj, dict), f"{where} must be an object")
    extra = sorted(set(obj) - set(allowed))
    need(not extra, f"{where}: unknown field(s) {extra}")


def check_model(vendor, model):
    need(isinstance(model, str) and model, "model is required")
    need(model in MODELS[vendor], f"model {model!r} does not exist at {vendor} (known: {sorted(MODELS[vendor])})")


def check_json_schema(schema, where):
    need(isinstance(schema, dict), f"{where} must be a JSON schema object")
    need(schema.get("type", "object") == "object", f"{where}.type must be 'object'")


OPENAI_CHAT_KEYS = {
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "metadata", "store", "reasoning_effort",
    "service_tier", "modalities", "audio", "prediction", "verbosity", "web_search_options",
    "prompt_cache_key", "safety_identifier",
}
MISTRAL_CHAT_KEYS = {
    "model", "messages", "stream", "temperature", "top_p", "n", "stop", "max_tokens",
    "random_seed", "response_format", "tools", "tool_choice", "presence_penalty",
    "frequency_penalty", "safe_prompt", "parallel_tool_calls", "prediction", "prompt_mode",
}
OLLAMA_V1_KEYS = OPENAI_CHAT_KEYS - {"store", "metadata", "service_tier", "audio", "modalities"}


def parse_openai_chat(vendor, body, allowed) -> Summary:
    only_keys(body, allowed, "request")
    s = Summary()
    s.model = body.get("model")
    check_model(vendor, s.model)
    s.stream = bool(body.get("stream", False))
    need(isinstance(body.get("stream", False), bool), "stream must be a boolean")
    if "stream_options" in body:
        need(s.stream, "stream_options is only allowed with stream: true")
        only_keys(body["stream_options"], {"include_usage", "include_obfuscation"}, "stream_options")
    s.max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if vendor == "openai" and s.model.startswith("gpt-5"):
        need("max_tokens" not in body, "Unsupported parameter: 'max_tokens' is not supported with this model. "
             "Use 'max_completion_tokens' instead.")
    msgs = body.get("messages")
    need(isinstance(msgs, list) and msgs, "messages must be a non-empty list")
    call_ids = set()
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        need(isinstance(m, dict), f"{where} must be an object")
        role = m.get("role")
        need(role in ("system", "developer", "user", "assistant", "tool"), f"{where}.role {role!r} is invalid")
        content = m.get("content")
        text = chat_content_text(content, where, role)
        if role in ("system", "developer"):
            only_keys(m, {"role", "content", "name"}, where)
            s.add_system(text)
        elif role == "user":
            only_keys(m, {"role", "content", "name"}, where)
            need(content is not None, f"{where}.content is required")
            s.messages.append({"role": "user", "text": text})
        elif role == "assistant":
            only_keys(m, {"role", "content", "name", "tool_calls", "refusal", "audio", "reasoning_content", "prefix"}, where)
            for j, tc in enumerate(m.get("tool_calls") or []):
                w = f"{where}.tool_calls[{j}]"
                only_keys(tc, {"id", "type", "function", "index"}, w)
                need(tc.get("type", "function") == "function", f"{w}.type must be 'function'")
                need(isinstance(tc.get("id"), str) and tc["id"], f"{w}.id is required")
                fn = tc.get("function") or {}
                need(isinstance(fn.get("name"), str), f"{w}.function.name is required")
                need(isinstance(fn.get("arguments"), str), f"{w}.function.arguments must be a JSON string")
                try:
                    args = json.loads(fn["arguments"])
                except ValueError:
                    raise Reject(f"{w}.function.arguments is not valid JSON")
                call_ids.add(tc["id"])
                s.messages.append({"role": "assistant", "tool_call": {"id": tc["id"], "name": fn["name"], "arguments": args}})
            if not m.get("tool_calls"):
                need(content is not None, f"{where}: an assistant message needs content or tool_calls")
            if text:
                s.messages.append({"role": "assistant", "text": text})
        else:
            only_keys(m, {"role", "content", "tool_call_id", "name"}, where)
            tid = m.get("tool_call_id")
            need(tid in call_ids, f"{where}.tool_call_id {tid!r} answers no earlier tool call")
            s.messages.append({"role": "tool", "tool_call_id": tid, "tool_result": text})
    for i, t in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        only_keys(t, {"type", "function"}, where)
        need(t.get("type") == "function", f"{where}.type must be 'function'")
        fn = t.get("function")
        only_keys(fn, {"name", "description", "parameters", "strict"}, f"{where}.function")
        need(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", fn.get("name") or ""), f"{where}.function.name is invalid")
        if "parameters" in fn:
            check_json_schema(fn["parameters"], f"{where}.function.parameters")
        s.tools.append({"name": fn["name"], "parameters": fn.get("parameters")})
    if "tool_choice" in body:
        need(body.get("tools"), "tool_choice needs tools")
    return s


def chat_content_text(content, where, role) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    need(isinstance(content, list), f"{where}.content must be a string or a list of parts")
    out = []
    for j, part in enumerate(content):
        w = f"{where}.content[{j}]"
        need(isinstance(part, dict), f"{w} must be an object")
        t = part.get("type")
        if t == "text":
            only_keys(part, {"type", "text"}, w)
            need(isinstance(part.get("text"), str), f"{w}.text must be a string")
            out.append(part["text"])
        elif t == "image_url" and role == "user":
            only_keys(part, {"type", "image_url"}, w)
            need(isinstance((part.get("image_url") or {}).get("url"), str), f"{w}.image_url.url is required")
            out.append("[image]")
        else:
            raise Reject(f"{w}.type {t!r} is not allowed in a {role} message")
    return "".join(out)


RESPONSES_KEYS = {
    "model", "input", "instructions", "tools", "tool_choice", "stream", "max_output_tokens",
    "temperature", "top_p", "truncation", "store", "metadata", "previous_response_id",
    "reasoning", "text", "parallel_tool_calls", "include", "user", "service_tier",
    "stream_options", "prompt_cache_key", "safety_identifier", "background", "top_logprobs",
    "max_tool_calls", "conversation", "prompt",
}


def parse_responses(vendor, body) -> Summary:
    only_keys(body, RESPONSES_KEYS, "request")
    s = Summary()
    s.model = body.get("model")
    check_model(vendor, s.model)
    s.stream = bool(body.get("stream", False))
    s.max_tokens = body.get("max_output_tokens")
    if body.get("instructions") is not None:
        need(isinstance(body["instructions"], str), "instructions must be a string")
        s.add_system(body["instructions"])
    inp = body.get("input")
    need(inp is not None, "input is required")
    call_ids = set()
    if isinstance(inp, str):
        s.messages.append({"role": "user", "text": inp})
    else:
        need(isinstance(inp, list) and inp, "input must be a string or a non-empty list")
        for i, item in enumerate(inp):
            where = f"input[{i}]"
            need(isinstance(item, dict), f"{where} must be an object")
            t = item.get("type", "message")
            if t == "message":
                only_keys(item, {"type", "role", "content", "id", "status"}, where)
                role = item.get("role")
                need(role in ("user", "assistant", "system", "developer"), f"{where}.role {role!r} is invalid")
                c = item.get("content")
                if isinstance(c, str):
                    text = c
                else:
                    need(isinstance(c, list), f"{where}.content must be a string or a list")
                    parts = []
                    for j, p in enumerate(c):
                        pt = p.get("type")
                        ok = {"user": ("input_text", "input_image", "input_file"), "system": ("input_text",), "developer": ("input_text",), "assistant": ("output_text", "refusal")}[role]
                        need(pt in ok, f"{where}.content[{j}].type {pt!r} is not allowed for role {role}")
                        parts.append(p.get("text") or ("[image]" if pt == "input_image" else ""))
                    text = "".join(parts)
                if role in ("system", "developer"):
                    s.add_system(text)
                else:
                    s.messages.append({"role": role, "text": text})
            elif t == "function_call":
                only_keys(item, {"type", "call_id", "name", "arguments", "id", "status"}, where)
                need(isinstance(item.get("call_id"), str), f"{where}.call_id is required")
                try:
                    args = json.loads(item.get("arguments") or "")
                except ValueError:
                    raise Reject(f"{where}.arguments is not valid JSON")
                call_ids.add(item["call_id"])
                s.messages.append({"role": "assistant", "tool_call": {"id": item["call_id"], "name": item.get("name"), "arguments": args}})
            elif t == "function_call_output":
                only_keys(item, {"type", "call_id", "output", "id", "status"}, where)
                need(item.get("call_id") in call_ids, f"{where}.call_id answers no earlier function_call")
                out = item.get("output")
                need(isinstance(out, str), f"{where}.output must be a string")
                s.messages.append({"role": "tool", "tool_call_id": item["call_id"], "tool_result": out})
            else:
                raise Reject(f"{where}.type {t!r} is not known")
    for i, t in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        need(t.get("type") == "function", f"{where}.type must be 'function' (flat Responses tools)")
        only_keys(t, {"type", "name", "description", "parameters", "strict"}, where)
        need(isinstance(t.get("name"), str), f"{where}.name is required (Responses tools are flat, no 'function' wrapper)")
        if t.get("parameters") is not None:
            check_json_schema(t["parameters"], f"{where}.parameters")
        s.tools.append({"name": t["name"], "parameters": t.get("parameters")})
    return s


ANTHROPIC_KEYS = {
    "model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature",
    "top_k", "top_p", "tools", "tool_choice", "metadata", "thinking", "service_tier",
    "container", "mcp_servers", "context_management",
}


def parse_anthropic(vendor, body) -> Summary:
    only_keys(body, ANTHROPIC_KEYS, "request")
    s = Summary()
    s.model = body.get("model")
    check_model(vendor, s.model)
    s.stream = bool(body.get("stream", False))
    mt = body.get("max_tokens")
    need(isinstance(mt, int) and not isinstance(mt, bool) and mt >= 1, "max_tokens: Field required (a positive integer)")
    s.max_tokens = mt
    system = body.get("system")
    if system is not None:
        if isinstance(system, str):
            s.add_system(system)
        else:
            need(isinstance(system, list), "system must be a string or a list of text blocks")
            for j, b in enumerate(system):
                need(b.get("type") == "text", f"system[{j}].type must be 'text'")
                only_keys(b, {"type", "text", "cache_control", "citations"}, f"system[{j}]")
                s.add_system(b.get("text", ""))
    msgs = body.get("messages")
    need(isinstance(msgs, list) and msgs, "messages: at least one message is required")
    tool_ids = set()
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        only_keys(m, {"role", "content"}, where)
        role = m.get("role")
        need(role in ("user", "assistant"), f"{where}.role: Input should be 'user' or 'assistant' (got {role!r})")
        c = m.get("content")
        if isinstance(c, str):
            s.messages.append({"role": role, "text": c})
            continue
        need(isinstance(c, list), f"{where}.content must be a string or a list of blocks")
        texts = []
        for j, b in enumerate(c):
            w = f"{where}.content[{j}]"
            t = b.get("type")
            if t == "text":
                only_keys(b, {"type", "text", "cache_control", "citations"}, w)
                texts.append(b.get("text", ""))
            elif t == "image" and role == "user":
                only_keys(b, {"type", "source", "cache_control"}, w)
                texts.append("[image]")
            elif t == "tool_use" and role == "assistant":
                only_keys(b, {"type", "id", "name", "input", "cache_control"}, w)
                need(isinstance(b.get("input"), dict), f"{w}.input must be an object")
                tool_ids.add(b.get("id"))
                s.messages.append({"role": "assistant", "tool_call": {"id": b.get("id"), "name": b.get("name"), "arguments": b["input"]}})
            elif t == "tool_result" and role == "user":
                only_keys(b, {"type", "tool_use_id", "content", "is_error", "cache_control"}, w)
                need(b.get("tool_use_id") in tool_ids, f"{w}.tool_use_id answers no earlier tool_use block")
                rc = b.get("content")
                if isinstance(rc, list):
                    rc = "".join(x.get("text", "") for x in rc)
                s.messages.append({"role": "tool", "tool_call_id": b["tool_use_id"], "tool_result": rc or ""})
            elif t in ("thinking", "redacted_thinking") and role == "assistant":
                pass
            else:
                raise Reject(f"{w}.type {t!r} is not allowed in a {role} message")
        if texts:
            s.messages.append({"role": role, "text": "".join(texts)})
    for i, t in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        only_keys(t, {"name", "description", "input_schema", "type", "cache_control", "strict"}, where)
        need(re.fullmatch(r"[A-Za-z0-9_-]{1,128}", t.get("name") or ""), f"{where}.name is invalid")
        need("input_schema" in t, f"{where}.input_schema: Field required")
        check_json_schema(t["input_schema"], f"{where}.input_schema")
        s.tools.append({"name": t["name"], "parameters": t["input_schema"]})
    return s


GEMINI_KEYS = {"contents", "systemInstruction", "system_instruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent", "labels"}
GEMINI_GEN_KEYS = {
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
    "responseMimeType", "responseSchema", "responseJsonSchema", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities",
}


def parse_gemini(vendor, body, model, stream) -> Summary:
    only_keys(body, GEMINI_KEYS, "request")
    s = Summary()
    s.model = model
    check_model(vendor, model)
    s.stream = stream
    gc = body.get("generationConfig")
    if gc is not None:
        only_keys(gc, GEMINI_GEN_KEYS, "generationConfig")
        s.max_tokens = gc.get("maxOutputTokens")
    si = body.get("systemInstruction", body.get("system_instruction"))
    if si is not None:
        only_keys(si, {"parts", "role"}, "systemInstruction")
        s.add_system("".join(p.get("text", "") for p in si.get("parts") or []))
    contents = body.get("contents")
    need(isinstance(contents, list) and contents, "contents is required")
    calls = set()
    for i, c in enumerate(contents):
        where = f"contents[{i}]"
        only_keys(c, {"role", "parts"}, where)
        role = c.get("role", "user")
        need(role in ("user", "model"), f"{where}.role must be 'user' or 'model' (got {role!r})")
        parts = c.get("parts")
        need(isinstance(parts, list) and parts, f"{where}.parts must be a non-empty list")
        texts = []
        for j, p in enumerate(parts):
            w = f"{where}.parts[{j}]"
            kinds = set(p) - {"thought", "thoughtSignature"}
            need(len(kinds) == 1, f"{w} must have exactly one of text/inlineData/functionCall/functionResponse (got {sorted(p)})")
            (kind,) = kinds
            if kind == "text":
                texts.append(p["text"])
            elif kind == "inlineData":
                texts.append("[image]")
            elif kind == "functionCall" and role == "model":
                fc = p["functionCall"]
                only_keys(fc, {"name", "args", "id"}, w + ".functionCall")
                calls.add(fc.get("name"))
                s.messages.append({"role": "assistant", "tool_call": {"id": fc.get("id"), "name": fc.get("name"), "arguments": fc.get("args") or {}}})
            elif kind == "functionResponse" and role == "user":
                fr = p["functionResponse"]
                only_keys(fr, {"name", "response", "id"}, w + ".functionResponse")
                need(fr.get("name") in calls, f"{w}.functionResponse.name answers no earlier functionCall")
                need(isinstance(fr.get("response"), dict), f"{w}.functionResponse.response must be an object")
                r = fr["response"]
                text = r.get("content", r.get("result", r.get("output")))
                if not isinstance(text, str):
                    text = json.dumps(r)
                s.messages.append({"role": "tool", "tool_call_id": fr.get("name"), "tool_result": text})
            else:
                raise Reject(f"{w}: part {kind!r} is not allowed for role {role}")
        if texts:
            s.messages.append({"role": "user" if role == "user" else "assistant", "text": "".join(texts)})
    for i, t in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        need(isinstance(t, dict) and t, f"{where} must be an object")
        for j, fd in enumerate(t.get("functionDeclarations") or t.get("function_declarations") or []):
            w = f"{where}.functionDeclarations[{j}]"
            only_keys(fd, {"name", "description", "parameters", "parametersJsonSchema", "response"}, w)
            schema = fd.get("parameters", fd.get("parametersJsonSchema"))
            if schema is not None:
                need(isinstance(schema, dict), f"{w}.parameters must be an object")
                bad = [k for k in ("additionalProperties", "$schema") if k in schema and "parameters" in fd]
                need(not bad, f"{w}.parameters: Unknown name {bad[0] if bad else ''!r} (Gemini's Schema is an OpenAPI subset)")
            s.tools.append({"name": fd.get("name"), "parameters": schema})
    return s


COHERE_KEYS = {
    "model", "messages", "tools", "documents", "citation_options", "response_format",
    "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
    "presence_penalty", "k", "p", "logprobs", "tool_choice", "strict_tools", "stream",
    "thinking", "priority",
}


def parse_cohere(vendor, body) -> Summary:
    only_keys(body, COHERE_KEYS, "request")
    s = Summary()
    s.model = body.get("model")
    check_model(vendor, s.model)
    s.stream = bool(body.get("stream", False))
    s.max_tokens = body.get("max_tokens")
    msgs = body.get("messages")
    need(isinstance(msgs, list) and msgs, "messages is required")
    ids = set()
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        role = m.get("role")
        need(role in ("system", "user", "assistant", "tool"), f"{where}.role {role!r} is invalid")
        c = m.get("content")
        if isinstance(c, list):
            parts = []
            for j, p in enumerate(c):
                kind = p.get("type")
                need(kind in ("text", "image_url", "document"), f"{where}.content[{j}].type {kind!r} is invalid")
                if kind == "document":
                    need(role == "tool", f"{where}.content[{j}]: documents are tool results")
                    data = (p.get("document") or {}).get("data")
                    need(data is not None, f"{where}.content[{j}].document.data is required")
                    parts.append(data if isinstance(data, str) else json.dumps(data))
                else:
                    parts.append(p.get("text", "") if kind == "text" else "[image]")
            text = "".join(parts)
        else:
            need(c is None or isinstance(c, str), f"{where}.content must be a string or a list")
            text = c or ""
        if role == "system":
            only_keys(m, {"role", "content"}, where)
            s.add_system(text)
        elif role == "user":
            only_keys(m, {"role", "content"}, where)
            s.messages.append({"role": "user", "text": text})
        elif role == "assistant":
            only_keys(m, {"role", "content", "tool_calls", "tool_plan", "citations"}, where)
            for j, tc in enumerate(m.get("tool_calls") or []):
                w = f"{where}.tool_calls[{j}]"
                only_keys(tc, {"id", "type", "function"}, w)
                fn = tc.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "")
                except ValueError:
                    raise Reject(f"{w}.function.arguments is not valid JSON")
                ids.add(tc.get("id"))
                s.messages.append({"role": "assistant", "tool_call": {"id": tc.get("id"), "name": fn.get("name"), "arguments": args}})
            if text:
                s.messages.append({"role": "assistant", "text": text})
        else:
            only_keys(m, {"role", "content", "tool_call_id"}, where)
            need(m.get("tool_call_id") in ids, f"{where}.tool_call_id answers no earlier tool call")
            s.messages.append({"role": "tool", "tool_call_id": m["tool_call_id"], "tool_result": text})
    for i, t in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        only_keys(t, {"type", "function"}, where)
        need(t.get("type") == "function", f"{where}.type must be 'function'")
        fn = t.get("function") or {}
        only_keys(fn, {"name", "description", "parameters"}, f"{where}.function")
        s.tools.append({"name": fn.get("name"), "parameters": fn.get("parameters")})
    return s


OLLAMA_KEYS = {"model", "messages", "tools", "format", "options", "stream", "keep_alive", "think", "logprobs", "top_logprobs"}


def parse_ollama(vendor, body) -> Summary:
    only_keys(body, OLLAMA_KEYS, "request")
    s = Summary()
    s.model = body.get("model")
    check_model(vendor, s.model)
    s.stream = body.get("stream", True)  # Ollama streams unless told not to
    need(isinstance(s.stream, bool), "stream must be a boolean")
    opts = body.get("options") or {}
    s.max_tokens = opts.get("num_predict")
    msgs = body.get("messages")
    need(isinstance(msgs, list) and msgs, "messages is required")
    names = set()
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        only_keys(m, {"role", "content", "images", "tool_calls", "tool_name", "thinking"}, where)
        role = m.get("role")
        need(role in ("system", "user", "assistant", "tool"), f"{where}.role {role!r} is invalid")
        c = m.get("content", "")
        need(isinstance(c, str), f"{where}.content must be a string (Ollama has no content parts)")
        if role == "system":
            s.add_system(c)
        elif role == "user":
            s.messages.append({"role": "user", "text": c + ("[image]" * len(m.get("images") or []))})
        elif role == "assistant":
            for j, tc in enumerate(m.get("tool_calls") or []):
                fn = (tc or {}).get("function") or {}
                need(isinstance(fn.get("arguments"), dict), f"{where}.tool_calls[{j}].function.arguments must be an object")
                names.add(fn.get("name"))
                s.messages.append({"role": "assistant", "tool_call": {"id": tc.get("id"), "name": fn.get("name"), "arguments": fn["arguments"]}})
            if c:
                s.messages.append({"role": "assistant", "text": c})
        else:
            s.messages.append({"role": "tool", "tool_call_id": m.get("tool_name"), "tool_result": c})
    for i, t in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        only_keys(t, {"type", "function"}, where)
        fn = t.get("function") or {}
        s.tools.append({"name": fn.get("name"), "parameters": fn.get("parameters")})
    return s


BEDROCK_KEYS = {
    "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
    "additionalModelRequestFields", "additionalModelResponseFieldPaths", "promptVariables",
    "requestMetadata", "performanceConfig",
}


def parse_bedrock(vendor, body, model, stream) -> Summary:
    only_keys(body, BEDROCK_KEYS, "request")
    s = Summary()
    s.model = model
    check_model(vendor, model)
    s.stream = stream
    ic = body.get("inferenceConfig")
    if ic is not None:
        only_keys(ic, {"maxTokens", "temperature", "topP", "stopSequences"}, "inferenceConfig")
        s.max_tokens = ic.get("maxTokens")
    for j, b in enumerate(body.get("system") or []):
        only_keys(b, {"text", "cachePoint", "guardContent"}, f"system[{j}]")
        s.add_system(b.get("text", ""))
    msgs = body.get("messages")
    need(isinstance(msgs, list) and msgs, "messages is required")
    ids = set()
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        only_keys(m, {"role", "content"}, where)
        role = m.get("role")
        need(role in ("user", "assistant"), f"{where}.role must be 'user' or 'assistant'")
        c = m.get("content")
        need(isinstance(c, list) and c, f"{where}.content must be a non-empty list of blocks")
        texts = []
        for j, b in enumerate(c):
            w = f"{where}.content[{j}]"
            need(isinstance(b, dict) and len(b) == 1, f"{w} must have exactly one member")
            (kind,) = b
            if kind == "text":
                texts.append(b["text"])
            elif kind == "image" and role == "user":
                texts.append("[image]")
            elif kind == "toolUse" and role == "assistant":
                tu = b["toolUse"]
                only_keys(tu, {"toolUseId", "name", "input"}, w + ".toolUse")
                ids.add(tu.get("toolUseId"))
                s.messages.append({"role": "assistant", "tool_call": {"id": tu.get("toolUseId"), "name": tu.get("name"), "arguments": tu.get("input")}})
            elif kind == "toolResult" and role == "user":
                tr = b["toolResult"]
                only_keys(tr, {"toolUseId", "content", "status"}, w + ".toolResult")
                need(tr.get("toolUseId") in ids, f"{w}.toolResult.toolUseId answers no earlier toolUse")
                parts = []
                for x in tr.get("content") or []:
                    parts.append(x["text"] if "text" in x else json.dumps(x.get("json")))
                s.messages.append({"role": "tool", "tool_call_id": tr["toolUseId"], "tool_result": "".join(parts)})
            elif kind in ("cachePoint", "reasoningContent"):
                pass
            else:
                raise Reject(f"{w}: block {kind!r} is not allowed for role {role}")
        if texts:
            s.messages.append({"role": role, "text": "".join(texts)})
    tc = body.get("toolConfig")
    if tc is not None:
        only_keys(tc, {"tools", "toolChoice"}, "toolConfig")
        for i, t in enumerate(tc.get("tools") or []):
            where = f"toolConfig.tools[{i}]"
            only_keys(t, {"toolSpec", "cachePoint"}, where)
            spec = t.get("toolSpec") or {}
            only_keys(spec, {"name", "description", "inputSchema"}, where + ".toolSpec")
            schema = (spec.get("inputSchema") or {}).get("json")
            need(isinstance(schema, dict), f"{where}.toolSpec.inputSchema.json must be an object")
            s.tools.append({"name": spec.get("name"), "parameters": schema})
    return s


# ------------------------------------------------------------- the server


class Request:
    def __init__(self, handler: BaseHTTPRequestHandler, body: bytes):
        self.method = handler.command
        parsed = urllib.parse.urlsplit(handler.path)
        self.raw_path = parsed.path
        self.raw_query = parsed.query
        self.path = urllib.parse.unquote(parsed.path)
        self.query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        self.headers = {k.lower(): v for k, v in handler.headers.items()}
        self.raw_body = body


class Pacer:
    """Holds a stream back: piece k+1 goes out only after ack(k+1)."""

    def __init__(self, limit: float = WAIT_LIMIT):
        self.limit = limit
        self.acked = 0
        self.sent = 0
        self.pieces: list[str] = []
        self.timed_out = False
        self.started = threading.Event()
        self._cond = threading.Condition()

    def ack(self, n: int):
        with self._cond:
            self.acked = max(self.acked, n)
            self._cond.notify_all()

    def ack_text(self, received: str) -> int:
        """Acks as many whole pieces as `received` holds, in order; returns that number."""
        n = 0
        acc = ""
        for piece in self.pieces:
            if received.startswith(acc + piece):
                acc += piece
                n += 1
            else:
                break
        self.ack(n)
        return n

    def before_piece(self, k: int) -> bool:
        """Called before piece k (0-based) is sent; False when the client never acked."""
        with self._cond:
            if k > 0 and not self._cond.wait_for(lambda: self.acked >= k, self.limit):
                self.timed_out = True
                return False
            self.sent = k + 1
            return True


class Vendor:
    """One vendor's state: its log, its failure commands, its pacers."""

    def __init__(self, name: str, key: str, secret: str | None = None):
        self.name = name
        self.key = key
        self.secret = secret
        self.lock = threading.Lock()
        self.log: list[dict] = []
        self.commands: list[dict] = []
        self.pacers: list[Pacer] = []
        self.active_pacer: Pacer | None = None
        self.release = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    # -- control
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def fail(self, mode="status", status=500, after=1, times=1, retry_after=None, message=None):
        """The next `times` requests fail in `mode` (see the module doc)."""
        with self.lock:
            for _ in range(times):
                self.commands.append(
                    {"mode": mode, "status": status, "after": after, "retry_after": retry_after, "message": message}
                )

    def pace(self, limit: float = WAIT_LIMIT) -> Pacer:
        pacer = Pacer(limit)
        with self.lock:
            self.pacers.append(pacer)
        return pacer

    def reset(self):
        with self.lock:
            self.log.clear()
            self.commands.clear()
            self.pacers.clear()
            self.active_pacer = None
            self.release.set()
            self.release = threading.Event()

    @property
    def requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.log if r["path"] is not None]

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def rejections(self) -> list[dict]:
        return [r for r in self.requests if r["rejected"]]

    @property
    def last(self) -> dict:
        reqs = self.requests
        if not reqs:
            raise AssertionError(f"mock {self.name} received no request")
        return reqs[-1]

    def _take(self, stream: bool):
        with self.lock:
            cmd = self.commands.pop(0) if self.commands else None
            pacer = self.pacers.pop(0) if (stream and self.pacers and cmd is None) else None
            if pacer:
                self.active_pacer = pacer
        return cmd, pacer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-vendor/1"

    def log_message(self, fmt, *args):  # quiet
        if os.environ.get("MOCK_VENDORS_VERBOSE"):
            sys.stderr.write(f"[{self.server.vendor.name}] " + fmt % args + "\n")

    # -- plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, ctype="application/json", headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_stream(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reset(self):
        """Closes the connection with a TCP reset, without an answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _hang(self, release: threading.Event, limit: float = 120.0) -> bool:
        """Answers nothing until `release` is set or the client closes the
        connection (True then), at most `limit` seconds."""
        deadline = time.monotonic() + limit
        while not release.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
        return False

    # -- entry points
    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        vendor: Vendor = self.server.vendor
        body = self._read_body()
        req = Request(self, body)
        if req.path.startswith("/__mock/"):
            return self._control(vendor, req)
        record = {
            "vendor": vendor.name, "method": req.method, "path": req.path, "query": req.query,
            "headers": req.headers, "body": None, "summary": None, "answer": None,
            "api": None, "stream": False, "rejected": None, "failed": None, "status": None,
            "closed_by_client": False, "at": time.monotonic(),
        }
        with vendor.lock:
            vendor.log.append(record)
        try:
            api, summary, stream = self._validate(vendor, req, record)
        except Reject as r:
            record["rejected"] = r.reason
            record["status"] = 400
            return self._error(vendor, record.get("api"), 400, f"mock {vendor.name}: {r.reason}")
        summary.raw = record["body"] or {}
        record.update(api=api, summary=summary.to_json(), stream=stream)
        answer = Answer(vendor.name, summary)
        record["answer"] = answer.to_json()
        cmd, pacer = vendor._take(stream)
        record["failed"] = cmd
        if cmd and cmd["mode"] == "hang":
            record["closed_by_client"] = self._hang(vendor.release)
            return self._drop()
        if cmd and cmd["mode"] == "reset":
            return self._reset()
        if cmd and cmd["mode"] in ("status", "error_body"):
            status = cmd["status"] if cmd["mode"] == "status" else 200
            record["status"] = status
            headers = {}
            if cmd.get("retry_after") is not None:
                headers["Retry-After"] = str(cmd["retry_after"])
            msg = cmd.get("message") or f"mock {vendor.name}: failure on command ({cmd['status']})"
            return self._error(vendor, api, cmd["status"], msg, headers, as_status=status)
        if cmd and cmd["mode"] in ("midstream", "drop") and not stream:
            record["status"] = 500
            return self._error(vendor, api, 500, f"mock {vendor.name}: mid-stream failure asked for a non-streamed request")
        record["status"] = 200
        render = getattr(self, f"_answer_{api}")
        render(vendor, summary, answer, stream, cmd, pacer)

    def _control(self, vendor: Vendor, req: Request):
        p = req.path
        if p == "/__mock/requests":
            return self._send(200, vendor.requests)
        if p == "/__mock/fail":
            args = json.loads(req.raw_body or b"{}")
            vendor.fail(**args)
            return self._send(200, {"ok": True})
        if p == "/__mock/pace":
            vendor.pace()
            return self._send(200, {"ok": True})
        if p == "/__mock/ack":
            if vendor.active_pacer:
                vendor.active_pacer.ack(int(req.query.get("n", "0")))
            return self._send(200, {"ok": True})
        if p == "/__mock/reset":
            vendor.reset()
            return self._send(200, {"ok": True})
        return self._send(404, {"error": f"unknown control path {p}"})

    # -- validation: returns (api, summary, stream)
    def _body_json(self, req):
        ctype = req.headers.get("content-type", "")
        need(ctype.split(";")[0].strip() == "application/json", f"Content-Type must be application/json (got {ctype!r})")
        try:
            body = json.loads(req.raw_body)
        except ValueError:
            raise Reject("the body is not valid JSON")
        need(isinstance(body, dict), "the body must be a JSON object")
        return body

    def _bearer(self, vendor: Vendor, req: Request, optional=False):
        auth = req.headers.get("authorization")
        if optional and not vendor.key:
            # A keyless vendor (local Ollama): any Authorization is a client's credential passed on.
            need(auth is None, "Authorization sent to a vendor that has no key configured")
            return
        if optional and auth is None:
            return
        need(auth is not None, "missing Authorization header (Bearer expected)")
        need(auth == f"Bearer {vendor.key}", "Authorization is not 'Bearer <the configured key>'")
        for other in ("x-api-key", "x-goog-api-key"):
            need(other not in req.headers, f"unexpected {other} header for {vendor.name}")

    def _validate(self, vendor: Vendor, req: Request, record):
        need(req.method == "POST", f"{req.method} {req.path} is not an API of {vendor.name}")
        name, p = vendor.name, req.path
        chat_paths = {
            "openai": {"/v1/chat/completions"},
            "mistral": {"/v1/chat/completions"},
            "deepseek": {"/chat/completions", "/v1/chat/completions"},
            "alibaba": {"/compatible-mode/v1/chat/completions"},
            "ollama": {"/v1/chat/completions"},
            "compat": {"/v1/chat/completions"},
        }
        responses_paths = {"openai": "/v1/responses", "alibaba": "/compatible-mode/v1/responses"}
        if p in chat_paths.get(name, ()):
            record["api"] = "chat"
            self._bearer(vendor, req, optional=(name == "ollama"))
            body = self._body_json(req)
            record["body"] = body
            allowed = {"mistral": MISTRAL_CHAT_KEYS, "ollama": OLLAMA_V1_KEYS}.get(name, OPENAI_CHAT_KEYS)
            s = parse_openai_chat(name, body, allowed)
            return "chat", s, s.stream
        if responses_paths.get(name) == p:
            record["api"] = "responses"
            self._bearer(vendor, req)
            body = self._body_json(req)
            record["body"] = body
            s = parse_responses(name, body)
            return "responses", s, s.stream
        if name == "anthropic" and p == "/v1/messages":
            record["api"] = "anthropic"
            # Anthropic takes the key as x-api-key, or (newer SDKs) as Bearer; one of them, exact.
            api_key, auth = req.headers.get("x-api-key"), req.headers.get("authorization")
            need(api_key is not None or auth is not None, "missing x-api-key header")
            need(not (api_key and auth), "both x-api-key and Authorization sent")
            need(api_key == vendor.key if api_key is not None else auth == f"Bearer {vendor.key}",
                 "x-api-key (or Bearer) is not the configured key")
            record["auth"] = "x-api-key" if api_key is not None else "bearer"
            need(re.fullmatch(r"20\d\d-\d\d-\d\d", req.headers.get("anthropic-version", "")), f"anthropic-version header is missing or malformed ({req.headers.get('anthropic-version')!r})")
            body = self._body_json(req)
            record["body"] = body
            s = parse_anthropic(name, body)
            return "anthropic", s, s.stream
        if name == "gemini":
            m = re.fullmatch(r"/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)", p)
            need(m, f"{p} is not a Gemini API path")
            record["api"] = "gemini"
            stream = m[2] == "streamGenerateContent"
            if stream:
                need(req.query.get("alt") == "sse", "streamGenerateContent without alt=sse (the JSON-array stream is not what the gateway should ask for)")
            header, query = req.headers.get("x-goog-api-key"), req.query.get("key")
            need(header is not None or query is not None, "missing API key (x-goog-api-key header or ?key=)")
            need(not (header and query), "API key sent both as header and query")
            need((header or query) == vendor.key, "API key is not the configured key")
            need("authorization" not in req.headers, "unexpected Authorization header for Gemini")
            body = self._body_json(req)
            record["body"] = body
            return "gemini", parse_gemini(name, body, m[1], stream), stream
        if name == "cohere" and p == "/v2/chat":
            record["api"] = "cohere"
            self._bearer(vendor, req)
            body = self._body_json(req)
            record["body"] = body
            s = parse_cohere(name, body)
            return "cohere", s, s.stream
        if name == "ollama" and p == "/api/chat":
            record["api"] = "ollama"
            self._bearer(vendor, req, optional=True)
            body = self._body_json(req)
            record["body"] = body
            s = parse_ollama(name, body)
            return "ollama", s, s.stream
        if name == "bedrock":
            m = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream)", p)
            need(m, f"{p} is not a Bedrock Converse path")
            record["api"] = "bedrock"
            record["region"] = check_sigv4(req, vendor.key, vendor.secret)
            body = self._body_json(req)
            record["body"] = body
            stream = m[2] == "converse-stream"
            return "bedrock", parse_bedrock(name, body, m[1], stream), stream
        raise Reject(f"{req.method} {p} is not an API of {name}")

    # -- errors in each vendor's shape
    def _error(self, vendor, api, status, message, headers=None, as_status=None):
        as_status = status if as_status is None else as_status
        name = vendor.name
        headers = dict(headers or {})
        if api == "responses" and as_status == 200:
            # The Responses API reports a failure under 200 as a failed response.
            body = {"id": "resp_mockfailed", "object": "response", "status": "failed", "model": None,
                    "output": [], "usage": None, "incomplete_details": None,
                    "error": {"code": "server_error", "message": message}}
        elif api == "anthropic" or (api is None and name == "anthropic"):
            kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error"}.get(status, "api_error")
            body = {"type": "error", "error": {"type": kind, "message": message}}
        elif name == "gemini":
            st = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
            body = {"error": {"code": status, "message": message, "status": st}}
        elif name == "cohere":
            body = {"id": "err-mock", "message": message}
        elif name == "ollama" and api != "chat":
            body = {"error": message}
        elif name == "bedrock":
            kind = {400: "ValidationException", 401: "UnrecognizedClientException", 403: "AccessDeniedException",
                    404: "ResourceNotFoundException", 429: "ThrottlingException",
                    503: "ServiceUnavailableException"}.get(status, "InternalServerException")
            headers["x-amzn-ErrorType"] = f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            body = {"message": message}
        elif name == "mistral" and status in (400, 422):
            body = {"object": "error", "message": message, "type": "invalid_request_error", "param": None, "code": None}
        else:
            kind, code = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
                          403: ("invalid_request_error", "unsupported_country_region_territory"),
                          404: ("invalid_request_error", "model_not_found"),
                          429: ("requests", "rate_limit_exceeded")}.get(status, ("server_error", None))
            body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        self._send(as_status, body, headers=headers)

    # -- streaming helpers
    def _sse(self, data, event=None):
        text = (f"event: {event}\n" if event else "") + "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n"
        self._chunk(text.encode())

    def _pieces(self, answer, cmd, pacer, emit_piece, emit_error) -> bool:
        """Sends the answer's pieces; False when the stream was cut (error or drop)."""
        if pacer:
            pacer.pieces = list(answer.pieces)
            pacer.started.set()
        for k, piece in enumerate(answer.pieces):
            if cmd and k == cmd["after"]:
                if cmd["mode"] == "midstream":
                    emit_error(cmd.get("message") or f"mock {self.server.vendor.name}: failure in the middle of the stream")
                    self._end_stream()
                else:
                    self._drop()
                return False
            if pacer and not pacer.before_piece(k):
                emit_error("mock: the client never received the previous event (stream buffered?)")
                self._end_stream()
                return False
            emit_piece(k, piece)
        if cmd:  # `after` at or past the end: fail right before the end
            if cmd["mode"] == "midstream":
                emit_error(cmd.get("message") or "mock: failure at the end of the stream")
                self._end_stream()
            else:
                self._drop()
            return False
        return True

    # -- OpenAI Chat Completions (and every compatible vendor)
    def _answer_chat(self, vendor, s, a, stream, cmd, pacer):
        cid = "chatcmpl-mock" + hashlib.sha1(os.urandom(8)).hexdigest()[:10]
        created = int(time.time())
        usage = {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
                 "total_tokens": a.input_tokens + a.output_tokens}
        if vendor.name == "deepseek":
            usage.update(prompt_cache_hit_tokens=0, prompt_cache_miss_tokens=a.input_tokens)
        if vendor.name == "openai":
            usage.update(prompt_tokens_details={"cached_tokens": 0, "audio_tokens": 0},
                         completion_tokens_details={"reasoning_tokens": 0, "audio_tokens": 0})
        call_id = a.tool_call["id"] if a.tool_call else None
        if vendor.name == "mistral" and call_id:
            call_id = call_id[-9:]  # Mistral ids are nine alphanumerics
            a.tool_call["id"] = call_id
        finish = "tool_calls" if a.tool_call else "stop"
        if not stream:
            msg = {"role": "assistant", "content": a.text}
            if a.tool_call:
                msg["tool_calls"] = [{"id": call_id, "type": "function",
                                      "function": {"name": a.tool_call["name"], "arguments": a.arguments_json}}]
            if vendor.name == "openai":
                msg["refusal"] = None
            body = {"id": cid, "object": "chat.completion", "created": created, "model": s.model,
                    "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
                    "usage": usage}
            return self._send(200, body)
        include_usage = bool((s.raw.get("stream_options") or {}).get("include_usage"))
        usage_always = vendor.name == "mistral"

        def chunk(delta, finish_reason=None, **extra):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": s.model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                c["usage"] = None
            c.update(extra)
            return c

        self._start_stream("text/event-stream")
        self._sse(chunk({"role": "assistant", "content": ""}))

        def piece(k, text):
            if a.tool_call:
                tc = {"index": 0, "function": {"arguments": text}}
                if k == 0:
                    tc = {"index": 0, "id": call_id, "type": "function",
                          "function": {"name": a.tool_call["name"], "arguments": text}}
                self._sse(chunk({"tool_calls": [tc]}))
            else:
                self._sse(chunk({"content": text}))

        def error(message):
            self._sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})

        if not self._pieces(a, cmd, pacer, piece, error):
            return
        if usage_always:
            self._sse(chunk({}, finish, usage=usage))
        else:
            self._sse(chunk({}, finish))
            if include_usage:
                c = chunk({})
                c["choices"] = []
                c["usage"] = usage
                self._sse(c)
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    # -- OpenAI Responses
    def _answer_responses(self, vendor, s, a, stream, cmd, pacer):
        rid = "resp_mock" + hashlib.sha1(os.urandom(8)).hexdigest()[:10]
        created = int(time.time())
        usage = {"input_tokens": a.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": a.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": a.input_tokens + a.output_tokens}
        if a.tool_call:
            item = {"type": "function_call", "id": "fc_mock1", "call_id": a.tool_call["id"],
                    "name": a.tool_call["name"], "arguments": a.arguments_json, "status": "completed"}
        else:
            item = {"type": "message", "id": "msg_mock1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": a.text, "annotations": [], "logprobs": []}]}

        def response(status, output, usage_value):
            return {"id": rid, "object": "response", "created_at": created, "status": status,
                    "model": s.model, "output": output, "usage": usage_value, "error": None,
                    "incomplete_details": None, "instructions": s.system, "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": [], "temperature": 1.0, "top_p": 1.0}

        if not stream:
            return self._send(200, response("completed", [item], usage))
        seq = iter(range(10_000))

        def ev(kind, **data):
            self._sse({"type": kind, "sequence_number": next(seq), **data}, event=kind)

        self._start_stream("text/event-stream")
        ev("response.created", response=response("in_progress", [], None))
        ev("response.in_progress", response=response("in_progress", [], None))
        if a.tool_call:
            ev("response.output_item.added", output_index=0, item={**item, "arguments": "", "status": "in_progress"})
        else:
            ev("response.output_item.added", output_index=0, item={**item, "content": [], "status": "in_progress"})
            ev("response.content_part.added", item_id=item["id"], output_index=0, content_index=0,
               part={"type": "output_text", "text": "", "annotations": []})

        def piece(k, text):
            if a.tool_call:
                ev("response.function_call_arguments.delta", item_id=item["id"], output_index=0, delta=text)
            else:
                ev("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0, delta=text, logprobs=[])

        def error(message):
            ev("error", code="server_error", message=message, param=None)

        if not self._pieces(a, cmd, pacer, piece, error):
            return
        if a.tool_call:
            ev("response.function_call_arguments.done", item_id=item["id"], output_index=0, arguments=a.arguments_json)
        else:
            ev("response.output_text.done", item_id=item["id"], output_index=0, content_index=0, text=a.text, logprobs=[])
            ev("response.content_part.done", item_id=item["id"], output_index=0, content_index=0, part=item["content"][0])
        ev("response.output_item.done", output_index=0, item=item)
        ev("response.completed", response=response("completed", [item], usage))
        self._end_stream()

    # -- Anthropic Messages
    def _answer_anthropic(self, vendor, s, a, stream, cmd, pacer):
        mid = "msg_mock" + hashlib.sha1(os.urandom(8)).hexdigest()[:12]
        stop = "tool_use" if a.tool_call else "end_turn"
        tool_id = ("toolu_" + a.tool_call["id"]) if a.tool_call else None
        usage = {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if a.tool_call:
            a.tool_call["id"] = tool_id
            block = {"type": "tool_use", "id": tool_id, "name": a.tool_call["name"], "input": a.tool_call["arguments"]}
        else:
            block = {"type": "text", "text": a.text}
        message = {"id": mid, "type": "message", "role": "assistant", "model": s.model,
                   "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not stream:
            return self._send(200, message)
        self._start_stream("text/event-stream")
        start = dict(message, content=[], stop_reason=None,
                     usage={**usage, "output_tokens": 1})
        self._sse({"type": "message_start", "message": start}, event="message_start")
        if a.tool_call:
            cb = {"type": "tool_use", "id": tool_id, "name": a.tool_call["name"], "input": {}}
        else:
            cb = {"type": "text", "text": ""}
        self._sse({"type": "content_block_start", "index": 0, "content_block": cb}, event="content_block_start")
        self._sse({"type": "ping"}, event="ping")

        def piece(k, text):
            delta = {"type": "input_json_delta", "partial_json": text} if a.tool_call else {"type": "text_delta", "text": text}
            self._sse({"type": "content_block_delta", "index": 0, "delta": delta}, event="content_block_delta")

        def error(message_text):
            self._sse({"type": "error", "error": {"type": "overloaded_error", "message": message_text}}, event="error")

        if not self._pieces(a, cmd, pacer, piece, error):
            return
        self._sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
        self._sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                   "usage": {"output_tokens": a.output_tokens}}, event="message_delta")
        self._sse({"type": "message_stop"}, event="message_stop")
        self._end_stream()

    # -- Gemini
    def _answer_gemini(self, vendor, s, a, stream, cmd, pacer):
        usage = {"promptTokenCount": a.input_tokens, "candidatesTokenCount": a.output_tokens,
                 "totalTokenCount": a.input_tokens + a.output_tokens}
        if a.tool_call:
            a.tool_call["id"] = None  # Gemini names calls, it gives them no id
            parts = [{"functionCall": {"name": a.tool_call["name"], "args": a.tool_call["arguments"]}}]
        else:
            parts = [{"text": a.text}]

        def cand(parts_, finish=None):
            c = {"content": {"parts": parts_, "role": "model"}, "index": 0}
            if finish:
                c["finishReason"] = finish
            return c

        if not stream:
            return self._send(200, {"candidates": [cand(parts, "STOP")], "usageMetadata": usage,
                                    "modelVersion": s.model, "responseId": "mock-gemini-1"})
        self._start_stream("text/event-stream")
        if a.tool_call:
            # Gemini sends a function call whole, in one chunk.
            a_pieces = type("P", (), {"pieces": ["call"]})()
            emit = lambda k, t: self._sse({"candidates": [cand(parts)], "modelVersion": s.model})
        else:
            a_pieces = a
            emit = lambda k, t: self._sse({"candidates": [cand([{"text": t}])], "modelVersion": s.model,
                                           "usageMetadata": {"promptTokenCount": a.input_tokens}})

        def error(message):
            self._sse({"error": {"code": 500, "message": message, "status": "INTERNAL"}})

        if not self._pieces(a_pieces, cmd, pacer, emit, error):
            return
        self._sse({"candidates": [cand([{"text": ""}], "STOP")], "usageMetadata": usage, "modelVersion": s.model})
        self._end_stream()

    # -- Cohere v2
    def _answer_cohere(self, vendor, s, a, stream, cmd, pacer):
        usage = {"billed_units": {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens},
                 "tokens": {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens}}
        finish = "TOOL_CALL" if a.tool_call else "COMPLETE"
        if not stream:
            msg = {"role": "assistant"}
            if a.tool_call:
                msg["tool_plan"] = f"I will call {a.tool_call['name']}."
                msg["tool_calls"] = [{"id": a.tool_call["id"], "type": "function",
                                      "function": {"name": a.tool_call["name"], "arguments": a.arguments_json}}]
            else:
                msg["content"] = [{"type": "text", "text": a.text}]
            return self._send(200, {"id": "mock-cohere-1", "finish_reason": finish, "message": msg, "usage": usage})
        self._start_stream("text/event-stream")

        def ev(kind, **data):
            self._sse({"type": kind, **data}, event=kind)

        ev("message-start", id="mock-cohere-1",
           delta={"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}})
        if a.tool_call:
            ev("tool-plan-delta", delta={"message": {"tool_plan": f"I will call {a.tool_call['name']}."}})
            ev("tool-call-start", index=0, delta={"message": {"tool_calls": {
                "id": a.tool_call["id"], "type": "function", "function": {"name": a.tool_call["name"], "arguments": ""}}}})
        else:
            ev("content-start", index=0, delta={"message": {"content": {"type": "text", "text": ""}}})

        def piece(k, text):
            if a.tool_call:
                ev("tool-call-delta", index=0, delta={"message": {"tool_calls": {"function": {"arguments": text}}}})
            else:
                ev("content-delta", index=0, delta={"message": {"content": {"text": text}}})

        def error(message):
            ev("message-end", delta={"finish_reason": "ERROR", "error": message, "usage": usage})

        if not self._pieces(a, cmd, pacer, piece, error):
            return
        ev("tool-call-end" if a.tool_call else "content-end", index=0)
        ev("message-end", delta={"finish_reason": finish, "usage": usage})
        self._end_stream()

    # -- Ollama native
    def _answer_ollama(self, vendor, s, a, stream, cmd, pacer):
        now = _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
        final = {"model": s.model, "created_at": now, "done": True,
                 "done_reason": "stop", "total_duration": 1000, "load_duration": 10,
                 "prompt_eval_count": a.input_tokens, "prompt_eval_duration": 100,
                 "eval_count": a.output_tokens, "eval_duration": 500}
        calls = None
        if a.tool_call:
            a.tool_call["id"] = None  # Ollama's calls carry no id
            calls = [{"function": {"name": a.tool_call["name"], "arguments": a.tool_call["arguments"]}}]
        if not stream:
            msg = {"role": "assistant", "content": a.text or ""}
            if calls:
                msg["tool_calls"] = calls
            return self._send(200, {**final, "message": msg})
        self._start_stream("application/x-ndjson")

        def line(obj):
            self._chunk(json.dumps(obj).encode() + b"\n")

        if a.tool_call:
            pieces = type("P", (), {"pieces": ["call"]})()
            emit = lambda k, t: line({"model": s.model, "created_at": now, "done": False,
                                      "message": {"role": "assistant", "content": "", "tool_calls": calls}})
        else:
            pieces = a
            emit = lambda k, t: line({"model": s.model, "created_at": now, "done": False,
                                      "message": {"role": "assistant", "content": t}})
        if not self._pieces(pieces, cmd, pacer, emit, lambda m: line({"error": m})):
            return
        line({**final, "message": {"role": "assistant", "content": ""}})
        self._end_stream()

    # -- Bedrock Converse / ConverseStream
    def _answer_bedrock(self, vendor, s, a, stream, cmd, pacer):
        usage = {"inputTokens": a.input_tokens, "outputTokens": a.output_tokens,
                 "totalTokens": a.input_tokens + a.output_tokens}
        stop = "tool_use" if a.tool_call else "end_turn"
        if a.tool_call:
            a.tool_call["id"] = "tooluse_" + a.tool_call["id"]
        if not stream:
            block = ({"toolUse": {"toolUseId": a.tool_call["id"], "name": a.tool_call["name"], "input": a.tool_call["arguments"]}}
                     if a.tool_call else {"text": a.text})
            return self._send(200, {"output": {"message": {"role": "assistant", "content": [block]}},
                                    "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 42}})
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def ev(kind, payload):
            payload = dict(payload, p="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 1 + len(kind) % 20])
            self._chunk(eventstream_message({":event-type": kind, ":content-type": "application/json",
                                             ":message-type": "event"}, json.dumps(payload).encode()))

        ev("messageStart", {"role": "assistant"})
        if a.tool_call:
            ev("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {
                "toolUseId": a.tool_call["id"], "name": a.tool_call["name"]}}})

        def piece(k, text):
            delta = {"toolUse": {"input": text}} if a.tool_call else {"text": text}
            ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta})

        def error(message):
            self._chunk(eventstream_message({":exception-type": "modelStreamErrorException", ":content-type": "application/json",
                                             ":message-type": "exception"}, json.dumps({"message": message}).encode()))

        if not self._pieces(a, cmd, pacer, piece, error):
            return
        ev("contentBlockStop", {"contentBlockIndex": 0})
        ev("messageStop", {"stopReason": stop})
        ev("metadata", {"usage": usage, "metrics": {"latencyMs": 42}})
        self._end_stream()


class RefusingPort:
    """A 127.0.0.1 port that refuses every connection: bound (so nothing
    else takes it) but never listening. `url` is a chat endpoint there."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self):
        self.sock.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MockVendors:
    """All mock vendors, each on its own 127.0.0.1 port (0: any free port)."""

    def __init__(self, base_port: int = 0, host: str = "127.0.0.1", keys: dict[str, str] | None = None):
        env = env_defaults()
        if keys:
            env.update(keys)
        self.env = env
        self.vendors: dict[str, Vendor] = {}
        for name, (offset, key_env, _) in VENDORS.items():
            secret = env[BEDROCK_SECRET_ENV[0]] if name == "bedrock" else None
            v = Vendor(name, env[key_env], secret)
            port = base_port + offset if base_port else 0
            v.server = _Server((host, port), Handler)
            v.server.vendor = v
            self.vendors[name] = v
        self._threads = []

    def start(self) -> "MockVendors":
        for v in self.vendors.values():
            t = threading.Thread(target=v.server.serve_forever, args=(0.05,), name=f"mock-{v.name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for v in self.vendors.values():
            v.release.set()
            v.server.shutdown()
            v.server.server_close()

    def __getitem__(self, name: str) -> Vendor:
        return self.vendors[name]

    def reset(self):
        for v in self.vendors.values():
            v.reset()

    @property
    def rejections(self) -> list[dict]:
        return [r for v in self.vendors.values() for r in v.rejections]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Mock LLM vendors for Switchboard (see the module doc).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--base-port", type=int, default=BASE_PORT, help="vendor ports are base+1 .. base+10")
    ap.add_argument("--print-env", action="store_true", help="print the gateway's environment and exit")
    args = ap.parse_args(argv)
    env = env_defaults()
    if args.print_env:
        for k, v in env.items():
            print(f"export {k}={v!r}".replace("'", '"'))
        return 0
    mocks = MockVendors(args.base_port, args.host).start()
    for name, v in mocks.vendors.items():
        print(f"{name:10} {v.url}")
    print("environment for examples/configs/unified.json:")
    for k, v in env.items():
        print(f"  export {k}={v}")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    mocks.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
