//! Compiled policy sets and the denial each answers.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use switchboard_core::{ConfigError, ErrorResponse, KrakendError};

use crate::config::PolicySetConfig;
use crate::engine::{Activation, Compiled, Engine, Verdict};
use crate::vars::VarSet;

/// One compiled policy, named by where it sits in the config.
#[derive(Debug)]
struct Policy {
    label: String,
    compiled: Compiled,
    /// Its index in a `validation/cel` list: KrakenD names a failed check
    /// `evaluator #N`.
    evaluator: Option<usize>,
}

/// A compiled set (`req`, `resp`, `jwt` or the checks of `validation/cel`).
#[derive(Debug)]
pub(crate) struct PolicySet {
    policies: Vec<Policy>,
    sources: Vec<String>,
    vars: VarSet,
    denial: Denial,
}

/// How a denial answers.
#[derive(Clone, Debug)]
struct Denial {
    status: StatusCode,
    custom_body: Option<(Bytes, HeaderValue)>,
}

/// One policy source and its config path, e.g. `req.policies[1]`.
pub(crate) struct Source<'a> {
    pub(crate) path: String,
    pub(crate) text: &'a str,
    /// The index in a `validation/cel` list.
    pub(crate) evaluator: Option<usize>,
}

impl PolicySet {
    /// Compiles `sources`; with `auto_join` they become one program joined
    /// with `&&` (each is still compiled alone first, so an error names its
    /// own path). `set_path` names the set (`req`, `jwt`, ...) in errors and
    /// denials.
    pub(crate) fn compile(
        engine: &Engine,
        set_path: &str,
        sources: &[Source<'_>],
        auto_join: bool,
        error: Option<&crate::config::PolicyErrorConfig>,
        default_status: StatusCode,
    ) -> Result<Self, ConfigError> {
        let mut policies = Vec::with_capacity(sources.len());
        // Every expression is compiled: each mistake is reported.
        let mut errors = Vec::new();
        for source in sources {
            match engine.compile(source.text) {
                Ok(compiled) => policies.push(Policy {
                    label: source.path.clone(),
                    compiled,
                    evaluator: source.evaluator,
                }),
                Err(message) => errors.push(ConfigError::new(
                    source.path.clone(),
                    format!("invalid CEL expression: {message}"),
                )),
            }
        }
        if let Some(error) = ConfigError::from_errors(errors) {
            return Err(error);
        }
        if auto_join && policies.len() > 1 {
            let joined = sources
                .iter()
                .map(|s| format!("({})", s.text))
                .collect::<Vec<_>>()
                .join(" && ");
            let compiled = engine.compile(&joined).map_err(|message| {
                ConfigError::new(
                    set_path,
                    format!("invalid joined CEL expression: {message}"),
                )
            })?;
            policies = vec![Policy {
                label: set_path.to_owned(),
                compiled,
                evaluator: None,
            }];
        }
        let vars = policies
            .iter()
            .fold(VarSet::default(), |acc, p| acc.union(p.compiled.vars()));
        let denial = Denial::from_config(set_path, error, default_status)?;
        Ok(Self {
            policies,
            sources: sources.iter().map(|s| s.text.to_owned()).collect(),
            vars,
            denial,
        })
    }

    /// Compiles one `req`/`resp`/`jwt` entry of `security/policies`.
    pub(crate) fn from_config(
        engine: &Engine,
        name: &str,
        config: &PolicySetConfig,
        auto_join: bool,
        default_status: StatusCode,
    ) -> Result<Option<Self>, ConfigError> {
        if config.policies.is_empty() {
            return Ok(None);
        }
        let sources: Vec<Source<'_>> = config
            .policies
            .iter()
            .enumerate()
            .map(|(i, text)| Source {
                path: format!("{name}.policies[{i}]"),
                text,
                evaluator: None,
            })
            .collect();
        Self::compile(
            engine,
            name,
            &sources,
            auto_join,
            Some(&config.error),
            default_status,
        )
        .map(Some)
    }

    /// The variables the set reads.
    pub(crate) fn vars(&self) -> VarSet {
        self.vars
    }

    /// The policy sources as written.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(String::as_str)
    }

    /// Evaluates every policy in order; the first that does not allow
    /// denies, and its denial is returned.
    pub(crate) fn evaluate(&self, activation: &Activation, debug: bool) -> Option<ErrorResponse> {
        for policy in &self.policies {
            match policy.compiled.evaluate(activation) {
                Verdict::Allow => {
                    if debug {
                        tracing::debug!(policy = %policy.label, "policy allowed");
                    }
                }
                Verdict::Deny(reason) => {
                    tracing::debug!(policy = %policy.label, %reason, "policy denied");
                    let denial = self.deny(&policy.label);
                    return Some(match policy.evaluator {
                        Some(n) if self.denial.custom_body.is_none() => denial.with_krakend(
                            KrakendError::Message(format!("request aborted by evaluator #{n}")),
                        ),
                        _ => denial,
                    });
                }
            }
        }
        None
    }

    /// The denial, naming the policy that failed (or the reason the set
    /// could not be evaluated).
    pub(crate) fn deny(&self, label: &str) -> ErrorResponse {
        let error = ErrorResponse::new(
            self.denial.status,
            "policy_error",
            format!("request denied by policy {label}"),
        )
        .with_code("policy_denied")
        .no_retry();
        match &self.denial.custom_body {
            Some((body, content_type)) => error.with_body(body.clone(), content_type.clone()),
            None => error,
        }
    }
}

impl Denial {
    fn from_config(
        set_path: &str,
        error: Option<&crate::config::PolicyErrorConfig>,
        default_status: StatusCode,
    ) -> Result<Self, ConfigError> {
        let Some(error) = error else {
            return Ok(Self {
                status: default_status,
                custom_body: None,
            });
        };
        let status = match error.status {
            None => default_status,
            Some(code) => StatusCode::from_u16(code)
                .ok()
                .filter(|s| (400..=599).contains(&s.as_u16()))
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{set_path}.error.status"),
                        format!("{code} is not an error status (400-599)"),
                    )
                })?,
        };
        // A content type alone keeps the JSON error: it describes a body.
        let custom_body = match &error.body {
            None => None,
            Some(body) => {
                let content_type = error
                    .content_type
                    .as_deref()
                    .unwrap_or("text/plain; charset=utf-8");
                let content_type = HeaderValue::from_str(content_type).map_err(|_| {
                    ConfigError::new(
                        format!("{set_path}.error.content_type"),
                        format!("{content_type:?} is not a valid header value"),
                    )
                })?;
                Some((Bytes::from(body.clone()), content_type))
            }
        };
        Ok(Self {
            status,
            custom_body,
        })
    }
}
