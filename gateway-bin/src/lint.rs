//! What `check` warns about: configs that load but will not do what their
//! author meant.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::config::{EndpointConfig, RootConfig};
use crate::url_pattern::{Source, UrlPattern};

/// One warning, with the JSON path it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lint {
    /// Where.
    pub path: String,
    /// What and why.
    pub message: String,
    /// An explanation of how a correct config behaves rather than a
    /// problem: `check` prints it as a note, not a warning.
    pub note: bool,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Hosts of LLM vendors: endpoints that call them want more than KrakenD's
/// 2s default timeout.
const LLM_HOSTS: [&str; 10] = [
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "api.anthropic.com",
    "api.mistral.ai",
    "api.deepseek.com",
    "api.cohere.ai",
    "api.cohere.com",
    "openrouter.ai",
    "api.groq.com",
    ":11434",
];

/// Namespaces that decide who may call an endpoint.
const GUARDS: [&str; 4] = [
    "auth/validator",
    "auth/api-keys",
    "security/policies",
    "validation/cel",
];

fn calls_vendor(endpoint: &EndpointConfig) -> bool {
    endpoint
        .backend
        .iter()
        .flat_map(|b| &b.host)
        .any(|h| LLM_HOSTS.iter().any(|v| h.contains(v)))
}

/// Whether an internal pattern (`/_llm/{input_headers.X}`) can reach an
/// endpoint path (`/_llm/openai`).
fn may_reach(pattern: &str, endpoint: &str) -> bool {
    let a: Vec<&str> = pattern.split('/').collect();
    let b: Vec<&str> = endpoint.split('/').collect();
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || *x == "\u{0}" || y.starts_with('{'))
}

/// Token and money quotas reserve before the call: say so, since a request
/// may then be refused while the counter is still below its limit.
fn quota_lint(extra: &serde_json::Map<String, serde_json::Value>, at: &str, out: &mut Vec<Lint>) {
    let Some(config) = extra.get("governance/quota") else {
        return;
    };
    let strategy = config.get("weight_strategy").and_then(|v| v.as_str());
    let key = config.get("weight_key").and_then(|v| v.as_str());
    let tokens = matches!(strategy, Some("usage" | "cost"))
        || (key == Some("usage") && matches!(strategy, None | Some("body")));
    if !tokens {
        return;
    }
    let reserve = config.pointer("/reserve/enabled").and_then(|v| v.as_bool()) != Some(false);
    let message = if reserve {
        "token quota: before the call an estimate is reserved (prompt bytes / \
         reserve.bytes_per_token + the request's max_tokens, or reserve.max_output_tokens, or a \
         fixed reserve.ceiling) and the request is refused with 429 if it does not fit; when the \
         answer ends the reservation is replaced by the real usage, and a failed or cancelled \
         call gives back what it did not use"
    } else {
        "token quota with reserve.enabled false: usage is counted after the call, as KrakenD \
         does, so the call that crosses the limit and every call in flight with it go through"
    };
    out.push(Lint {
        path: format!("{at}[\"governance/quota\"]"),
        message: message.to_owned(),
        note: reserve,
    });
}

/// Masking that cannot follow a stream answers event streams with 502.
fn stream_refusal_lint(
    extra: &serde_json::Map<String, serde_json::Value>,
    at: &str,
    out: &mut Vec<Lint>,
) {
    let Some(config) = extra.get("modifier/response-body") else {
        return;
    };
    if let Ok(masker) = switchboard_response_masker::ResponseMasker::try_from_config(config)
        && let Some(reason) = masker.stream_refusal()
    {
        out.push(Lint {
            path: format!("{at}[\"modifier/response-body\"]"),
            message: format!(
                "event streams (\"stream\": true) through here will answer 502: {reason}"
            ),
            note: false,
        });
    }
}

fn root_has_self_host(root: &RootConfig) -> bool {
    root.host
        .iter()
        .any(|h| h.contains("localhost") || h.contains("127.0.0.1") || h.contains("0.0.0.0"))
}

/// Endpoints by number of path segments (only those can match a probe),
/// and every (path, method) declared: lookups instead of scans, so that
/// checking a config stays linear in its endpoints for ordinary configs.
struct EndpointIndex<'a> {
    by_segments: HashMap<usize, Vec<usize>>,
    routes: HashSet<(&'a str, String)>,
}

impl<'a> EndpointIndex<'a> {
    fn new(root: &'a RootConfig) -> Self {
        let mut by_segments: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut routes = HashSet::new();
        for (i, endpoint) in root.endpoints.iter().enumerate() {
            by_segments
                .entry(endpoint.endpoint.split('/').count())
                .or_default()
                .push(i);
            routes.insert((
                endpoint.endpoint.as_str(),
                endpoint.method.to_ascii_uppercase(),
            ));
        }
        Self {
            by_segments,
            routes,
        }
    }

    fn candidates(&self, probe: &str) -> &[usize] {
        self.by_segments
            .get(&probe.split('/').count())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Warns where one client request can make more gateway-internal calls
/// than `max` (backends that call endpoints that call the gateway again
/// multiply): the calls past the limit answer 508.
pub(crate) fn fanout_lints(root: &RootConfig, max: usize, max_depth: usize) -> Vec<Lint> {
    if !root_has_self_host(root) {
        return Vec::new();
    }
    let index = EndpointIndex::new(root);
    // For each endpoint, for each internal backend, the endpoints it may reach.
    let reach: Vec<Vec<Vec<usize>>> = root
        .endpoints
        .iter()
        .map(|endpoint| {
            endpoint
                .backend
                .iter()
                .filter(|b| b.host.is_empty())
                .filter_map(|b| UrlPattern::parse(&b.url_pattern).ok())
                .map(|pattern| {
                    let probe = pattern.path_with("\u{0}");
                    index
                        .candidates(&probe)
                        .iter()
                        .copied()
                        .filter(|&k| may_reach(&probe, &root.endpoints[k].endpoint))
                        .collect()
                })
                .collect()
        })
        .collect();
    // calls[d][e]: the most internal calls endpoint e makes when reached
    // at depth d (the depth limit ends every chain).
    let n = root.endpoints.len();
    let mut below = vec![0usize; n];
    for _depth in 0..max_depth {
        let mut here = vec![0usize; n];
        for (e, backends) in reach.iter().enumerate() {
            here[e] = backends.iter().fold(0usize, |sum, targets| {
                let worst = targets.iter().map(|&t| below[t]).max().unwrap_or(0);
                sum.saturating_add(worst.saturating_add(1))
            });
        }
        below = here;
    }
    below
        .iter()
        .enumerate()
        .filter(|&(_, &calls)| calls > max)
        .map(|(e, &calls)| Lint {
            path: format!("$.endpoints[{e}]"),
            message: format!(
                "one request here can make up to {calls} calls to the gateway's own endpoints, \
                 more than router.max_internal_calls ({max}); the calls past it answer 508"
            ),
            note: false,
        })
        .collect()
}

/// Finds the lints of a config; `warnings` from the build come first.
/// Notes on the KrakenD root fields that load but change nothing here, so
/// that an operator bringing a KrakenD config knows which knobs are inert.
fn inert_root_fields(root: &RootConfig) -> Vec<Lint> {
    let inert = [
        (
            root.expect_continue_timeout.is_some(),
            "expect_continue_timeout",
            "has no effect: the upstream client never sends `Expect: 100-continue` of its own",
        ),
        (
            root.dns_cache_ttl.is_some(),
            "dns_cache_ttl",
            "has no effect: names are resolved on every new upstream connection",
        ),
        (
            root.sequential_start,
            "sequential_start",
            "has no effect: every endpoint is built before the listener opens",
        ),
    ];
    inert
        .into_iter()
        .filter(|(set, _, _)| *set)
        .map(|(_, field, message)| Lint {
            path: format!("$.{field}"),
            message: message.to_owned(),
            note: true,
        })
        .collect()
}

pub(crate) fn lints(root: &RootConfig, warnings: &[String]) -> Vec<Lint> {
    let mut out: Vec<Lint> = warnings
        .iter()
        .map(|w| match w.split_once(": ") {
            Some((path, message)) => Lint {
                path: path.to_owned(),
                message: message.to_owned(),
                note: false,
            },
            None => Lint {
                path: "$".to_owned(),
                message: w.clone(),
                note: false,
            },
        })
        .collect();
    out.extend(inert_root_fields(root));
    let root_has_self_host = root_has_self_host(root);
    let index = EndpointIndex::new(root);
    for (i, endpoint) in root.endpoints.iter().enumerate() {
        let at = format!("$.endpoints[{i}]");
        let guarded_text = ["security/policies", "validation/cel"]
            .iter()
            .filter_map(|ns| endpoint.extra_config.get(*ns))
            .map(|v| v.to_string().to_ascii_lowercase())
            .collect::<String>();
        let mut reaches_vendor = calls_vendor(endpoint);
        quota_lint(
            &endpoint.extra_config,
            &format!("{at}.extra_config"),
            &mut out,
        );
        for (j, backend) in endpoint.backend.iter().enumerate() {
            quota_lint(
                &backend.extra_config,
                &format!("{at}.backend[{j}].extra_config"),
                &mut out,
            );
        }
        stream_refusal_lint(
            &endpoint.extra_config,
            &format!("{at}.extra_config"),
            &mut out,
        );
        for (j, backend) in endpoint.backend.iter().enumerate() {
            let bat = format!("{at}.backend[{j}]");
            stream_refusal_lint(
                &backend.extra_config,
                &format!("{bat}.extra_config"),
                &mut out,
            );
            let Ok(pattern) = UrlPattern::parse(&backend.url_pattern) else {
                continue;
            };
            for source in pattern.sources() {
                if let Source::Header(name) = source
                    && !guarded_text.contains(name.as_str())
                {
                    out.push(Lint {
                        path: format!("{bat}.url_pattern"),
                        message: format!(
                            "routes on the client header {name:?} but no policy of this \
                             endpoint checks it; add a security/policies req policy that \
                             allows only known values"
                        ),
                        note: false,
                    });
                }
            }
            let internal = backend.host.is_empty() && root_has_self_host;
            if !internal {
                continue;
            }
            let method = backend
                .method
                .clone()
                .unwrap_or_else(|| endpoint.method.clone())
                .to_ascii_uppercase();
            let probe = pattern.path_with("\u{0}");
            let caller_guards: Vec<&str> = GUARDS
                .iter()
                .copied()
                .filter(|ns| endpoint.extra_config.contains_key(*ns))
                .collect();
            for &k in index.candidates(&probe) {
                let target = &root.endpoints[k];
                if !may_reach(&probe, &target.endpoint) {
                    continue;
                }
                if calls_vendor(target) {
                    reaches_vendor = true;
                }
                let target_guarded = GUARDS
                    .iter()
                    .any(|ns| target.extra_config.contains_key(*ns));
                if !caller_guards.is_empty() && !target_guarded && k != i {
                    out.push(Lint {
                        path: format!("$.endpoints[{k}]"),
                        message: format!(
                            "{} is reached through {} (guarded by {}) but can also be called \
                             directly, skipping those checks; guard it as well",
                            target.endpoint,
                            endpoint.endpoint,
                            caller_guards.join(", ")
                        ),
                        note: false,
                    });
                }
                let target_method = target.method.to_ascii_uppercase();
                let same_path_other_method = index
                    .routes
                    .contains(&(target.endpoint.as_str(), method.clone()));
                if target_method != method && !same_path_other_method {
                    out.push(Lint {
                        path: bat.clone(),
                        message: format!(
                            "calls {} with {method} (the {}) but that endpoint accepts \
                             {target_method} only, so these calls answer 405; set \"method\" \
                             on both endpoints to the same value (an LLM call is usually POST)",
                            target.endpoint,
                            if backend.method.is_some() {
                                "backend's method"
                            } else if endpoint.method.eq_ignore_ascii_case("GET") {
                                "endpoint's method, GET by default"
                            } else {
                                "endpoint's method"
                            }
                        ),
                        note: false,
                    });
                }
            }
        }
        if reaches_vendor && endpoint.timeout.is_none() && root.timeout.is_none() {
            out.push(Lint {
                path: format!("{at}.timeout"),
                message: "calls an LLM vendor with the 2s default timeout; LLM answers often \
                          take longer (set e.g. \"timeout\": \"60s\")"
                    .to_owned(),
                note: false,
            });
        }
    }
    out
}
