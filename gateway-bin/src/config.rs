//! The KrakenD version 3 config: loading, environment substitution and the
//! root, endpoint and backend fields.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::ConfigError;
use switchboard_core::config::{key_segment, parse_duration, strip_comments};

/// The largest config file read: 64 MiB.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// KrakenD's default endpoint timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Go-style duration string (`"2s"`, `"1500ms"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// How a backend's or an endpoint's body is read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    /// Parsed as JSON and re-emitted (KrakenD's default).
    #[serde(rename = "json")]
    Json,
    /// Backend: any JSON document; an array as `{"collection": [...]}`,
    /// a scalar as `{"content": value}`.
    #[serde(rename = "safejson")]
    SafeJson,
    /// Backend: an XML document read into JSON. Endpoint: written as XML.
    #[serde(rename = "xml")]
    Xml,
    /// Backend only: an RSS or Atom feed read into JSON.
    #[serde(rename = "rss")]
    Rss,
    /// Endpoint only: JSON, YAML or XML as the client's `Accept` asks.
    #[serde(rename = "negotiate")]
    Negotiate,
    /// Backend: a JSON array, wrapped as `{"collection": [...]}`.
    /// Endpoint: the `collection` array answered bare.
    #[serde(rename = "json-collection")]
    JsonCollection,
    /// Backend: any body wrapped as `{"content": "..."}`. Endpoint: the
    /// answer's `content` string written as plain text.
    #[serde(rename = "string")]
    String,
    /// Passed through untouched and streamed.
    #[serde(rename = "no-op")]
    NoOp,
    /// Endpoint: an `ai/llm` answer streamed as it arrives (KrakenD 3.0).
    #[serde(rename = "streaming")]
    Streaming,
}

/// The root of the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    /// Must be 3.
    pub version: u32,
    /// A name, shown in the startup log.
    #[serde(default)]
    pub name: Option<String>,
    /// Default backend hosts.
    #[serde(default)]
    pub host: Vec<String>,
    /// The listening port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The listening address.
    #[serde(default)]
    pub listen_ip: Option<String>,
    /// Default endpoint timeout.
    #[serde(default)]
    pub timeout: Option<GoDuration>,
    /// Accepted for compatibility: Switchboard does not cache responses.
    #[serde(default)]
    pub cache_ttl: Option<GoDuration>,
    /// Default output encoding.
    #[serde(default)]
    pub output_encoding: Option<Encoding>,
    /// Mounts `/__echo/`.
    #[serde(default)]
    pub echo_endpoint: bool,
    /// Accepted for compatibility; answers like the echo endpoint under `/__debug/`.
    #[serde(default)]
    pub debug_endpoint: bool,
    /// How long a client may take to send a request's headers (and, on
    /// HTTP/1.1, how long a keep-alive connection may sit idle).
    #[serde(default)]
    pub read_header_timeout: Option<GoDuration>,
    /// The longest pause between two chunks of a request body.
    #[serde(default)]
    pub read_timeout: Option<GoDuration>,
    /// Accepted for compatibility: responses are bounded per endpoint.
    #[serde(default)]
    pub write_timeout: Option<GoDuration>,
    /// How long an idle HTTP/1.1 keep-alive connection is kept.
    #[serde(default)]
    pub idle_timeout: Option<GoDuration>,
    /// The most header bytes a request may send.
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Root namespaces.
    #[serde(default)]
    pub extra_config: Map<String, Value>,
    /// Accepted for compatibility; has no effect.
    #[serde(default)]
    pub disable_rest: bool,
    /// How many idle connections to one upstream host the pool keeps
    /// (default 1024).
    #[serde(default)]
    pub max_idle_connections_per_host: Option<usize>,
    /// How long an idle upstream connection is kept (default 90s).
    #[serde(default)]
    pub idle_connection_timeout: Option<GoDuration>,
    /// How many idle upstream connections the pool keeps in all; the pool
    /// counts per host, so this caps `max_idle_connections_per_host`.
    #[serde(default)]
    pub max_idle_connections: Option<usize>,
    /// How long connecting to an upstream may take (default 10s).
    #[serde(default)]
    pub dialer_timeout: Option<GoDuration>,
    /// The TCP keep-alive interval of upstream connections (default: the
    /// system's).
    #[serde(default)]
    pub dialer_keep_alive: Option<GoDuration>,
    /// How long an IPv6 connection attempt runs before IPv4 is tried too
    /// (happy eyeballs; default 300ms).
    #[serde(default)]
    pub dialer_fallback_delay: Option<GoDuration>,
    /// A new upstream connection for every request: none is kept idle.
    #[serde(default)]
    pub disable_keep_alives: bool,
    /// How long an upstream may take to send its response headers once the
    /// request is written (unbounded but for the endpoint timeout unless
    /// set).
    #[serde(default)]
    pub response_header_timeout: Option<GoDuration>,
    /// Accepted for compatibility: the upstream client never sends
    /// `Expect: 100-continue` of its own.
    #[serde(default)]
    pub expect_continue_timeout: Option<GoDuration>,
    /// Upstream calls do not ask for `gzip` (`Accept-Encoding` is passed
    /// on only when the client sent it).
    #[serde(default)]
    pub disable_compression: bool,
    /// Accepted for compatibility: names are resolved by the system on
    /// every new upstream connection; nothing is cached.
    #[serde(default)]
    pub dns_cache_ttl: Option<GoDuration>,
    /// Upstream calls speak HTTP/2 only: h2c on `http://`, h2 on
    /// `https://` (the listener serves h2c either way).
    #[serde(default)]
    pub use_h2c: bool,
    /// How long a graceful shutdown waits for requests in flight, when
    /// `router.shutdown_timeout` does not say.
    #[serde(default)]
    pub max_shutdown_wait_time: Option<GoDuration>,
    /// Accepted for compatibility: every endpoint is built before the
    /// listener opens.
    #[serde(default)]
    pub sequential_start: bool,
    /// The values substituted from the environment: secrets to scrub from
    /// anything returned or logged.
    #[serde(skip)]
    pub env_secrets: switchboard_core::secrets::Secrets,
    /// Fields that had a mistake (already reported) and hold their default:
    /// checks that depend on them are skipped.
    #[serde(skip)]
    pub(crate) invalid: Invalid,
}

fn default_port() -> u16 {
    8080
}

/// One endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The path, with `{param}` segments.
    pub endpoint: String,
    /// The method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// The backends.
    #[serde(default)]
    pub backend: Vec<BackendConfig>,
    /// Client headers forwarded to backends.
    #[serde(default)]
    pub input_headers: Vec<String>,
    /// Client query strings forwarded to backends.
    #[serde(default)]
    pub input_query_strings: Vec<String>,
    /// How the response is written.
    #[serde(default)]
    pub output_encoding: Option<Encoding>,
    /// How long the backends may take.
    #[serde(default)]
    pub timeout: Option<GoDuration>,
    /// Accepted for compatibility: Switchboard does not cache responses.
    #[serde(default)]
    pub cache_ttl: Option<GoDuration>,
    /// Accepted for compatibility; backends are called once.
    #[serde(default)]
    pub concurrent_calls: Option<u32>,
    /// Endpoint namespaces.
    #[serde(default)]
    pub extra_config: Map<String, Value>,
    /// Fields that had a mistake (already reported).
    #[serde(skip)]
    pub(crate) invalid: Invalid,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// One backend of an endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Hosts, called round-robin.
    #[serde(default)]
    pub host: Vec<String>,
    /// The path (and optional query) to call, with placeholders.
    pub url_pattern: String,
    /// The method (default the endpoint's).
    #[serde(default)]
    pub method: Option<String>,
    /// How the response body is read.
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Nests the response under this key when merging.
    #[serde(default)]
    pub group: Option<String>,
    /// The backend answers an array: wrap it as `{"collection": [...]}`.
    #[serde(default)]
    pub is_collection: bool,
    /// Keeps only this object of the response (dot path).
    #[serde(default)]
    pub target: Option<String>,
    /// Keeps only these fields (dot paths).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Removes these fields (dot paths).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Renames top-level fields.
    #[serde(default)]
    pub mapping: Map<String, Value>,
    /// Only `static` discovery is supported.
    #[serde(default)]
    pub sd: Option<String>,
    /// Accepted for compatibility.
    #[serde(default)]
    pub disable_host_sanitize: bool,
    /// How long this backend may take (bounded by the endpoint's timeout).
    #[serde(default)]
    pub timeout: Option<GoDuration>,
    /// Backend namespaces.
    #[serde(default)]
    pub extra_config: Map<String, Value>,
    /// Fields that had a mistake (already reported).
    #[serde(skip)]
    pub(crate) invalid: Invalid,
}

/// The fields of a config object that had a mistake: the mistake is
/// reported once, the field holds its default, and the checks that depend
/// on it are skipped (a host of the wrong type is not also "no host").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalid(std::collections::BTreeSet<String>);

impl Invalid {
    /// Whether `field` had a mistake.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains(field)
    }

    /// Whether any field had one.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }
}

/// A loaded config: the parsed root and the file's directory (relative
/// template and key paths resolve against it).
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The parsed root.
    pub root: RootConfig,
    /// The directory that relative paths in the config resolve against.
    pub base_dir: PathBuf,
}

impl LoadedConfig {
    /// Listens on `port` instead of the configured one. Root hosts that
    /// pointed at the gateway itself follow, so self-calls keep working.
    pub fn override_port(&mut self, port: u16) {
        let old = self.root.port;
        for host in &mut self.root.host {
            for prefix in ["localhost", "127.0.0.1", "0.0.0.0", "[::1]"] {
                for scheme in ["", "http://"] {
                    if *host == format!("{scheme}{prefix}:{old}") {
                        *host = format!("{scheme}{prefix}:{port}");
                    }
                }
            }
        }
        self.root.port = port;
    }
}

/// Reads and parses a config file; any mistake fails it.
pub fn load_file(path: &Path) -> Result<LoadedConfig, Vec<ConfigError>> {
    match load_file_lenient(path) {
        (Some(loaded), errors) if errors.is_empty() => Ok(loaded),
        (_, errors) => Err(errors),
    }
}

/// Reads and parses a config file, reporting every mistake it finds. The
/// config is returned too when it could be read at all (fields with a
/// mistake hold their defaults), so that `check` can build it and report
/// the mistakes of the later stages in the same run.
pub fn load_file_lenient(path: &Path) -> (Option<LoadedConfig>, Vec<ConfigError>) {
    let text = match switchboard_core::config::read_text_bounded(path, MAX_CONFIG_BYTES) {
        Ok(text) => text,
        Err(message) => return (None, vec![ConfigError::new("$", message)]),
    };
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let (root, errors) = parse_str_lenient(&text, &|name| std::env::var(name).ok());
    (root.map(|root| LoadedConfig { root, base_dir }), errors)
}

/// Parses config text, with `{{ env "NAME" }}` looked up through `env`;
/// any mistake fails it.
///
/// As in KrakenD's flexible config, the template is replaced before the
/// JSON is parsed, so it may stand inside a string (`"Bearer {{ env
/// "KEY" }}"`, value JSON-escaped) or outside one (`"port": {{ env "PORT"
/// }}`, value inserted as it is).
pub fn parse_str(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RootConfig, Vec<ConfigError>> {
    match parse_str_lenient(text, env) {
        (Some(root), errors) if errors.is_empty() => Ok(root),
        (_, errors) => Err(errors),
    }
}

/// As [`parse_str`], reporting every mistake of the file: the config is
/// returned with them when the text is JSON of version 3 (fields with a
/// mistake hold their defaults and are marked, see [`Invalid`]).
pub fn parse_str_lenient(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<RootConfig>, Vec<ConfigError>) {
    let (substituted, mut errors, substituted_values) = substitute_env(text, env);
    let mut value: Value = match serde_json::from_str(&substituted) {
        Ok(value) => value,
        Err(err) => {
            errors.push(ConfigError::new("$", format!("invalid JSON: {err}")));
            return (None, errors);
        }
    };
    // A variable unset outside a string became `null`: what it stood for
    // is unknown, so nothing more is checked.
    if !errors.is_empty() {
        return (None, errors);
    }
    // Comments may mention variables that are not set.
    strip_comments(&mut value);
    let mut unset = Vec::new();
    report_unset(&value, "$", &mut unset);
    if !value.is_object() {
        errors.push(ConfigError::new(
            "$",
            "the config must be a JSON object with \"version\": 3",
        ));
        return (None, errors);
    }
    match value.get("version") {
        Some(version) if version == &Value::from(3) => {}
        Some(version) => {
            // Another format: its fields would all read as mistakes.
            errors.push(ConfigError::new(
                "$.version",
                format!(
                    "unsupported version {version}: Switchboard reads KrakenD's version 3 format"
                ),
            ));
            return (None, errors);
        }
        None => errors.push(ConfigError::new("$.version", "missing: set \"version\": 3")),
    }
    let Value::Object(mut object) = value else {
        return (None, errors);
    };
    object.insert("version".to_owned(), Value::from(3));
    let endpoints = match object.get("endpoints") {
        Some(Value::Array(_)) => object.shift_remove("endpoints"),
        _ => None,
    };
    let Some(mut root) = lenient::<RootConfig>(Value::Object(object), "$", &[], &mut errors) else {
        return (None, errors);
    };
    if let Some(Value::Array(items)) = endpoints {
        for (i, item) in items.into_iter().enumerate() {
            root.endpoints.push(endpoint_lenient(
                item,
                &format!("$.endpoints[{i}]"),
                &mut errors,
            ));
        }
    }
    root.env_secrets = switchboard_core::secrets::Secrets::new(substituted_values);
    // A field with an unset variable has that one mistake, not also those
    // its placeholder text causes.
    let unset_paths: Vec<String> = unset.iter().map(|e| e.path.clone()).collect();
    errors.retain(|e| {
        !unset_paths.iter().any(|p| {
            e.path == *p
                || e.path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    });
    errors.extend(unset);
    (Some(root), errors)
}

/// One endpoint: its own fields, then each backend on its own, so that a
/// mistake in one hides nothing in the others.
fn endpoint_lenient(item: Value, at: &str, errors: &mut Vec<ConfigError>) -> EndpointConfig {
    let mut item = item;
    let backends = match &mut item {
        Value::Object(object) if matches!(object.get("backend"), Some(Value::Array(_))) => {
            object.shift_remove("backend")
        }
        _ => None,
    };
    let required = [("endpoint", Value::String(String::new()))];
    let mut endpoint = match item {
        Value::Object(_) => lenient::<EndpointConfig>(item, at, &required, errors),
        other => {
            errors.push(ConfigError::new(
                at,
                format!("an endpoint must be an object, not {}", kind_of(&other)),
            ));
            None
        }
    }
    .unwrap_or_else(|| {
        // Keeps the indexes of the endpoints after it.
        let mut placeholder = EndpointConfig::default();
        placeholder.invalid.0.insert("*".to_owned());
        placeholder
    });
    if let Some(Value::Array(items)) = backends {
        for (j, item) in items.into_iter().enumerate() {
            let bat = format!("{at}.backend[{j}]");
            let required = [("url_pattern", Value::String(String::new()))];
            let backend = match item {
                Value::Object(_) => lenient::<BackendConfig>(item, &bat, &required, errors),
                other => {
                    errors.push(ConfigError::new(
                        &bat,
                        format!("a backend must be an object, not {}", kind_of(&other)),
                    ));
                    None
                }
            };
            let backend = backend.unwrap_or_else(|| {
                let mut placeholder = BackendConfig::default();
                placeholder.invalid.0.insert("*".to_owned());
                placeholder
            });
            endpoint.backend.push(backend);
        }
    }
    endpoint
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The config objects that record their fields with a mistake.
trait HasInvalid {
    fn invalid_mut(&mut self) -> &mut Invalid;
}

impl HasInvalid for RootConfig {
    fn invalid_mut(&mut self) -> &mut Invalid {
        &mut self.invalid
    }
}

impl HasInvalid for EndpointConfig {
    fn invalid_mut(&mut self) -> &mut Invalid {
        &mut self.invalid
    }
}

impl HasInvalid for BackendConfig {
    fn invalid_mut(&mut self) -> &mut Invalid {
        &mut self.invalid
    }
}

/// Reads one config object, reporting every mistake (at `at`) and keeping
/// going: each field with a mistake is dropped (so it holds its default)
/// and marked; a required one gets its stand-in from `required`.
fn lenient<T: serde::de::DeserializeOwned + HasInvalid>(
    value: Value,
    at: &str,
    required: &[(&str, Value)],
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let found = match switchboard_core::config::from_value_all::<T>(&value) {
        Ok(parsed) => return Some(parsed),
        Err(found) => found,
    };
    let mut invalid = std::collections::BTreeSet::new();
    for error in found {
        if let Some(field) = first_field(&error.path) {
            invalid.insert(field);
        }
        errors.push(friendlier(error).at(at));
    }
    let Value::Object(mut object) = value else {
        return None;
    };
    object.retain(|key, _| !invalid.contains(key));
    for (name, stand_in) in required {
        if !object.contains_key(*name) {
            object.insert((*name).to_owned(), stand_in.clone());
            invalid.insert((*name).to_owned());
        }
    }
    let mut parsed: T = switchboard_core::config::from_value(&Value::Object(object)).ok()?;
    parsed.invalid_mut().0.extend(invalid);
    Some(parsed)
}

/// The field a relative path starts with (`host` of `host[1]`,
/// `extra_config` of `extra_config["a/b"]`).
fn first_field(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix('[') {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        return stream.next()?.ok();
    }
    let end = path.find(['.', '[']).unwrap_or(path.len());
    (end > 0).then(|| path[..end].to_owned())
}

/// KrakenD CE fields that Switchboard refuses, named as such instead of as
/// an unknown field.
const NOT_SERVED: [&str; 3] = ["sd_scheme", "input_headers", "input_query_strings"];

/// Names fields that KrakenD has and Switchboard does not serve, instead of
/// a bare "unknown field".
fn friendlier(mut err: ConfigError) -> ConfigError {
    if err.message.starts_with("unknown field ")
        && let Some(field) = first_field(err.path.rsplit('.').next().unwrap_or_default())
    {
        let reason = match field.as_str() {
            "tls" | "client_tls" => Some(format!(
                "\"{field}\" is not supported: terminate TLS in front of Switchboard; \
                 upstream HTTPS is always on"
            )),
            "plugin" => Some("\"plugin\" is not supported: Go plugins cannot load here".to_owned()),
            "async_agent" => Some("\"async_agent\" is not supported".to_owned()),
            _ if NOT_SERVED.contains(&field.as_str()) => Some(format!(
                "KrakenD's \"{field}\" is not implemented by Switchboard; remove it \
                 (docs/configuration.md, KrakenD compatibility)"
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            err.message = reason;
        }
    }
    err
}

/// The variable name of a `{{ env "NAME" }}` template (quotes may be
/// JSON-escaped), or `None` for any other template.
fn env_name(template: &str) -> Option<&str> {
    let inner = template.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("env")?.trim();
    let name = name
        .strip_prefix("\\\"")
        .and_then(|n| n.strip_suffix("\\\""))
        .or_else(|| name.strip_prefix('"').and_then(|n| n.strip_suffix('"')))?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// Replaces every `{{ env "NAME" }}`. Inside a JSON string the value is
/// escaped; an unset variable there is kept (escaped) so that it can be
/// reported with its JSON path once the text parses.
fn substitute_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<ConfigError>, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut values = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{")
            && let Some(end) = rest.find("}}")
            && let Some(name) = env_name(&rest[..end + 2])
        {
            let found = env(name);
            if let Some(value) = &found {
                values.push(value.clone());
            }
            match (found, in_string) {
                (Some(value), true) => {
                    let quoted = Value::String(value).to_string();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                }
                (Some(value), false) => out.push_str(&value),
                (None, true) => {
                    let kept = Value::String(format!("{{{{ env \"{name}\" }}}}")).to_string();
                    out.push_str(&kept[1..kept.len() - 1]);
                }
                (None, false) => {
                    let line = text[..text.len() - rest.len()].lines().count().max(1);
                    errors.push(ConfigError::new(
                        "$",
                        format!("line {line}: environment variable {name} is not set"),
                    ));
                    out.push_str("null");
                }
            }
            rest = &rest[end + 2..];
            escaped = false;
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    (out, errors, values)
}

/// Names, with their JSON paths, the variables left unset inside strings.
fn report_unset(value: &Value, path: &str, errors: &mut Vec<ConfigError>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("{{") {
                let Some(end) = rest[start..].find("}}") else {
                    break;
                };
                if let Some(name) = env_name(&rest[start..start + end + 2]) {
                    errors.push(ConfigError::new(
                        path,
                        format!("environment variable {name} is not set"),
                    ));
                }
                rest = &rest[start + end + 2..];
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let child = switchboard_core::config::join_path(path, &key_segment(key));
                report_unset(item, &child, errors);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                report_unset(item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// Normalises a host: a host without a scheme gets `http://`; trailing
/// slashes go.
pub fn normalize_host(host: &str) -> Result<String, String> {
    let host = host.trim().trim_end_matches('/');
    let with_scheme = if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| format!("invalid host {host:?}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("host {host:?} must use http or https")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("host {host:?} has no authority"));
    };
    if authority.as_str().contains('@') {
        // Never sent, and a password in a URL ends up in logs.
        return Err(
            "a host must not carry user info (user:password@); send credentials with \
             modifier/martian from an environment variable"
                .to_owned(),
        );
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "host {host:?} must not carry a path; put it in url_pattern"
        ));
    }
    Ok(with_scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn env_substitution_in_strings_with_paths() {
        let text = r#"{"version":3,"endpoints":[{"endpoint":"/a","backend":[{"url_pattern":"/x?key={{ env "KEY" }}"}]}]}"#;
        let env = |name: &str| (name == "KEY").then(|| "s3cr\"et".to_owned());
        let root = parse_str(text, &env).unwrap();
        assert_eq!(root.endpoints[0].backend[0].url_pattern, "/x?key=s3cr\"et");
        let errors = parse_str(text, &no_env).unwrap_err();
        assert_eq!(errors[0].path, "$.endpoints[0].backend[0].url_pattern");
        assert!(errors[0].message.contains("KEY"));
    }

    #[test]
    fn env_substitution_with_escaped_quotes_and_no_injection() {
        let text = r#"{"version":3,"name":"{{ env \"A\" }}","endpoints":[]}"#;
        let env = |name: &str| match name {
            "A" => Some("{{ env \"B\" }}".to_owned()),
            "B" => Some("leaked".to_owned()),
            _ => None,
        };
        let root = parse_str(text, &env);
        // A value is never expanded again.
        let errors = root.unwrap_err();
        assert!(errors[0].message.contains('B'), "{errors:?}");
    }

    #[test]
    fn env_substitution_outside_strings() {
        let text = r#"{"version":3,"port": {{ env "PORT" }} }"#;
        let env = |name: &str| (name == "PORT").then(|| "9999".to_owned());
        assert_eq!(parse_str(text, &env).unwrap().port, 9999);
    }

    #[test]
    fn errors_carry_json_paths() {
        let text =
            r#"{"version":3,"endpoints":[{"endpoint":"/a","timeout":"2 parsecs","backend":[]}]}"#;
        let errors = parse_str(text, &no_env).unwrap_err();
        assert_eq!(errors[0].path, "$.endpoints[0].timeout");
        let text = r#"{"version":2}"#;
        assert_eq!(parse_str(text, &no_env).unwrap_err()[0].path, "$.version");
        let text = r#"{"version":3,"tls":{}}"#;
        let err = &parse_str(text, &no_env).unwrap_err()[0];
        assert!(err.message.contains("not supported"), "{err}");
        let text = r#"{"version":3,"input_query_strings":["a"],"endpoints":[{"endpoint":"/a",
          "backend":[{"url_pattern":"/","host":["h"],"sd_scheme":"http"}]}]}"#;
        let errors = parse_str(text, &no_env).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .message
                .starts_with("KrakenD's \"input_query_strings\""),
            "{errors:?}"
        );
        assert_eq!(errors[1].path, "$.endpoints[0].backend[0].sd_scheme");
    }

    #[test]
    fn every_mistake_is_reported_and_the_rest_still_reads() {
        let text = r#"{"version":3,"port":"80","timeout":"soon","hosts":["x"],
          "endpoints":[
            "not an endpoint",
            {"endpoint":"/a","method":7,"timeout":"1 year",
             "backend":[{"url_patern":"/x","host":"h"},{"url_pattern":"/y","encoding":"jsno"}]},
            {"endpoint":"/b","backend":[{"url_pattern":"/z"}]}
          ]}"#;
        let (root, errors) = parse_str_lenient(text, &no_env);
        let found: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            found,
            vec![
                "$.port",
                "$.timeout",
                "$.hosts",
                "$.endpoints[0]",
                "$.endpoints[1].method",
                "$.endpoints[1].timeout",
                "$.endpoints[1].backend[0].url_patern",
                "$.endpoints[1].backend[0].host",
                "$.endpoints[1].backend[1].encoding",
            ],
            "{errors:#?}"
        );
        assert!(
            errors[2].message.contains("did you mean \"host\"?"),
            "{}",
            errors[2]
        );
        let root = root.unwrap();
        // Indexes are kept; fields with a mistake are marked.
        assert_eq!(root.endpoints.len(), 3);
        assert!(root.endpoints[0].invalid.has("*"));
        assert_eq!(root.endpoints[2].endpoint, "/b");
        assert!(root.invalid.has("port") && !root.invalid.has("name"));
        let backend = &root.endpoints[1].backend[0];
        assert!(backend.invalid.has("host") && backend.invalid.has("url_pattern"));
        // The strict form refuses what the lenient one reports.
        assert_eq!(parse_str(text, &no_env).unwrap_err().len(), errors.len());
    }

    #[test]
    fn an_unset_variable_is_one_mistake() {
        let text = r#"{"version":3,"port":"{{ env "PORT" }}"}"#;
        let errors = parse_str(text, &no_env).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("PORT is not set"));
    }

    #[test]
    fn comments_are_ignored() {
        let text = r##"{"version":3,"$schema":"x","@comment":"y","endpoints":[{"endpoint":"/a","_note":1,"backend":[{"url_pattern":"/b","#c":2}]}]}"##;
        assert!(parse_str(text, &no_env).is_ok());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(
            normalize_host("https://api.openai.com/").unwrap(),
            "https://api.openai.com"
        );
        assert!(normalize_host("ftp://x").is_err());
        assert!(normalize_host("http://x/v1").is_err());
    }
}
