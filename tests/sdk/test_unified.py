"""KrakenD's unified body (`instructions`, `contents`) against every vendor,
and the example config itself."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import CONFIG, _binary, vendor_saw  # noqa: F401
from targets import TARGETS

targets = pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])


@targets
def test_unified_body(target, mocks, gateway):
    status, _, body = gateway.post(target.unified_path, {"instructions": "Be terse.", "contents": "hello there"})
    assert status == 200, body
    rec = vendor_saw(mocks, target)
    assert rec["summary"]["system"] == "Be terse."
    assert rec["summary"]["messages"] == [{"role": "user", "text": "hello there"}]
    assert body["ai_gateway_response"] == [{"contents": [rec["answer"]["text"]]}]
    assert body["usage"] == rec["answer"]["input_tokens"] + rec["answer"]["output_tokens"]


def test_example_config_serves_every_target():
    cfg = json.loads(CONFIG.read_text())
    paths = {e["endpoint"] for e in cfg["endpoints"]}
    for t in TARGETS:
        for path in (t.openai_base + "/chat/completions", t.anthropic_base + "/v1/messages", t.unified_path):
            assert path in paths, f"{CONFIG.name} lacks {path}"


def test_check_accepts_the_example_config(mocks, gateway):
    # `gateway` first: the binary is built (or found) the same way.
    env = {**os.environ, **mocks.env}
    out = subprocess.run([str(_binary()), "check", "-c", str(CONFIG)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_models_listing_for_openai_clients(mocks, gateway):
    import openai

    if "openai" not in {t.name for t in TARGETS}:
        pytest.skip("the openai target is not selected")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)
    ids = {m.id for m in client.models.list()}
    names = {p["name"] for p in json.loads(CONFIG.read_text())["extra_config"]["ai/providers"]["providers"]}
    assert names <= ids
    assert all(v.count == 0 for v in mocks.vendors.values()), "a model listing called a vendor"


@pytest.mark.parametrize("target", [t for t in TARGETS if t.mock in ("anthropic", "gemini", "bedrock")], ids=lambda t: t.name)
def test_credentials_sent_the_vendor_way(target, mocks, openai_client):
    openai_client(target).chat.completions.create(model=target.model, messages=[{"role": "user", "content": "x"}])
    rec = vendor_saw(mocks, target)
    if target.mock == "anthropic":
        assert rec["auth"] == "x-api-key" and "anthropic-version" in rec["headers"]
    elif target.mock == "gemini":
        assert "x-goog-api-key" in rec["headers"] or "key" in rec["query"]
    else:
        assert rec["region"] == mocks.env["AWS_REGION"]
