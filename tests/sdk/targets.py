"""The vendors the SDK suite drives through the gateway, as data.

Each target is one vendor API behind the gateway: the mock that answers it,
the model the provider entry names, and the gateway paths that serve it to
each client format (see examples/configs/unified.json). To add a vendor or a
scenario (failover, routing), add a row here and its endpoints to the
config; every parametrised test picks it up.
"""

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    name: str  # also the path prefix on the gateway: /<name>/v1/...
    mock: str  # the mock vendor that answers (mock_vendors.VENDORS)
    model: str
    api: str  # the vendor API the mock must see (the record's "api")
    # what the vendor cannot do, so tests that need it skip (never silently pass)
    lacks: frozenset = field(default_factory=frozenset)

    @property
    def openai_base(self) -> str:
        return f"/{self.name}/v1"

    @property
    def anthropic_base(self) -> str:
        return f"/{self.name}"

    @property
    def unified_path(self) -> str:
        return f"/{self.name}/chat"


TARGETS = [
    Target("openai", "openai", "gpt-5.4-mini", "chat"),
    Target("openai-responses", "openai", "gpt-5.4-mini", "responses"),
    Target("anthropic", "anthropic", "claude-haiku-4-5", "anthropic"),
    Target("gemini", "gemini", "gemini-2.5-flash", "gemini"),
    Target("mistral", "mistral", "mistral-small-latest", "chat"),
    Target("deepseek", "deepseek", "deepseek-chat", "chat"),
    Target("alibaba", "alibaba", "qwen3.8-flash", "chat"),
    Target("ollama", "ollama", "llama3.2", "ollama"),
    Target("ollama-v1", "ollama", "llama3.2", "chat"),
    Target("cohere", "cohere", "command-a-03-2025", "cohere"),
    Target("bedrock", "bedrock", "eu.amazon.nova-lite-v1:0", "bedrock"),
    Target("compat", "compat", "local-model", "chat"),
]

BY_NAME = {t.name: t for t in TARGETS}

# SDK_TARGETS=openai,anthropic runs a subset (the gateway's config is pruned
# to those targets' providers and endpoints).
if os.environ.get("SDK_TARGETS"):
    _wanted = os.environ["SDK_TARGETS"].split(",")
    TARGETS = [BY_NAME[name] for name in _wanted]

# Gateway defects the suite has found and that are not fixed yet: test name ->
# {target: what fails}. Each such case runs as a strict xfail: it is reported
# as "xfailed", and turns the run red ("XPASS(strict)") once the gateway is
# fixed, so the entry has to be removed then. Never a place to hide a failure
# of the suite itself.
KNOWN_DEFECTS: dict = {}
