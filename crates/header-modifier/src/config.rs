//! Compiling a typed `modifier/martian` configuration into modifier
//! trees.
//!
//! serde reads the document into [`MartianConfig`] (unknown types and
//! fields, missing fields and wrong types are reported there, each on its
//! JSON path); this module checks what serde cannot (header names and
//! values, regexes, base64, URLs, scopes) on the same paths, and builds the
//! request and response trees. Neither step repeats a value in an error:
//! values are often credentials.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use regex::Regex;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::{from_value_all, join_path, key_segment};

use crate::modifier::{Condition, Modifiers, Node};
use crate::query::UrlParts;
use crate::spec::{
    BodyModifierConfig, FilterConfig, KINDS, MartianConfig, PriorityGroupConfig, Scope,
    UrlModifierConfig,
};

/// Headers that describe the connection or the body framing: the gateway
/// owns them, a modifier may not set them.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

/// Standard base64 as Go's `encoding/json` writes `[]byte`, with or
/// without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads and compiles the object found under `modifier/martian`.
pub(crate) fn compile(config: &Value) -> Result<Modifiers, ConfigError> {
    compile_typed(&read(config)?)
}

/// Reads the document into its typed form, every mistake on its path.
pub(crate) fn read(config: &Value) -> Result<MartianConfig, ConfigError> {
    from_value_all(config).map_err(|errors| {
        let errors = errors
            .into_iter()
            .map(|error| {
                let message = reword(&error.message);
                let path = match unknown_kind(&message) {
                    // The path names the object; the mistake is its key.
                    Some(kind) => join_path(&error.path, &key_segment(kind)),
                    None => error.path,
                };
                ConfigError::new(path, message)
            })
            .collect();
        ConfigError::from_errors(errors).unwrap_or_else(|| ConfigError::new("", "invalid"))
    })
}

/// Compiles a typed configuration.
pub(crate) fn compile_typed(config: &MartianConfig) -> Result<Modifiers, ConfigError> {
    let parsed = parse_modifier(config, "")?;
    Ok(Modifiers::new(parsed.request, parsed.response))
}

/// serde's messages in this namespace's terms, and never with a value in
/// them (serde quotes what it found).
fn reword(message: &str) -> String {
    let kinds = KINDS.join(", ");
    if message.contains("map with a single key") {
        return format!(
            "expected exactly one modifier such as {{\"header.Modifier\": {{...}}}} \
             (supported: {kinds}); wrap several in a fifo.Group"
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let found = rest.split([' ', ',']).next().unwrap_or("value");
        let found = match found {
            "integer" | "floating" => "a number",
            "string" => "a string",
            "boolean" => "a boolean",
            "map" => "an object",
            "sequence" => "an array",
            "null" => "null",
            "unit" => "a string",
            _ => "another type",
        };
        let expected = rest.rsplit(", expected ").next().unwrap_or("another type");
        let expected = if expected.starts_with("enum MartianConfig") || expected == "string or map"
        {
            "a modifier object such as {\"header.Modifier\": {...}}"
        } else if expected.starts_with("struct ") {
            "an object"
        } else {
            expected
        };
        return format!("expected {expected}, found {found}");
    }
    message.to_owned()
}

/// The modifier type an "unknown value" message names, when the value is
/// a modifier type (its suggestions are), not a scope.
fn unknown_kind(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown value \"")?;
    let kind = &rest[..rest.find('"')?];
    KINDS
        .iter()
        .any(|known| rest.contains(&format!("\"{known}\"")))
        .then_some(kind)
}

/// A modifier split by direction, as martian's `parse.Result` does.
struct Parsed {
    request: Option<Node>,
    response: Option<Node>,
}

impl Parsed {
    /// The same node in every direction its scope names.
    fn leaf(node: Node, scopes: Scopes) -> Self {
        Self {
            request: scopes.request.then(|| node.clone()),
            response: scopes.response.then_some(node),
        }
    }
}

#[derive(Clone, Copy)]
struct Scopes {
    request: bool,
    response: bool,
}

const BOTH: Scopes = Scopes {
    request: true,
    response: true,
};
const REQUEST_ONLY: Scopes = Scopes {
    request: true,
    response: false,
};

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message)
}

/// Paths inside one modifier object.
struct At {
    base: String,
}

impl At {
    fn field(&self, key: &str) -> String {
        join_path(&self.base, &key_segment(key))
    }
}

fn parse_modifier(config: &MartianConfig, path: &str) -> Result<Parsed, ConfigError> {
    let kind = config.kind();
    let at = At {
        base: join_path(path, &key_segment(kind)),
    };
    let supported = match config {
        MartianConfig::QueryModifier(_) | MartianConfig::UrlModifier(_) => REQUEST_ONLY,
        _ => BOTH,
    };
    let scopes = scopes(config.scope(), supported, kind, &at)?;
    match config {
        MartianConfig::HeaderModifier(c) | MartianConfig::HeaderAppend(c) => {
            let name = target_header(&c.name, &at.field("name"), false)?;
            let mut value = header_value(&c.value, &at.field("value"))?;
            // Injected values are often credentials: keep them out of
            // HTTP/2 header compression tables and Debug output.
            value.set_sensitive(true);
            let node = if matches!(config, MartianConfig::HeaderModifier(_)) {
                Node::SetHeader { name, value }
            } else {
                Node::AppendHeader { name, value }
            };
            Ok(Parsed::leaf(node, scopes))
        }
        MartianConfig::HeaderCopy(c) => {
            let from = header_name(&c.from, &at.field("from"))?;
            let to = target_header(&c.to, &at.field("to"), false)?;
            Ok(Parsed::leaf(Node::CopyHeader { from, to }, scopes))
        }
        MartianConfig::HeaderBlacklist(c) => {
            let names_path = at.field("names");
            let mut names = Vec::with_capacity(c.names.len());
            for (index, name) in c.names.iter().enumerate() {
                names.push(target_header(
                    name,
                    &format!("{names_path}[{index}]"),
                    true,
                )?);
            }
            Ok(Parsed::leaf(Node::RemoveHeaders(names), scopes))
        }
        MartianConfig::HeaderFilter(c) => {
            let condition = Condition::Header {
                name: header_name(&c.name, &at.field("name"))?,
                value: c.value.clone(),
            };
            filter(c, condition, scopes, &at)
        }
        MartianConfig::HeaderRegexFilter(c) => {
            let name = header_name(&c.header, &at.field("header"))?;
            let regex = Regex::new(&c.regex)
                .map_err(|e| err(&at.field("regex"), format!("invalid regex: {e}")))?;
            let then = parse_modifier(&c.modifier, &at.field("modifier"))?;
            Ok(conditional(
                Condition::HeaderRegex { name, regex },
                then,
                None,
                scopes,
            ))
        }
        MartianConfig::QueryModifier(c) => {
            let name = non_empty(&c.name, "name", &at)?.to_owned();
            Ok(Parsed::leaf(
                Node::SetQuery {
                    name,
                    value: c.value.clone(),
                },
                scopes,
            ))
        }
        MartianConfig::QueryFilter(c) => {
            let condition = Condition::Query {
                name: non_empty(&c.name, "name", &at)?.to_owned(),
                value: c.value.clone(),
            };
            filter(c, condition, scopes, &at)
        }
        MartianConfig::UrlModifier(c) => Ok(Parsed::leaf(Node::SetUrl(url_parts(c, &at)?), scopes)),
        MartianConfig::BodyModifier(c) => Ok(Parsed::leaf(body(c, &at)?, scopes)),
        MartianConfig::FifoGroup(c) => {
            let list_path = at.field("modifiers");
            let mut children = Vec::with_capacity(c.modifiers.len());
            for (index, item) in c.modifiers.iter().enumerate() {
                children.push(parse_modifier(item, &format!("{list_path}[{index}]"))?);
            }
            Ok(group(children, scopes))
        }
        MartianConfig::PriorityGroup(c) => priority_group(c, scopes, &at),
    }
}

fn priority_group(
    config: &PriorityGroupConfig,
    scopes: Scopes,
    at: &At,
) -> Result<Parsed, ConfigError> {
    let list_path = at.field("modifiers");
    let mut ordered: Vec<(i64, Parsed)> = Vec::with_capacity(config.modifiers.len());
    for (index, entry) in config.modifiers.iter().enumerate() {
        let entry_path = join_path(&format!("{list_path}[{index}]"), "modifier");
        let parsed = parse_modifier(&entry.modifier, &entry_path)?;
        // Higher priority runs first; on a tie the later entry runs
        // first (martian's insertion order).
        let position = ordered
            .iter()
            .position(|(existing, _)| entry.priority >= *existing)
            .unwrap_or(ordered.len());
        ordered.insert(position, (entry.priority, parsed));
    }
    Ok(group(ordered.into_iter().map(|(_, p)| p).collect(), scopes))
}

fn body(config: &BodyModifierConfig, at: &At) -> Result<Node, ConfigError> {
    let body = BASE64
        .decode(config.body.trim())
        .map_err(|e| err(&at.field("body"), format!("body is not valid base64: {e}")))?;
    let content_type = match config.content_type.as_deref() {
        None | Some("") => None,
        Some(text) => Some(HeaderValue::from_str(text).map_err(|_| {
            err(
                &at.field("contentType"),
                "invalid Content-Type header value",
            )
        })?),
    };
    Ok(Node::SetBody {
        body: Bytes::from(body),
        content_type,
    })
}

fn group(children: Vec<Parsed>, scopes: Scopes) -> Parsed {
    let mut request = Vec::new();
    let mut response = Vec::new();
    for child in children {
        request.extend(child.request);
        response.extend(child.response);
    }
    let wrap = |nodes: Vec<Node>, enabled: bool| {
        (enabled && !nodes.is_empty()).then(|| match <[Node; 1]>::try_from(nodes) {
            Ok([single]) => single,
            Err(nodes) => Node::Group(nodes),
        })
    };
    Parsed {
        request: wrap(request, scopes.request),
        response: wrap(response, scopes.response),
    }
}

fn filter(
    config: &FilterConfig,
    condition: Condition,
    scopes: Scopes,
    at: &At,
) -> Result<Parsed, ConfigError> {
    let then = parse_modifier(&config.modifier, &at.field("modifier"))?;
    let otherwise = match &config.otherwise {
        Some(otherwise) => Some(parse_modifier(otherwise, &at.field("else"))?),
        None => None,
    };
    Ok(conditional(condition, then, otherwise, scopes))
}

fn conditional(
    condition: Condition,
    then: Parsed,
    otherwise: Option<Parsed>,
    scopes: Scopes,
) -> Parsed {
    let otherwise = otherwise.unwrap_or(Parsed {
        request: None,
        response: None,
    });
    let build = |then: Option<Node>, otherwise: Option<Node>, enabled: bool| {
        (enabled && (then.is_some() || otherwise.is_some())).then(|| Node::Filter {
            condition: condition.clone(),
            then: then.map(Box::new),
            otherwise: otherwise.map(Box::new),
        })
    };
    Parsed {
        request: build(then.request, otherwise.request, scopes.request),
        response: build(then.response, otherwise.response, scopes.response),
    }
}

fn url_parts(config: &UrlModifierConfig, at: &At) -> Result<UrlParts, ConfigError> {
    let set = |part: &Option<String>| part.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let mut parts = UrlParts::default();
    if let Some(scheme) = set(&config.scheme) {
        parts.scheme = Some(
            scheme
                .parse()
                .map_err(|_| err(&at.field("scheme"), "invalid URL scheme"))?,
        );
    }
    if let Some(host) = set(&config.host) {
        let authority: http::uri::Authority = host.parse().map_err(|_| {
            err(
                &at.field("host"),
                "invalid host (expected host or host:port)",
            )
        })?;
        if authority.as_str().contains('@') {
            return Err(err(
                &at.field("host"),
                "the host may not carry user information",
            ));
        }
        parts.authority = Some(authority);
    }
    if let Some(path) = set(&config.path) {
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(err(
                &at.field("path"),
                "the path must start with '/' and hold no '?' or '#'",
            ));
        }
        if http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            return Err(err(&at.field("path"), "invalid URL path"));
        }
        parts.path = Some(path);
    }
    if let Some(query) = set(&config.query) {
        let query = query.strip_prefix('?').unwrap_or(&query).to_owned();
        if query.contains('#') || http::uri::PathAndQuery::try_from(format!("/?{query}")).is_err() {
            return Err(err(&at.field("query"), "invalid URL query string"));
        }
        parts.query = Some(query);
    }
    if parts.scheme.is_none()
        && parts.authority.is_none()
        && parts.path.is_none()
        && parts.query.is_none()
    {
        return Err(err(
            &at.base,
            "url.Modifier changes nothing: set at least one of scheme, host, path, query",
        ));
    }
    Ok(parts)
}

fn non_empty<'a>(text: &'a str, key: &str, at: &At) -> Result<&'a str, ConfigError> {
    if text.is_empty() {
        return Err(err(&at.field(key), format!("`{key}` may not be empty")));
    }
    Ok(text)
}

fn header_name(name: &str, path: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        err(
            path,
            format!("invalid header name {name:?} (expected a token such as X-Api-Key)"),
        )
    })
}

fn header_value(text: &str, path: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(text).map_err(|_| {
        err(
            path,
            "invalid header value (not shown): it may not hold control characters such as \
             newlines",
        )
    })
}

/// A header the modifier writes (or removes): framing headers are the
/// gateway's, hop-by-hop headers are never forwarded.
fn target_header(name: &str, path: &str, removing: bool) -> Result<HeaderName, ConfigError> {
    let name = header_name(name, path)?;
    let lower = name.as_str();
    if FRAMING.contains(&lower) {
        return Err(err(
            path,
            format!("the gateway owns the {lower} header; a modifier may not change it"),
        ));
    }
    if !removing && switchboard_core::krakend::is_hop_by_hop(lower) {
        return Err(err(
            path,
            format!("{lower} is a hop-by-hop header and is never forwarded"),
        ));
    }
    Ok(name)
}

/// The directions a modifier applies to. Without `scope`, every direction
/// the modifier supports (as martian does).
fn scopes(
    scope: Option<&[Scope]>,
    supported: Scopes,
    kind: &str,
    at: &At,
) -> Result<Scopes, ConfigError> {
    let path = at.field("scope");
    let Some(items) = scope else {
        return Ok(supported);
    };
    if items.is_empty() {
        return Err(err(
            &path,
            "empty scope: name \"request\", \"response\" or both",
        ));
    }
    let mut scopes = Scopes {
        request: false,
        response: false,
    };
    for (index, item) in items.iter().enumerate() {
        match item {
            Scope::Request => scopes.request = true,
            Scope::Response if supported.response => scopes.response = true,
            Scope::Response => {
                return Err(err(
                    &format!("{path}[{index}]"),
                    format!("{kind} applies to requests only; remove \"response\""),
                ));
            }
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Uri};
    use serde_json::json;

    use super::*;

    fn path_of(config: Value) -> String {
        compile(&config).unwrap_err().path
    }

    fn apply_request(
        modifiers: &Modifiers,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (Uri, HeaderMap) {
        let mut uri: Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        modifiers.modify_request(&mut uri, &mut map);
        (uri, map)
    }

    #[test]
    fn every_unknown_field_is_named_with_the_nearest_one() {
        let err = compile(&json!({
            "header.Modifier": {"scope": ["request"], "nmae": "X-A", "valeu": "1", "zzz": 2}
        }))
        .err()
        .unwrap();
        let all = err.into_all();
        let found: Vec<(&str, &str)> = all
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].1.contains("did you mean \"name\"?"), "{found:?}");
        assert!(found[1].1.contains("did you mean \"value\"?"), "{found:?}");
        assert!(found[2].1.contains("expected one of"), "{found:?}");
        let err = compile(&json!({"header.Modifer": {}})).err().unwrap();
        assert!(
            err.message.contains("did you mean \"header.Modifier\"?"),
            "{err}"
        );
    }

    #[test]
    fn seed_authorization_injection() {
        let modifiers = compile(&json!({
            "header.Modifier": {
                "scope": ["request"],
                "name": "Authorization",
                "value": "Bearer YOUR_OPENI_API_KEY"
            }
        }))
        .unwrap();
        assert!(modifiers.has_request_modifiers());
        assert!(!modifiers.has_response_modifiers());
        let (_, headers) = apply_request(
            &modifiers,
            "/v1/chat/completions",
            &[("authorization", "Bearer mine"), ("authorization", "x")],
        );
        let values: Vec<_> = headers.get_all("authorization").iter().collect();
        assert_eq!(values, ["Bearer YOUR_OPENI_API_KEY"]);
        assert!(values[0].is_sensitive());
    }

    #[test]
    fn errors_name_the_relative_path() {
        assert_eq!(
            path_of(json!({"fifo.Group": {"scope": ["request"], "modifiers": [
                {"header.Append": {"name": "a", "value": "b"}},
                {"header.Blacklist": {"names": ["x"]}},
                {"header.Modifier": {"scope": ["request"], "name": "bad name", "value": "v"}}
            ]}})),
            r#"["fifo.Group"].modifiers[2]["header.Modifier"].name"#
        );
        assert_eq!(
            path_of(json!({"nope.Modifier": {}})),
            r#"["nope.Modifier"]"#
        );
        // A missing field is reported on its object, as everywhere.
        let missing =
            compile(&json!({"header.Modifier": {"scope": ["request"], "value": "v"}})).unwrap_err();
        assert_eq!(missing.path, r#"["header.Modifier"]"#);
        assert!(missing.message.contains("name"), "{missing}");
        assert_eq!(
            path_of(
                json!({"header.RegexFilter": {"header": "X-A", "regex": "(", "modifier": {"header.Modifier": {"name": "a", "value": "b"}}}})
            ),
            r#"["header.RegexFilter"].regex"#
        );
        assert_eq!(
            path_of(json!({"body.Modifier": {"body": "not base64!"}})),
            r#"["body.Modifier"].body"#
        );
        assert_eq!(
            path_of(json!({"header.Modifier": {"scope": ["requests"], "name": "a", "value": "b"}})),
            r#"["header.Modifier"].scope[0]"#
        );
        assert_eq!(
            path_of(
                json!({"querystring.Modifier": {"scope": ["request", "response"], "name": "a", "value": "b"}})
            ),
            r#"["querystring.Modifier"].scope[1]"#
        );
        assert_eq!(
            path_of(
                json!({"header.Filter": {"name": "X-A", "modifier": {"header.Append": {"name": "b", "value": "\n"}}}})
            ),
            r#"["header.Filter"].modifier["header.Append"].value"#
        );
        assert_eq!(
            path_of(
                json!({"priority.Group": {"modifiers": [{"priority": 1, "modifier": {"url.Modifier": {"host": "a b"}}}]}})
            ),
            r#"["priority.Group"].modifiers[0].modifier["url.Modifier"].host"#
        );
        assert_eq!(
            path_of(json!({"header.Modifier": {"name": "a", "value": "b", "typo": 1}})),
            r#"["header.Modifier"].typo"#
        );
        assert_eq!(
            path_of(json!({"header.Modifier": {"name": "Content-Length", "value": "1"}})),
            r#"["header.Modifier"].name"#
        );
        assert_eq!(
            path_of(
                json!({"header.Modifier": {"name": "a", "value": "b"}, "header.Append": {"name": "a", "value": "b"}})
            ),
            ""
        );
    }

    #[test]
    fn serde_mistakes_read_in_the_namespace_terms() {
        let message = |config: Value| compile(&config).unwrap_err().to_string();
        let several = message(json!({"header.Modifier": {}, "header.Append": {}}));
        assert!(
            several.contains("wrap several in a fifo.Group"),
            "{several}"
        );
        let none = message(json!({"@comment": "nothing here"}));
        assert!(none.contains("expected exactly one modifier"), "{none}");
        let scalar = message(json!({"header.Filter": {"name": "a", "modifier": 5}}));
        assert!(
            scalar.contains("[\"header.Filter\"].modifier")
                && scalar.contains("expected a modifier object")
                && scalar.contains("found a number"),
            "{scalar}"
        );
        let scope =
            message(json!({"header.Modifier": {"scope": "request", "name": "a", "value": "b"}}));
        assert!(
            scope.contains("expected a sequence, found a string"),
            "{scope}"
        );
        let typo =
            compile(&json!({"fifo.Group": {"modifiers": [{"header.Apend": {}}]}})).unwrap_err();
        assert_eq!(typo.path, r#"["fifo.Group"].modifiers[0]["header.Apend"]"#);
        assert!(
            typo.message.contains("did you mean \"header.Append\"?"),
            "{typo}"
        );
        let scope_typo = compile(
            &json!({"header.Modifier": {"scope": ["requests"], "name": "a", "value": "b"}}),
        )
        .unwrap_err();
        assert!(
            scope_typo.message.contains("did you mean \"request\"?"),
            "{scope_typo}"
        );
    }

    #[test]
    fn errors_never_show_values() {
        let secret = "sk-secret-\u{7}";
        let err = compile(&json!({"header.Modifier": {"name": "Authorization", "value": secret}}))
            .unwrap_err();
        assert!(!err.to_string().contains("sk-secret"), "{err}");
        let err = compile(&json!({"header.Modifier": {"name": "Authorization", "value": 12345}}))
            .unwrap_err();
        assert!(!err.to_string().contains("12345"), "{err}");
    }

    #[test]
    fn debug_redacts_values() {
        let modifiers = compile(&json!({"fifo.Group": {"modifiers": [
            {"header.Modifier": {"name": "Authorization", "value": "Bearer sk-live-1"}},
            {"querystring.Modifier": {"name": "key", "value": "AIza-secret"}},
            {"header.Filter": {"name": "X-T", "value": "tenant-secret", "modifier": {"header.Append": {"name": "x", "value": "append-secret"}}}}
        ]}}))
        .unwrap();
        let debug = format!("{modifiers:?}");
        for secret in ["sk-live-1", "AIza-secret", "tenant-secret", "append-secret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("authorization"), "{debug}");
    }

    #[test]
    fn comments_are_ignored() {
        let modifiers = compile(
            &json!({"header.Modifier": {"@comment": "vendor key", "name": "a", "value": "b"}}),
        )
        .unwrap();
        assert!(modifiers.has_request_modifiers() && modifiers.has_response_modifiers());
    }

    #[test]
    fn scopes_nest_and_split() {
        let modifiers = compile(&json!({"fifo.Group": {"scope": ["request", "response"], "modifiers": [
            {"header.Modifier": {"scope": ["request"], "name": "x-req", "value": "1"}},
            {"header.Modifier": {"scope": ["response"], "name": "x-resp", "value": "1"}},
            {"fifo.Group": {"scope": ["request"], "modifiers": [
                {"header.Modifier": {"scope": ["request", "response"], "name": "x-inner", "value": "1"}}
            ]}}
        ]}}))
        .unwrap();
        let (_, req) = apply_request(&modifiers, "/", &[]);
        assert!(
            req.contains_key("x-req") && req.contains_key("x-inner") && !req.contains_key("x-resp")
        );
        let mut resp = HeaderMap::new();
        modifiers.modify_response(&Uri::default(), &HeaderMap::new(), &mut resp);
        assert!(
            resp.contains_key("x-resp")
                && !resp.contains_key("x-req")
                && !resp.contains_key("x-inner")
        );

        let only = modifiers.request_only();
        assert!(only.has_request_modifiers() && !only.has_response_modifiers());
        let mut resp = HeaderMap::new();
        assert!(
            only.modify_response(&Uri::default(), &HeaderMap::new(), &mut resp)
                .is_none()
        );
        assert!(resp.is_empty());
        let only = modifiers.response_only();
        let (_, req) = apply_request(&only, "/", &[]);
        assert!(req.is_empty());

        let response_free = compile(&json!({"fifo.Group": {"modifiers": [
            {"header.Modifier": {"scope": ["request"], "name": "a", "value": "b"}}
        ]}}))
        .unwrap();
        assert!(!response_free.has_response_modifiers());
    }

    #[test]
    fn header_modifiers() {
        let modifiers = compile(&json!({"fifo.Group": {"modifiers": [
            {"header.Append": {"name": "X-Some", "value": "I am"}},
            {"header.Copy": {"from": "User-Agent", "to": "X-Browser"}},
            {"header.Copy": {"from": "X-Missing", "to": "X-Kept"}},
            {"header.Blacklist": {"names": ["Cookie", "X-Forwarded-For"]}}
        ]}}))
        .unwrap();
        let (_, headers) = apply_request(
            &modifiers,
            "/",
            &[
                ("x-some", "first"),
                ("user-agent", "curl"),
                ("x-kept", "yes"),
                ("cookie", "a=b"),
                ("x-forwarded-for", "1.2.3.4"),
            ],
        );
        let some: Vec<_> = headers.get_all("x-some").iter().collect();
        assert_eq!(some, ["first", "I am"]);
        assert_eq!(headers["x-browser"], "curl");
        assert_eq!(headers["x-kept"], "yes");
        assert!(!headers.contains_key("cookie") && !headers.contains_key("x-forwarded-for"));
    }

    #[test]
    fn filters_with_else() {
        let modifiers = compile(&json!({"header.Filter": {
            "scope": ["request"], "name": "X-Tenant", "value": "v1",
            "modifier": {"querystring.Modifier": {"scope": ["request"], "name": "legacy", "value": "1"}},
            "else": {"header.Modifier": {"scope": ["request"], "name": "X-Legacy", "value": "false"}}
        }}))
        .unwrap();
        let (uri, headers) =
            apply_request(&modifiers, "/__echo/header.Filter", &[("x-tenant", "v1")]);
        assert_eq!(uri, "/__echo/header.Filter?legacy=1");
        assert!(!headers.contains_key("x-legacy"));
        let (uri, headers) =
            apply_request(&modifiers, "/__echo/header.Filter", &[("x-tenant", "v2")]);
        assert_eq!(uri, "/__echo/header.Filter");
        assert_eq!(headers["x-legacy"], "false");

        // Without a value, the header's presence is enough.
        let exists = compile(&json!({"header.Filter": {"name": "X-A", "modifier": {"header.Modifier": {"name": "x-hit", "value": "1"}}}})).unwrap();
        assert!(
            apply_request(&exists, "/", &[("x-a", "")])
                .1
                .contains_key("x-hit")
        );
        assert!(!apply_request(&exists, "/", &[]).1.contains_key("x-hit"));

        let regex = compile(&json!({"header.RegexFilter": {
            "scope": ["request"], "header": "X-App-Version", "regex": ".*-(alpha|beta|preview)$",
            "modifier": {"querystring.Modifier": {"scope": ["request"], "name": "testing", "value": "1"}}
        }}))
        .unwrap();
        assert_eq!(
            apply_request(&regex, "/a", &[("x-app-version", "v1.2.3-alpha")]).0,
            "/a?testing=1"
        );
        assert_eq!(
            apply_request(&regex, "/a", &[("x-app-version", "v1.2.3")]).0,
            "/a"
        );
        // header.RegexFilter has no `else` in martian.
        assert!(compile(&json!({"header.RegexFilter": {"header": "a", "regex": "b", "modifier": {"header.Modifier": {"name": "a", "value": "b"}}, "else": {}}})).is_err());

        let query = compile(&json!({"querystring.Filter": {
            "name": "param", "value": "true",
            "modifier": {"header.Modifier": {"name": "X-Passed-Param", "value": "true"}}
        }}))
        .unwrap();
        assert!(
            apply_request(&query, "/q?param=true", &[])
                .1
                .contains_key("x-passed-param")
        );
        assert!(
            !apply_request(&query, "/q?param=false", &[])
                .1
                .contains_key("x-passed-param")
        );
        // On the response, the filter checks the request that was sent.
        assert!(query.response_needs_request());
        let mut resp = HeaderMap::new();
        query.modify_response(
            &"/q?param=true".parse().unwrap(),
            &HeaderMap::new(),
            &mut resp,
        );
        assert!(resp.contains_key("x-passed-param"));
    }

    #[test]
    fn priority_group_runs_highest_first() {
        let modifiers = compile(&json!({"priority.Group": {"scope": ["request", "response"], "modifiers": [
            {"priority": 0, "modifier": {"header.Append": {"scope": ["request"], "name": "x-order", "value": "zero"}}},
            {"priority": 100, "modifier": {"header.Append": {"scope": ["request"], "name": "x-order", "value": "hundred"}}},
            {"modifier": {"header.Append": {"scope": ["request"], "name": "x-order", "value": "default"}}}
        ]}}))
        .unwrap();
        let (_, headers) = apply_request(&modifiers, "/", &[]);
        let order: Vec<_> = headers.get_all("x-order").iter().collect();
        assert_eq!(order, ["hundred", "default", "zero"]);
    }

    #[test]
    fn url_and_query_modifiers() {
        let modifiers = compile(&json!({"fifo.Group": {"modifiers": [
            {"url.Modifier": {"scope": ["request"], "scheme": "http", "host": "localhost:8080", "path": "/__echo/hello", "query": "flag=true"}},
            {"querystring.Modifier": {"scope": ["request"], "name": "amount", "value": "75"}}
        ]}}))
        .unwrap();
        let (uri, _) = apply_request(
            &modifiers,
            "https://does-not-exist/neither?amount=55",
            &[("host", "does-not-exist")],
        );
        assert_eq!(
            uri,
            "http://localhost:8080/__echo/hello?flag=true&amount=75"
        );
        assert!(compile(&json!({"url.Modifier": {}})).is_err());
        assert!(compile(&json!({"url.Modifier": {"path": "no-slash"}})).is_err());
        assert!(compile(&json!({"url.Modifier": {"host": "user@evil"}})).is_err());
    }

    #[test]
    fn body_modifier_fixes_headers() {
        let modifiers = compile(&json!({"body.Modifier": {
            "scope": ["request", "response"], "contentType": "application/json",
            "body": "eyJtc2ciOiJ5b3Ugcm9jayEifQ=="
        }}))
        .unwrap();
        let mut uri: Uri = "/".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        headers.insert("content-encoding", "gzip".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        let body = modifiers.modify_request(&mut uri, &mut headers).unwrap();
        assert_eq!(&body[..], br#"{"msg":"you rock!"}"#);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["content-length"], body.len().to_string().as_str());
        assert!(
            !headers.contains_key("content-encoding") && !headers.contains_key("transfer-encoding")
        );
        // Unpadded base64 is accepted too.
        assert!(compile(&json!({"body.Modifier": {"body": "eyJtc2ciOiJ5b3Ugcm9jayEifQ"}})).is_ok());
    }
}
