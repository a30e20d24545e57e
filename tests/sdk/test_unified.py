"""KrakenD's unified body (`instructions`, `contents`) against every vendor,
and the example config itself."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import CONFIG, _binary, vendor_saw
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
