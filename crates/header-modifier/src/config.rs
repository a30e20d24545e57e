//! Compiling the `modifier/martian` JSON into modifier trees.
//!
//! The format is recursive (filters and groups nest modifiers) and keyed by
//! modifier type, so it is read by hand rather than through serde: that
//! keeps every error on its exact JSON path, and keeps values (often
//! credentials) out of error messages.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use regex::Regex;
use serde_json::{Map, Value};
use switchboard_core::ConfigError;
use switchboard_core::config::{is_comment_key, join_path, key_segment};

use crate::modifier::{Condition, Modifiers, Node};
use crate::query::UrlParts;

/// The modifier types this crate implements.
const KNOWN_TYPES: &str = "header.Modifier, header.Append, header.Copy, header.Blacklist, \
     header.Filter, header.RegexFilter, querystring.Modifier, querystring.Filter, \
     url.Modifier, body.Modifier, fifo.Group, priority.Group";

/// Headers that describe the connection or the body framing: the gateway
/// owns them, a modifier may not set them.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

/// Standard base64 as Go's `encoding/json` writes `[]byte`, with or
/// without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn compile(config: &Value) -> Result<Modifiers, ConfigError> {
    let parsed = parse_modifier(config, "")?;
    Ok(Modifiers::new(parsed.request, parsed.response))
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

fn parse_modifier(value: &Value, path: &str) -> Result<Parsed, ConfigError> {
    let Value::Object(map) = value else {
        return Err(err(
            path,
            format!(
                "expected a modifier object such as {{\"header.Modifier\": {{...}}}}, found {}",
                kind_of(value)
            ),
        ));
    };
    let kinds: Vec<&String> = map.keys().filter(|key| !is_comment_key(key)).collect();
    let kind = match kinds.as_slice() {
        [kind] => kind.as_str(),
        [] => {
            return Err(err(
                path,
                format!("expected exactly one modifier, found none (supported: {KNOWN_TYPES})"),
            ));
        }
        several => {
            let names: Vec<&str> = several.iter().map(|k| k.as_str()).collect();
            return Err(err(
                path,
                format!(
                    "expected exactly one modifier, found {} ({}); wrap several in a fifo.Group",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
    };
    let path = join_path(path, &key_segment(kind));
    let body = map.get(kind).unwrap_or(&Value::Null);
    let fields = Fields::new(body, &path)?;
    match kind {
        "header.Modifier" | "header.Append" => {
            fields.only(&["scope", "name", "value"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let name = fields.target_header("name", false)?;
            let mut value = fields.header_value("value")?;
            // Injected values are often credentials: keep them out of
            // HTTP/2 header compression tables and Debug output.
            value.set_sensitive(true);
            let node = if kind == "header.Modifier" {
                Node::SetHeader { name, value }
            } else {
                Node::AppendHeader { name, value }
            };
            Ok(Parsed::leaf(node, scopes))
        }
        "header.Copy" => {
            fields.only(&["scope", "from", "to"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let from = fields.header_name("from")?;
            let to = fields.target_header("to", false)?;
            Ok(Parsed::leaf(Node::CopyHeader { from, to }, scopes))
        }
        "header.Blacklist" => {
            fields.only(&["scope", "names"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let list = fields.array("names")?;
            let names_path = fields.path("names");
            let mut names = Vec::with_capacity(list.len());
            for (index, item) in list.iter().enumerate() {
                let item_path = format!("{names_path}[{index}]");
                let Value::String(name) = item else {
                    return Err(err(
                        &item_path,
                        format!("expected a header name, found {}", kind_of(item)),
                    ));
                };
                names.push(check_target(
                    parse_header_name(name, &item_path)?,
                    &item_path,
                    true,
                )?);
            }
            Ok(Parsed::leaf(Node::RemoveHeaders(names), scopes))
        }
        "header.Filter" => {
            fields.only(&["scope", "name", "value", "modifier", "else"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let condition = Condition::Header {
                name: fields.header_name("name")?,
                value: fields.string("value")?.map(str::to_owned),
            };
            filter(&fields, condition, scopes, true)
        }
        "header.RegexFilter" => {
            fields.only(&["scope", "header", "regex", "modifier"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let name = fields.header_name("header")?;
            let pattern = fields.required_string("regex")?;
            let regex = Regex::new(pattern)
                .map_err(|e| err(&fields.path("regex"), format!("invalid regex: {e}")))?;
            filter(
                &fields,
                Condition::HeaderRegex { name, regex },
                scopes,
                false,
            )
        }
        "querystring.Modifier" => {
            fields.only(&["scope", "name", "value"])?;
            let scopes = fields.scope(REQUEST_ONLY, kind)?;
            let name = fields.non_empty_string("name")?.to_owned();
            let value = fields.required_string("value")?.to_owned();
            Ok(Parsed::leaf(Node::SetQuery { name, value }, scopes))
        }
        "querystring.Filter" => {
            fields.only(&["scope", "name", "value", "modifier", "else"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let condition = Condition::Query {
                name: fields.non_empty_string("name")?.to_owned(),
                value: fields.string("value")?.map(str::to_owned),
            };
            filter(&fields, condition, scopes, true)
        }
        "url.Modifier" => {
            fields.only(&["scope", "scheme", "host", "path", "query"])?;
            let scopes = fields.scope(REQUEST_ONLY, kind)?;
            let parts = url_parts(&fields)?;
            Ok(Parsed::leaf(Node::SetUrl(parts), scopes))
        }
        "body.Modifier" => {
            fields.only(&["scope", "contentType", "body"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let encoded = fields.required_string("body")?;
            let body = BASE64.decode(encoded.trim()).map_err(|e| {
                err(
                    &fields.path("body"),
                    format!("body is not valid base64: {e}"),
                )
            })?;
            let content_type = match fields.string("contentType")? {
                None | Some("") => None,
                Some(text) => Some(HeaderValue::from_str(text).map_err(|_| {
                    err(
                        &fields.path("contentType"),
                        "invalid Content-Type header value",
                    )
                })?),
            };
            let node = Node::SetBody {
                body: Bytes::from(body),
                content_type,
            };
            Ok(Parsed::leaf(node, scopes))
        }
        "fifo.Group" => {
            fields.only(&["scope", "modifiers", "aggregateErrors"])?;
            let scopes = fields.scope(BOTH, kind)?;
            // Modifiers here cannot fail while running, so there are no
            // errors to aggregate; the flag is accepted for compatibility.
            fields.boolean("aggregateErrors")?;
            let list = fields.array("modifiers")?;
            let list_path = fields.path("modifiers");
            let mut children = Vec::with_capacity(list.len());
            for (index, item) in list.iter().enumerate() {
                children.push(parse_modifier(item, &format!("{list_path}[{index}]"))?);
            }
            Ok(group(children, scopes))
        }
        "priority.Group" => {
            fields.only(&["scope", "modifiers"])?;
            let scopes = fields.scope(BOTH, kind)?;
            let list = fields.array("modifiers")?;
            let list_path = fields.path("modifiers");
            let mut ordered: Vec<(i64, Parsed)> = Vec::with_capacity(list.len());
            for (index, item) in list.iter().enumerate() {
                let item_path = format!("{list_path}[{index}]");
                let entry = Fields::new(item, &item_path)?;
                entry.only(&["priority", "modifier"])?;
                let priority = entry.integer("priority")?.unwrap_or(0);
                let parsed = parse_modifier(entry.required("modifier")?, &entry.path("modifier"))?;
                // Higher priority runs first; on a tie the later entry runs
                // first (martian's insertion order).
                let at = ordered
                    .iter()
                    .position(|(existing, _)| priority >= *existing)
                    .unwrap_or(ordered.len());
                ordered.insert(at, (priority, parsed));
            }
            Ok(group(ordered.into_iter().map(|(_, p)| p).collect(), scopes))
        }
        other => Err(err(
            &path,
            match switchboard_core::config::did_you_mean(
                other,
                KNOWN_TYPES.split(", ").map(str::trim),
            ) {
                Some(near) => format!("unknown modifier type {other:?}; did you mean {near:?}?"),
                None => format!("unknown modifier type {other:?} (supported: {KNOWN_TYPES})"),
            },
        )),
    }
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
    fields: &Fields<'_>,
    condition: Condition,
    scopes: Scopes,
    allows_else: bool,
) -> Result<Parsed, ConfigError> {
    let then = parse_modifier(fields.required("modifier")?, &fields.path("modifier"))?;
    let otherwise = match fields.map.get("else") {
        Some(value) if allows_else && !value.is_null() => {
            parse_modifier(value, &fields.path("else"))?
        }
        _ => Parsed {
            request: None,
            response: None,
        },
    };
    let build = |then: Option<Node>, otherwise: Option<Node>, enabled: bool| {
        (enabled && (then.is_some() || otherwise.is_some())).then(|| Node::Filter {
            condition: condition.clone(),
            then: then.map(Box::new),
            otherwise: otherwise.map(Box::new),
        })
    };
    Ok(Parsed {
        request: build(then.request, otherwise.request, scopes.request),
        response: build(then.response, otherwise.response, scopes.response),
    })
}

fn url_parts(fields: &Fields<'_>) -> Result<UrlParts, ConfigError> {
    let mut parts = UrlParts::default();
    if let Some(scheme) = fields.string("scheme")?.filter(|s| !s.is_empty()) {
        parts.scheme = Some(
            scheme
                .parse()
                .map_err(|_| err(&fields.path("scheme"), "invalid URL scheme"))?,
        );
    }
    if let Some(host) = fields.string("host")?.filter(|s| !s.is_empty()) {
        let authority: http::uri::Authority = host.parse().map_err(|_| {
            err(
                &fields.path("host"),
                "invalid host (expected host or host:port)",
            )
        })?;
        if authority.as_str().contains('@') {
            return Err(err(
                &fields.path("host"),
                "the host may not carry user information",
            ));
        }
        parts.authority = Some(authority);
    }
    if let Some(path) = fields.string("path")?.filter(|s| !s.is_empty()) {
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(err(
                &fields.path("path"),
                "the path must start with '/' and hold no '?' or '#'",
            ));
        }
        if http::uri::PathAndQuery::try_from(path).is_err() {
            return Err(err(&fields.path("path"), "invalid URL path"));
        }
        parts.path = Some(path.to_owned());
    }
    if let Some(query) = fields.string("query")?.filter(|s| !s.is_empty()) {
        let query = query.strip_prefix('?').unwrap_or(query);
        if query.contains('#') || http::uri::PathAndQuery::try_from(format!("/?{query}")).is_err() {
            return Err(err(&fields.path("query"), "invalid URL query string"));
        }
        parts.query = Some(query.to_owned());
    }
    if parts.scheme.is_none()
        && parts.authority.is_none()
        && parts.path.is_none()
        && parts.query.is_none()
    {
        return Err(err(
            fields.base,
            "url.Modifier changes nothing: set at least one of scheme, host, path, query",
        ));
    }
    Ok(parts)
}

fn parse_header_name(name: &str, path: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        err(
            path,
            format!("invalid header name {name:?} (expected a token such as X-Api-Key)"),
        )
    })
}

/// Refuses headers a modifier may not write (or remove, for framing).
fn check_target(name: HeaderName, path: &str, removing: bool) -> Result<HeaderName, ConfigError> {
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

/// Typed access to the fields of one modifier object.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    base: &'a str,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, base: &'a str) -> Result<Self, ConfigError> {
        match value {
            Value::Object(map) => Ok(Self { map, base }),
            other => Err(err(
                base,
                format!("expected an object, found {}", kind_of(other)),
            )),
        }
    }

    fn path(&self, key: &str) -> String {
        join_path(self.base, &key_segment(key))
    }

    /// Refuses fields this modifier does not have (comment keys aside):
    /// every one is reported.
    fn only(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        let errors = self
            .map
            .keys()
            .filter(|key| !is_comment_key(key) && !allowed.contains(&key.as_str()))
            .map(|key| {
                err(
                    &self.path(key),
                    match switchboard_core::config::did_you_mean(key, allowed.iter().copied()) {
                        Some(near) => format!("unknown field {key:?}; did you mean {near:?}?"),
                        None => format!(
                            "unknown field {key:?}; expected one of \"{}\"",
                            allowed.join("\", \"")
                        ),
                    },
                )
            })
            .collect();
        ConfigError::from_errors(errors).map_or(Ok(()), Err)
    }

    /// A present, non-null field.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    fn required(&self, key: &str) -> Result<&'a Value, ConfigError> {
        self.get(key)
            .ok_or_else(|| err(&self.path(key), format!("missing field `{key}`")))
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            // The value itself is not echoed: it may be a credential.
            Some(other) => Err(err(
                &self.path(key),
                format!("expected a string, found {}", kind_of(other)),
            )),
        }
    }

    fn required_string(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.required(key)?;
        self.string(key)?
            .ok_or_else(|| err(&self.path(key), format!("missing field `{key}`")))
    }

    fn non_empty_string(&self, key: &str) -> Result<&'a str, ConfigError> {
        let text = self.required_string(key)?;
        if text.is_empty() {
            return Err(err(&self.path(key), format!("`{key}` may not be empty")));
        }
        Ok(text)
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(err(
                &self.path(key),
                format!("expected a boolean, found {}", kind_of(other)),
            )),
        }
    }

    fn integer(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| err(&self.path(key), "expected an integer")),
            Some(other) => Err(err(
                &self.path(key),
                format!("expected an integer, found {}", kind_of(other)),
            )),
        }
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, ConfigError> {
        match self.required(key)? {
            Value::Array(items) => Ok(items),
            other => Err(err(
                &self.path(key),
                format!("expected an array, found {}", kind_of(other)),
            )),
        }
    }

    fn header_name(&self, key: &str) -> Result<HeaderName, ConfigError> {
        let name = self.required_string(key)?;
        parse_header_name(name, &self.path(key))
    }

    /// A header the modifier writes.
    fn target_header(&self, key: &str, removing: bool) -> Result<HeaderName, ConfigError> {
        check_target(self.header_name(key)?, &self.path(key), removing)
    }

    fn header_value(&self, key: &str) -> Result<HeaderValue, ConfigError> {
        let text = self.required_string(key)?;
        HeaderValue::from_str(text).map_err(|_| {
            err(
                &self.path(key),
                "invalid header value (not shown): it may not hold control characters such as \
                 newlines",
            )
        })
    }

    /// The directions the modifier applies to. Without `scope`, every
    /// direction the modifier supports (as martian does).
    fn scope(&self, supported: Scopes, kind: &str) -> Result<Scopes, ConfigError> {
        let path = self.path("scope");
        let Some(value) = self.get("scope") else {
            return Ok(supported);
        };
        let Value::Array(items) = value else {
            return Err(err(
                &path,
                format!(
                    "expected an array such as [\"request\"], found {}",
                    kind_of(value)
                ),
            ));
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
            let item_path = format!("{path}[{index}]");
            match item.as_str() {
                Some("request") => scopes.request = true,
                Some("response") if supported.response => scopes.response = true,
                Some("response") => {
                    return Err(err(
                        &item_path,
                        format!("{kind} applies to requests only; remove \"response\""),
                    ));
                }
                Some(other) => {
                    return Err(err(
                        &item_path,
                        format!("unknown scope {other:?} (expected \"request\" or \"response\")"),
                    ));
                }
                None => {
                    return Err(err(
                        &item_path,
                        format!(
                            "expected \"request\" or \"response\", found {}",
                            kind_of(item)
                        ),
                    ));
                }
            }
        }
        Ok(scopes)
    }
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
        assert_eq!(
            path_of(json!({"header.Modifier": {"scope": ["request"], "value": "v"}})),
            r#"["header.Modifier"].name"#
        );
        assert_eq!(
            path_of(json!({"header.RegexFilter": {"header": "X-A", "regex": "(", "modifier": {}}})),
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
