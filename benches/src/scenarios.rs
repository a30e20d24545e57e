//! The scenarios: one gateway config with an endpoint per scenario, and the
//! requests that drive them.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::load::Target;
use crate::mock::filler;

/// The HMAC secret of the benchmark's JWT key (base64url of
/// `bench-secret-bench-secret-bench!`).
const JWT_SECRET: &[u8] = b"bench-secret-bench-secret-bench!";

/// SSE events per streamed answer.
pub const SSE_CHUNKS: usize = 200;

/// One scenario: the gateway endpoint, the mock URL it reaches (which the
/// bare proxy is sent directly), the request, the expected status.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short id (`s1`, `s4-full`…).
    pub id: &'static str,
    /// What it measures.
    pub what: &'static str,
    /// The gateway endpoint.
    pub endpoint: &'static str,
    /// The mock path and query the gateway's backend calls.
    pub upstream: String,
    /// The request body.
    pub body: Bytes,
    /// Extra request headers.
    pub headers: Vec<(&'static str, String)>,
    /// The status the gateway answers.
    pub expect: u16,
    /// Events in the streamed answer, when it streams.
    pub sse: Option<usize>,
    /// The scenario whose request the bare proxy is measured with for the
    /// ratio (the same upstream answer, forwarded untouched).
    pub bare: &'static str,
}

impl Scenario {
    /// The request to the gateway at `addr`.
    pub fn gateway(&self, addr: SocketAddr) -> Target {
        self.target(addr, self.endpoint)
    }

    /// The same request sent to the bare proxy (or the mock) at `addr`.
    pub fn direct(&self, addr: SocketAddr) -> Target {
        self.target(addr, &self.upstream)
    }

    fn target(&self, addr: SocketAddr, path: &str) -> Target {
        self.headers.iter().fold(
            Target::post(addr, path, self.body.clone()),
            |target, (name, value)| target.header(name, value),
        )
    }
}

const SMALL_UPSTREAM: &str = "/v1/chat/completions?size=256";

fn sse_upstream(interval_us: u64) -> String {
    format!(
        "/v1/chat/completions?stream=1&chunks={SSE_CHUNKS}&chunk_size=16&interval_us={interval_us}"
    )
}

/// The Anthropic-dialect answer the LLM scenarios' vendor gives.
const LLM_UPSTREAM: &str = "/v1/messages?shape=anthropic&size=256";

fn llm_sse_upstream() -> String {
    format!("/v1/messages?shape=anthropic&stream=1&chunks={SSE_CHUNKS}&chunk_size=16&interval_us=0")
}

/// What an OpenAI SDK sends besides the body (for `input_headers: ["*"]`).
fn sdk_headers() -> Vec<(&'static str, String)> {
    [
        (
            "authorization",
            "Bearer sk-bench-0123456789abcdef0123456789abcdef",
        ),
        ("user-agent", "OpenAI/Python 1.54.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "1.54.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.11.7"),
        ("x-stainless-retry-count", "0"),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

/// A small OpenAI Chat Completions request.
pub fn chat_body(stream: bool) -> Bytes {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Summarise the plot of Hamlet in two sentences, please."}], "max_tokens": 128});
    if stream {
        body["stream"] = json!(true);
    }
    Bytes::from(body.to_string())
}

/// A small chat request (about 200 bytes).
pub fn small_body() -> Bytes {
    Bytes::from(
        json!({"model": "gpt-4o", "prompt": "Summarise the plot of Hamlet in two sentences, please.", "max_tokens": 128})
            .to_string(),
    )
}

/// A 100 KB prompt.
pub fn large_body() -> Bytes {
    Bytes::from(
        json!({"model": "gpt-4o", "prompt": filler(100 * 1024), "max_tokens": 128}).to_string(),
    )
}

/// A valid HS256 token for the benchmark key, valid for a day.
pub fn jwt() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 86_400;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("bench".to_owned());
    jsonwebtoken::encode(
        &header,
        &json!({"sub": "bench-user", "tier": "pro", "exp": exp, "iss": "https://idp.bench"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap_or_default()
}

/// Every scenario, in table order.
pub fn all() -> Vec<Scenario> {
    let auth = vec![
        ("authorization", format!("Bearer {}", jwt())),
        ("x-tier", "pro".to_owned()),
    ];
    let s = |id, what, endpoint, upstream: &str, body: Bytes| Scenario {
        id,
        what,
        endpoint,
        upstream: upstream.to_owned(),
        body,
        headers: Vec::new(),
        expect: 200,
        sse: None,
        bare: "s1",
    };
    let mut list = vec![
        s(
            "s1",
            "small chat, routing only (no-op)",
            "/s1",
            SMALL_UPSTREAM,
            small_body(),
        ),
        Scenario {
            headers: sdk_headers(),
            bare: "s1-hdrs",
            ..s(
                "s1-hdrs",
                "small chat, routing only, input_headers [\"*\"], SDK headers",
                "/s1-hdrs",
                SMALL_UPSTREAM,
                small_body(),
            )
        },
        s(
            "s1-json",
            "small chat, json encoding (parse + re-encode)",
            "/s1-json",
            SMALL_UPSTREAM,
            small_body(),
        ),
        Scenario {
            bare: "s2",
            ..s(
                "s2",
                "100 KB prompt, no layer reads it (streamed)",
                "/s2",
                SMALL_UPSTREAM,
                large_body(),
            )
        },
        Scenario {
            bare: "s2",
            ..s(
                "s2-tmpl",
                "100 KB prompt through a body template",
                "/s2-tmpl",
                SMALL_UPSTREAM,
                large_body(),
            )
        },
        Scenario {
            sse: Some(SSE_CHUNKS),
            bare: "s3",
            ..s(
                "s3",
                "SSE, 200 chunks, burst (no-op)",
                "/s3",
                &sse_upstream(0),
                small_body(),
            )
        },
        Scenario {
            sse: Some(SSE_CHUNKS),
            bare: "s3",
            ..s(
                "s3-json",
                "SSE, 200 chunks, burst, json endpoint",
                "/s3-json",
                &sse_upstream(0),
                small_body(),
            )
        },
        Scenario {
            sse: Some(SSE_CHUNKS),
            bare: "s3-paced",
            ..s(
                "s3-paced",
                "SSE, 200 chunks, 1 ms apart",
                "/s3-paced",
                &sse_upstream(1000),
                small_body(),
            )
        },
    ];
    for (id, what, endpoint) in [
        (
            "s4-full",
            "full chain: JWT + CEL + template + masking",
            "/s4-full",
        ),
        ("s4-jwt", "JWT alone (cached key)", "/s4-jwt"),
        ("s4-cel", "CEL policy alone", "/s4-cel"),
        ("s4-tmpl", "body template alone", "/s4-tmpl"),
        ("s4-mask", "response masking alone", "/s4-mask"),
        (
            "s4-lua",
            "Lua pre + post (modifier/lua-proxy) alone",
            "/s4-lua",
        ),
    ] {
        list.push(Scenario {
            headers: auth.clone(),
            ..s(id, what, endpoint, SMALL_UPSTREAM, small_body())
        });
    }
    list.push(Scenario {
        expect: 500,
        ..s(
            "s5-500",
            "error path: backend answers 500",
            "/s5-500",
            "/v1/chat/completions?status=500",
            small_body(),
        )
    });
    // A single backend that cannot be reached answers 500 with
    // `X-Krakend-Completed: false`, as KrakenD does.
    list.push(Scenario {
        expect: 500,
        ..s(
            "s5-refused",
            "error path: connection refused",
            "/s5-refused",
            "/refused",
            small_body(),
        )
    });
    list.push(s(
        "s5-merge",
        "two backends, one answers 500 (partial)",
        "/s5-merge",
        SMALL_UPSTREAM,
        small_body(),
    ));
    let team = || vec![("x-team", "bench".to_owned())];
    for (id, what, endpoint, stream, headers) in [
        (
            "s6-llm",
            "OpenAI chat to an Anthropic-dialect vendor (translated)",
            "/s6-llm",
            false,
            Vec::new(),
        ),
        (
            "s6-llm-stream",
            "the same, streamed: 200 Anthropic events to OpenAI chunks",
            "/s6-llm-stream",
            true,
            Vec::new(),
        ),
        (
            "s6-gov",
            "s6-llm with a token quota and a rate limit",
            "/s6-gov",
            false,
            team(),
        ),
        (
            "s6-gov-stream",
            "s6-llm-stream with a token quota and a rate limit",
            "/s6-gov-stream",
            true,
            team(),
        ),
    ] {
        let upstream = if stream {
            llm_sse_upstream()
        } else {
            LLM_UPSTREAM.to_owned()
        };
        list.push(Scenario {
            headers,
            sse: stream.then_some(SSE_CHUNKS),
            bare: if stream { "s6-llm-stream" } else { "s6-llm" },
            ..s(id, what, endpoint, &upstream, chat_body(stream))
        });
    }
    for (id, what, endpoint, headers) in [
        (
            "s7-route",
            "ai/router: a header gate picks the provider",
            "/s7-route",
            vec![("x-plan", "pro".to_owned())],
        ),
        (
            "s7-failover",
            "ai/router: the first provider refuses, failover answers",
            "/s7-failover",
            Vec::new(),
        ),
    ] {
        list.push(Scenario {
            headers,
            bare: "s6-llm",
            ..s(id, what, endpoint, LLM_UPSTREAM, chat_body(false))
        });
    }
    list
}

fn template_b64() -> String {
    // The vendor body an OpenAI template writes, from the client's prompt.
    let template = r#"{"model": {{ .req_body.model | toJson }}, "messages": [{"role": "user", "content": {{ .req_body.prompt | toJson }}}], "max_tokens": {{ .req_body.max_tokens }}}"#;
    base64_encode(template.as_bytes())
}

fn base64_encode(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64url(input: &[u8]) -> String {
    base64_encode(input)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// The LLM endpoints: translation (`ai/llm`), the same with a quota and a
/// rate limit, and `ai/router` decisions.
fn llm_endpoints(host: &[String]) -> Vec<Value> {
    let inline = json!({"ai/llm": {"format": "openai", "anthropic": {"v1": {
        "credentials": "sk-ant-bench", "variables": {"model": "claude-sonnet-4"}}}}});
    let governance = json!({
        "qos/ratelimit/router": {"max_rate": 1_000_000, "client_max_rate": 1_000_000, "every": "1s", "strategy": "header", "key": "X-Team"},
        "governance/quota": {"quota_name": "bench-tokens", "tier_key": "X-Team", "weight_strategy": "usage",
            "tiers": [{"rule_name": "team", "tier_value_as": "*", "strategy": "header", "key": "X-Team"}]}
    });
    let llm = |endpoint: &str, upstream: &str, extra: &Value| {
        json!({
            "endpoint": endpoint,
            "method": "POST",
            "output_encoding": "no-op",
            "extra_config": extra,
            "backend": [{"host": host, "url_pattern": upstream, "extra_config": inline}]
        })
    };
    let router = |endpoint: &str, router: Value| {
        json!({
            "endpoint": endpoint,
            "method": "POST",
            "output_encoding": "no-op",
            "input_headers": ["X-Plan"],
            "backend": [{"host": host, "url_pattern": "/unused", "extra_config": {"ai/router": router}}]
        })
    };
    vec![
        llm("/s6-llm", LLM_UPSTREAM, &json!({})),
        llm("/s6-llm-stream", &llm_sse_upstream(), &json!({})),
        llm("/s6-gov", LLM_UPSTREAM, &governance),
        llm("/s6-gov-stream", &llm_sse_upstream(), &governance),
        router(
            "/s7-route",
            json!({"routes": [
                {"gates": ["plan_free"], "provider": "down"},
                {"gates": ["plan_pro"], "provider": "claude"}
            ]}),
        ),
        router(
            "/s7-failover",
            json!({"retry": {"attempts": 1}, "routes": [{"provider": "down", "failover": "claude"}]}),
        ),
    ]
}

/// Writes the JWK set next to the config and returns the gateway config:
/// every scenario's endpoint, backends on `mock`.
pub fn gateway_config(mock: SocketAddr, port: u16, dir: &Path) -> std::io::Result<Value> {
    let jwks = json!({"keys": [{"kty": "oct", "kid": "bench", "alg": "HS256", "k": base64url(JWT_SECRET)}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string())?;
    let host = vec![format!("http://{mock}")];
    let jwt = json!({"alg": "HS256", "jwk_local_path": "jwks.json", "cache": true});
    let cel = json!({"req": {"policies": ["req_headers['X-Tier'][0] in ['free', 'pro']"]}, "jwt": {"policies": ["JWT.sub == 'bench-user'"]}});
    let cel_alone = json!({"req": {"policies": ["req_headers['X-Tier'][0] in ['free', 'pro']"]}});
    let template = json!({"template": template_b64(), "content_type": "application/json"});
    let mask = json!({"modifiers": [{"regexp": {"field": "choices.*.message.content", "find": "\\b(?:\\d[ -]?){13,16}\\b", "replace": "XXX-CARD-XXX"}}]});
    let lua = json!({
        "pre": "local r = request.load(); r:headers('X-Lua', r:headers('X-Tier'))",
        "post": "local d = response.load():data(); d:set('model_seen', d:get('model'))"
    });
    let no_op = |endpoint: &str, upstream: &str, backend_extra: Value, extra: Value| {
        json!({
            "endpoint": endpoint,
            "method": "POST",
            "output_encoding": "no-op",
            "input_headers": ["Authorization", "X-Tier"],
            "extra_config": extra,
            "backend": [{"host": host, "url_pattern": upstream, "encoding": "no-op", "extra_config": backend_extra}]
        })
    };
    let json_endpoint = |endpoint: &str, upstream: &str| {
        json!({
            "endpoint": endpoint,
            "method": "POST",
            "backend": [{"host": host, "url_pattern": upstream}]
        })
    };
    let e = || json!({});
    let endpoints = vec![
        no_op("/s1", SMALL_UPSTREAM, e(), e()),
        json!({
            "endpoint": "/s1-hdrs",
            "method": "POST",
            "output_encoding": "no-op",
            "input_headers": ["*"],
            "backend": [{"host": host, "url_pattern": SMALL_UPSTREAM, "encoding": "no-op"}]
        }),
        json_endpoint("/s1-json", SMALL_UPSTREAM),
        no_op("/s2", SMALL_UPSTREAM, e(), e()),
        no_op(
            "/s2-tmpl",
            SMALL_UPSTREAM,
            json!({"modifier/request-body-generator": template}),
            e(),
        ),
        no_op("/s3", &sse_upstream(0), e(), e()),
        json_endpoint("/s3-json", &sse_upstream(0)),
        no_op("/s3-paced", &sse_upstream(1000), e(), e()),
        no_op(
            "/s4-full",
            SMALL_UPSTREAM,
            json!({"modifier/request-body-generator": template, "modifier/response-body": mask}),
            json!({"auth/validator": jwt, "security/policies": cel}),
        ),
        no_op(
            "/s4-jwt",
            SMALL_UPSTREAM,
            e(),
            json!({"auth/validator": jwt}),
        ),
        no_op(
            "/s4-cel",
            SMALL_UPSTREAM,
            e(),
            json!({"security/policies": cel_alone}),
        ),
        no_op(
            "/s4-tmpl",
            SMALL_UPSTREAM,
            json!({"modifier/request-body-generator": template}),
            e(),
        ),
        no_op(
            "/s4-mask",
            SMALL_UPSTREAM,
            json!({"modifier/response-body": mask}),
            e(),
        ),
        no_op(
            "/s4-lua",
            SMALL_UPSTREAM,
            e(),
            json!({"modifier/lua-proxy": lua}),
        ),
        json_endpoint("/s5-500", "/v1/chat/completions?status=500"),
        json!({
            "endpoint": "/s5-refused",
            "method": "POST",
            "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/refused"}]
        }),
        json!({
            "endpoint": "/s5-merge",
            "method": "POST",
            "backend": [
                {"host": host, "url_pattern": SMALL_UPSTREAM, "group": "ok"},
                {"host": host, "url_pattern": "/v1/chat/completions?status=500", "group": "failed"}
            ]
        }),
    ];
    let mut endpoints = endpoints;
    endpoints.extend(llm_endpoints(&host));
    Ok(json!({
        "version": 3,
        "port": port,
        "listen_ip": "127.0.0.1",
        "timeout": "30s",
        "extra_config": {
            "ai/providers": {"providers": [
                {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4",
                 "endpoint": format!("{}{LLM_UPSTREAM}", host[0]), "credentials": "sk-ant-bench", "format": "openai"},
                {"name": "down", "provider": "anthropic", "model": "claude-sonnet-4",
                 "endpoint": "http://127.0.0.1:1/v1/messages", "credentials": "sk-ant-bench", "format": "openai"}
            ]},
            "ai/classifiers": {"gates": [
                {"name": "plan_free", "rule": "header", "header": {"name": "X-Plan", "value": "free"}},
                {"name": "plan_pro", "rule": "header", "header": {"name": "X-Plan", "value": "pro"}}
            ]},
            "governance/processors": {"quotas": [{"name": "bench-tokens",
                "rules": [{"name": "team", "limits": [{"amount": 1_000_000_000_000_000u64, "unit": "day"}]}]}]}
        },
        "endpoints": endpoints
    }))
}
