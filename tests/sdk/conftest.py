"""Fixtures: the mock vendors, and the gateway binary on the unified config.

The gateway binary: $SWITCHBOARD_BIN if set; otherwise cargo builds
`switchboard` in $SWITCHBOARD_PROFILE (release unless set to `debug`) and
the suite runs target/<profile>/switchboard. The config is
examples/configs/unified.json with the mock ports put in place of the
documented 127.0.0.1:181xx ports.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mock_vendors import BASE_PORT, VENDORS, MockVendors  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "configs" / "unified.json"


@pytest.fixture(scope="session")
def mocks():
    m = MockVendors(0).start()
    yield m
    m.stop()


@pytest.fixture(autouse=True)
def _clean_mocks(request, mocks):
    """Each test starts with empty logs; a request a mock refused fails it."""
    mocks.reset()
    yield
    if request.node.get_closest_marker("rejections_expected") is None:
        bad = [(r["vendor"], r["method"], r["path"], r["rejected"]) for r in mocks.rejections]
        assert not bad, f"mock vendors refused requests from the gateway: {bad}"


@pytest.fixture(autouse=True)
def _known_defects(request):
    from targets import KNOWN_DEFECTS

    target = getattr(request.node, "callspec", None) and request.node.callspec.params.get("target")
    reason = KNOWN_DEFECTS.get(request.node.originalname, {}).get(getattr(target, "name", None))
    if reason:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=f"gateway defect: {reason}"))


def _binary() -> Path:
    explicit = os.environ.get("SWITCHBOARD_BIN")
    if explicit:
        return Path(explicit)
    profile = os.environ.get("SWITCHBOARD_PROFILE", "release")
    cmd = ["cargo", "build", "-q", "-p", "switchboard"] + (["--release"] if profile == "release" else [])
    subprocess.run(cmd, cwd=ROOT, check=True)
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return Path(json.loads(meta.stdout)["target_directory"]) / profile / "switchboard"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_config(mocks: MockVendors) -> str:
    """unified.json with every documented mock port replaced by the live one."""
    text = CONFIG.read_text()
    if os.environ.get("SDK_TARGETS"):
        from targets import TARGETS

        cfg = json.loads(text)
        keep = {t.name + s for t in TARGETS for s in ("", "-anthropic", "-unified")}
        providers = cfg["extra_config"]["ai/providers"]["providers"]
        providers[:] = [p for p in providers if p["name"] in keep]
        cfg["endpoints"] = [
            e for e in cfg["endpoints"]
            if all(b.get("extra_config", {}).get("ai/llm", {}).get("provider") in keep for b in e["backend"])
        ]
        text = json.dumps(cfg)
    ports = {BASE_PORT + off: mocks[name].port for name, (off, _, _) in VENDORS.items()}
    return re.sub(
        r"127\.0\.0\.1:(\d+)",
        lambda m: f"127.0.0.1:{ports.get(int(m[1]), int(m[1]))}",
        text,
    )


class Gateway:
    def __init__(self, proc, port, log):
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def log_tail(self, n=40) -> str:
        return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-n:])

    def post(self, path, body, headers=None):
        """A raw JSON POST: (status, headers, parsed body or text)."""
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw, status, hdrs = r.read(), r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            raw, status, hdrs = e.read(), e.code, dict(e.headers)
        try:
            return status, hdrs, json.loads(raw)
        except ValueError:
            return status, hdrs, raw.decode(errors="replace")


def launch_gateway(config_text: str, tmp: Path, env_extra: dict | None = None) -> Gateway:
    """Starts the gateway binary on `config_text` (a JSON config) in `tmp`,
    on a free port, and waits until it listens. Stop it with `stop_gateway`."""
    binary = _binary()
    assert binary.exists(), f"gateway binary {binary} not found"
    config = tmp / "config.json"
    config.write_text(config_text)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("AWS_")}
    env.update(env_extra or {})
    env.setdefault("RUST_LOG", "warn")
    log = tmp / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), "run", "-c", str(config), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    gw = Gateway(proc, port, log)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the gateway exited with {proc.returncode} at start:\n{gw.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the gateway did not listen on {port}:\n{gw.log_tail()}")
            time.sleep(0.05)
    return gw


def stop_gateway(gw: Gateway):
    gw.proc.terminate()
    try:
        gw.proc.wait(10)
    except subprocess.TimeoutExpired:
        gw.proc.kill()


@pytest.fixture(scope="session")
def gateway(mocks, tmp_path_factory):
    gw = launch_gateway(render_config(mocks), tmp_path_factory.mktemp("gateway"), mocks.env)
    yield gw
    stop_gateway(gw)


CLIENT_KEY = "sk-client-key-never-for-vendors"


@pytest.fixture
def openai_client(gateway):
    import openai

    def make(target, **kw):
        return openai.OpenAI(base_url=gateway.url + target.openai_base, api_key=CLIENT_KEY, max_retries=0, **kw)

    return make


@pytest.fixture
def anthropic_client(gateway):
    import anthropic

    def make(target, **kw):
        return anthropic.Anthropic(base_url=gateway.url + target.anthropic_base, api_key=CLIENT_KEY, max_retries=0, **kw)

    return make


def vendor_saw(mocks, target) -> dict:
    """The one request the target's mock received, checked for the basics."""
    v = mocks[target.mock]
    reqs = v.requests
    assert len(reqs) == 1, f"{target.mock} received {len(reqs)} requests, expected 1"
    rec = reqs[0]
    assert rec["api"] == target.api, f"the gateway called {rec['path']} ({rec['api']}), expected the {target.api} API"
    assert rec["summary"]["model"] == target.model
    assert CLIENT_KEY not in json.dumps(rec["headers"]), "the client's key reached the vendor"
    return rec


class Wire:
    """What the SDK put on the wire: one entry per HTTP exchange with the
    gateway (an httpx event hook), so a retry by the SDK itself shows as a
    second exchange. `exchanges` holds (method, path, status, headers)."""

    def __init__(self):
        self.exchanges: list[tuple[str, str, int, dict]] = []

    def _on_response(self, response):
        self.exchanges.append((response.request.method, response.request.url.path,
                               response.status_code, dict(response.headers)))

    def http_client(self):
        import openai

        return openai.DefaultHttpxClient(event_hooks={"response": [self._on_response]})

    @property
    def count(self) -> int:
        return len(self.exchanges)

    @property
    def statuses(self) -> list[int]:
        return [status for _, _, status, _ in self.exchanges]

    def clear(self):
        self.exchanges.clear()


@pytest.fixture
def wire():
    return Wire()


def sdk_with_default_retries(base_url: str, wire: Wire, **kw):
    """An `openai` client as applications make it: max_retries left at the
    SDK's default (2), every exchange recorded in `wire`."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=CLIENT_KEY, http_client=wire.http_client(), **kw)
    assert client.max_retries == openai.DEFAULT_MAX_RETRIES == 2
    return client
