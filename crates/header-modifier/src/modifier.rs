//! The compiled modifier trees and how they apply to a request or a
//! response head. Pure logic: no tower types.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use regex::Regex;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::buffer::set_body_headers;

use crate::MartianConfig;
use crate::query::{self, UrlParts};

/// One compiled modifier, already restricted to one scope (request or
/// response): a modifier whose `scope` leaves that direction out is simply
/// absent from that direction's tree.
#[derive(Clone)]
pub(crate) enum Node {
    /// `header.Modifier`: replaces every value of a header.
    SetHeader {
        name: HeaderName,
        value: HeaderValue,
    },
    /// `header.Append`: adds one more value.
    AppendHeader {
        name: HeaderName,
        value: HeaderValue,
    },
    /// `header.Copy`: `to` gets the values of `from` (nothing when absent).
    CopyHeader { from: HeaderName, to: HeaderName },
    /// `header.Blacklist`: removes headers.
    RemoveHeaders(Vec<HeaderName>),
    /// `querystring.Modifier` (requests only).
    SetQuery { name: String, value: String },
    /// `url.Modifier` (requests only).
    SetUrl(UrlParts),
    /// `body.Modifier`.
    SetBody {
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
    /// A filter: `then` when the condition holds, `otherwise` when not.
    Filter {
        condition: Condition,
        then: Option<Box<Node>>,
        otherwise: Option<Box<Node>>,
    },
    /// `fifo.Group` and `priority.Group` (already in run order).
    Group(Vec<Node>),
}

/// What a filter checks.
#[derive(Clone)]
pub(crate) enum Condition {
    /// `header.Filter`: the message has the header (with this value when
    /// one is given).
    Header {
        name: HeaderName,
        value: Option<String>,
    },
    /// `header.RegexFilter`: the first value of the *request* header
    /// matches. On a response, the request that produced it is checked.
    HeaderRegex { name: HeaderName, regex: Regex },
    /// `querystring.Filter`: the request query has the parameter (with this
    /// value when one is given).
    Query { name: String, value: Option<String> },
}

impl Node {
    /// Whether evaluating this tree on a response needs the request.
    fn needs_request(&self) -> bool {
        match self {
            Node::Filter {
                condition,
                then,
                otherwise,
            } => {
                matches!(
                    condition,
                    Condition::HeaderRegex { .. } | Condition::Query { .. }
                ) || then.as_deref().is_some_and(Node::needs_request)
                    || otherwise.as_deref().is_some_and(Node::needs_request)
            }
            Node::Group(children) => children.iter().any(Node::needs_request),
            _ => false,
        }
    }
}

/// The message a tree is applied to.
struct Target<'a> {
    headers: &'a mut HeaderMap,
    /// The request URI: mutable on the way out, absent on the way back.
    uri: Option<&'a mut Uri>,
    /// On the way back: the request that produced the response.
    request: Option<(&'a Uri, &'a HeaderMap)>,
    body: Option<Bytes>,
}

impl Target<'_> {
    fn request_headers(&self) -> Option<&HeaderMap> {
        match self.request {
            Some((_, headers)) => Some(headers),
            None if self.uri.is_some() => Some(self.headers),
            None => None,
        }
    }

    fn request_query(&self) -> Option<&str> {
        match (&self.request, &self.uri) {
            (Some((uri, _)), _) => uri.query(),
            (None, Some(uri)) => uri.query(),
            (None, None) => None,
        }
    }

    fn holds(&self, condition: &Condition) -> bool {
        match condition {
            Condition::Header { name, value } => {
                let mut values = self.headers.get_all(name).iter().peekable();
                match value {
                    None => values.peek().is_some(),
                    Some(wanted) => values.any(|v| v.as_bytes() == wanted.as_bytes()),
                }
            }
            Condition::HeaderRegex { name, regex } => self
                .request_headers()
                .and_then(|headers| headers.get(name))
                .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
                .is_some_and(|value| !value.is_empty() && regex.is_match(value)),
            Condition::Query { name, value } => {
                query::has_param(self.request_query(), name, value.as_deref())
            }
        }
    }

    fn apply(&mut self, node: &Node) {
        match node {
            Node::SetHeader { name, value } => {
                self.headers.insert(name.clone(), value.clone());
            }
            Node::AppendHeader { name, value } => {
                self.headers.append(name.clone(), value.clone());
            }
            Node::CopyHeader { from, to } => {
                let values: Vec<HeaderValue> = self.headers.get_all(from).iter().cloned().collect();
                if !values.is_empty() {
                    self.headers.remove(to);
                    for value in values {
                        self.headers.append(to.clone(), value);
                    }
                }
            }
            Node::RemoveHeaders(names) => {
                for name in names {
                    self.headers.remove(name);
                }
            }
            Node::SetQuery { name, value } => {
                if let Some(uri) = self.uri.as_deref_mut() {
                    let query = query::set_param(uri.query(), name, value);
                    query::set_query(uri, query);
                }
            }
            Node::SetUrl(parts) => {
                if let Some(uri) = self.uri.as_deref_mut() {
                    query::rewrite_uri(uri, parts);
                }
            }
            Node::SetBody { body, content_type } => {
                if let Some(content_type) = content_type {
                    self.headers.insert(CONTENT_TYPE, content_type.clone());
                }
                // The new body is sent as is: whatever encoding the old one
                // had no longer applies.
                self.headers.remove(CONTENT_ENCODING);
                set_body_headers(self.headers, body.len(), None);
                self.body = Some(body.clone());
            }
            Node::Filter {
                condition,
                then,
                otherwise,
            } => {
                let branch = if self.holds(condition) {
                    then
                } else {
                    otherwise
                };
                if let Some(branch) = branch {
                    self.apply(branch);
                }
            }
            Node::Group(children) => {
                for child in children {
                    self.apply(child);
                }
            }
        }
    }
}

/// A compiled `modifier/martian` configuration: what to do to the outgoing
/// request and to the response coming back.
///
/// Cheap to clone (the trees are shared). Build it once with
/// [`Modifiers::try_from_config`] or [`Modifiers::from_config`]; apply it with
/// [`Modifiers::modify_request`] and [`Modifiers::modify_response`], or
/// through [`ModifyHeadersLayer`](crate::ModifyHeadersLayer).
#[derive(Clone)]
pub struct Modifiers {
    request: Option<Arc<Node>>,
    response: Option<Arc<Node>>,
    response_needs_request: bool,
}

impl Modifiers {
    pub(crate) fn new(request: Option<Node>, response: Option<Node>) -> Self {
        let response_needs_request = response.as_ref().is_some_and(Node::needs_request);
        Self {
            request: request.map(Arc::new),
            response: response.map(Arc::new),
            response_needs_request,
        }
    }

    /// Compiles the object found under `modifier/martian`: one modifier
    /// object whose single key is the modifier type (`header.Modifier`,
    /// `fifo.Group`, ...).
    ///
    /// A malformed modifier (unknown type, missing or mistyped field, bad
    /// regex, bad base64, invalid header name or value, unknown or
    /// unsupported scope) is an error naming its JSON path relative to the
    /// given value, e.g. `["fifo.Group"].modifiers[2]["header.Modifier"].name`.
    /// Error messages never repeat a header or query value.
    pub fn try_from_config(config: &Value) -> Result<Self, ConfigError> {
        crate::config::compile(config)
    }

    /// Compiles a typed configuration (what [`Modifiers::try_from_config`]
    /// deserializes). What serde cannot check is checked here, with the
    /// same paths: header names and values, regexes, base64, URL parts,
    /// scopes.
    ///
    /// ```
    /// use switchboard_header_modifier::{MartianConfig, Modifiers, Scope};
    ///
    /// let config = MartianConfig::set_header("X-Api-Key", "k-123").in_scope(&[Scope::Request]);
    /// let modifiers = Modifiers::from_config(&config).unwrap();
    /// assert!(modifiers.has_request_modifiers() && !modifiers.has_response_modifiers());
    ///
    /// let bad = MartianConfig::set_header("Content-Length", "1");
    /// let error = Modifiers::from_config(&bad).unwrap_err();
    /// assert_eq!(error.path, r#"["header.Modifier"].name"#);
    /// ```
    pub fn from_config(config: &MartianConfig) -> Result<Self, ConfigError> {
        crate::config::compile_typed(config)
    }

    /// The same compiled modifiers, restricted to the request scope.
    #[must_use]
    pub fn request_only(&self) -> Self {
        Self {
            request: self.request.clone(),
            response: None,
            response_needs_request: false,
        }
    }

    /// The same compiled modifiers, restricted to the response scope.
    #[must_use]
    pub fn response_only(&self) -> Self {
        Self {
            request: None,
            response: self.response.clone(),
            response_needs_request: self.response_needs_request,
        }
    }

    /// Whether anything applies to the outgoing request.
    pub fn has_request_modifiers(&self) -> bool {
        self.request.is_some()
    }

    /// Whether anything applies to the response.
    pub fn has_response_modifiers(&self) -> bool {
        self.response.is_some()
    }

    /// Whether [`Modifiers::modify_response`] looks at the request
    /// (a `header.RegexFilter` or `querystring.Filter` in response scope).
    pub fn response_needs_request(&self) -> bool {
        self.response_needs_request
    }

    /// Applies the request-scope modifiers to a request head.
    ///
    /// Returns the new body when a `body.Modifier` replaced it; the headers
    /// (`Content-Length`, `Content-Type`, `Content-Encoding`) are already
    /// fixed for it.
    pub fn modify_request(&self, uri: &mut Uri, headers: &mut HeaderMap) -> Option<Bytes> {
        let node = self.request.as_deref()?;
        let mut target = Target {
            headers,
            uri: Some(uri),
            request: None,
            body: None,
        };
        target.apply(node);
        target.body
    }

    /// Applies the response-scope modifiers to a response's headers.
    /// `request_uri` and `request_headers` describe the request that
    /// produced the response (filters such as `querystring.Filter` check
    /// it).
    ///
    /// Returns the new body when a `body.Modifier` replaced it; the headers
    /// are already fixed for it.
    pub fn modify_response(
        &self,
        request_uri: &Uri,
        request_headers: &HeaderMap,
        headers: &mut HeaderMap,
    ) -> Option<Bytes> {
        let node = self.response.as_deref()?;
        let mut target = Target {
            headers,
            uri: None,
            request: Some((request_uri, request_headers)),
            body: None,
        };
        target.apply(node);
        target.body
    }
}

/// Stands in for a value in Debug output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// Debug output names modifiers and headers but never their values: header
// values are often credentials injected from the environment.
impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::SetHeader { name, .. } => f
                .debug_struct("header.Modifier")
                .field("name", name)
                .field("value", &Redacted)
                .finish(),
            Node::AppendHeader { name, .. } => f
                .debug_struct("header.Append")
                .field("name", name)
                .field("value", &Redacted)
                .finish(),
            Node::CopyHeader { from, to } => f
                .debug_struct("header.Copy")
                .field("from", from)
                .field("to", to)
                .finish(),
            Node::RemoveHeaders(names) => f
                .debug_struct("header.Blacklist")
                .field("names", names)
                .finish(),
            Node::SetQuery { name, .. } => f
                .debug_struct("querystring.Modifier")
                .field("name", name)
                .field("value", &Redacted)
                .finish(),
            Node::SetUrl(parts) => f
                .debug_struct("url.Modifier")
                .field("scheme", &parts.scheme)
                .field("host", &parts.authority)
                .field("path", &parts.path)
                .field("query", &parts.query.as_ref().map(|_| Redacted))
                .finish(),
            Node::SetBody { body, content_type } => f
                .debug_struct("body.Modifier")
                .field("contentType", content_type)
                .field("body_len", &body.len())
                .finish(),
            Node::Filter {
                condition,
                then,
                otherwise,
            } => f
                .debug_struct("Filter")
                .field("condition", condition)
                .field("modifier", then)
                .field("else", otherwise)
                .finish(),
            Node::Group(children) => f.debug_list().entries(children).finish(),
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Header { name, value } => f
                .debug_struct("header.Filter")
                .field("name", name)
                .field("value", &value.as_ref().map(|_| Redacted))
                .finish(),
            Condition::HeaderRegex { name, regex } => f
                .debug_struct("header.RegexFilter")
                .field("header", name)
                .field("regex", &regex.as_str())
                .finish(),
            Condition::Query { name, value } => f
                .debug_struct("querystring.Filter")
                .field("name", name)
                .field("value", &value.as_ref().map(|_| Redacted))
                .finish(),
        }
    }
}

impl fmt::Debug for Modifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Modifiers")
            .field("request", &self.request)
            .field("response", &self.response)
            .finish()
    }
}
