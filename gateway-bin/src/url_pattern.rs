//! `url_pattern` placeholders: parsing at load time, expansion per request.
//!
//! A substituted value is always exactly one path segment (or one query
//! value): it is percent-encoded, `.`, `..` and the empty string are refused,
//! and the expanded path is checked to keep the pattern's static prefix.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Everything but RFC 3986 unreserved characters is encoded, so a value can
/// never carry `/`, `?`, `#` or `%` into the URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where a placeholder takes its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `{name}`: an endpoint path parameter.
    Param(String),
    /// `{input_headers.X-Name}`: a client header (name stored lowercase).
    Header(String),
    /// `{input_query_strings.name}`: a client query parameter.
    Query(String),
    /// `{jwt.a.b}` / `{JWT.a.b}`: a claim of the validated token.
    Jwt(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Source),
}

/// A parsed `url_pattern`.
#[derive(Clone, Debug)]
pub(crate) struct UrlPattern {
    path: Vec<Piece>,
    query: Vec<Piece>,
    has_query: bool,
    /// The literal path before the first placeholder.
    static_prefix: String,
}

/// The values a request offers to placeholders.
pub(crate) trait Values {
    fn param(&self, name: &str) -> Option<String>;
    fn header(&self, lowercase_name: &str) -> Option<String>;
    fn query(&self, name: &str) -> Option<String>;
    fn claim(&self, path: &str) -> Result<Option<String>, String>;
}

impl UrlPattern {
    /// Parses a pattern; errors name the problem.
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("url_pattern {pattern:?} must start with '/'"));
        }
        if pattern.contains('#') {
            return Err("url_pattern must not contain a fragment ('#')".to_owned());
        }
        let (path_part, query_part) = match pattern.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (pattern, None),
        };
        let path = parse_pieces(path_part)?;
        for piece in &path {
            if let Piece::Text(text) = piece
                && text
                    .split('/')
                    .any(|segment| segment == "." || segment == "..")
            {
                return Err("url_pattern must not contain '.' or '..' segments".to_owned());
            }
        }
        let query = match query_part {
            Some(query) => parse_pieces(query)?,
            None => Vec::new(),
        };
        let static_prefix = match path.first() {
            Some(Piece::Text(text)) => {
                // Keep the prefix to the last complete segment.
                match (path.len() > 1, text.rfind('/')) {
                    (true, Some(i)) => text[..=i].to_owned(),
                    _ => text.clone(),
                }
            }
            _ => "/".to_owned(),
        };
        Ok(Self {
            path,
            query,
            has_query: query_part.is_some(),
            static_prefix,
        })
    }

    /// Every placeholder source in the pattern.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &Source> {
        self.path
            .iter()
            .chain(&self.query)
            .filter_map(|piece| match piece {
                Piece::Value(source) => Some(source),
                Piece::Text(_) => None,
            })
    }

    /// The literal path before the first placeholder.
    pub(crate) fn static_prefix(&self) -> &str {
        &self.static_prefix
    }

    /// The pattern with every placeholder replaced by `replacement`: used to
    /// find which endpoints a pattern may reach.
    pub(crate) fn path_with(&self, replacement: &str) -> String {
        self.path
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Value(_) => replacement,
            })
            .collect()
    }

    /// Expands the pattern into `path?query` (no query when the pattern has
    /// none). Errors are client errors (400) naming the placeholder.
    pub(crate) fn expand(&self, values: &dyn Values) -> Result<String, String> {
        let mut out = String::with_capacity(64);
        for piece in &self.path {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(source) => {
                    let value = resolve(source, values)?;
                    if value.is_empty() || value == "." || value == ".." {
                        return Err(format!(
                            "{} must not be empty, '.' or '..'",
                            describe(source)
                        ));
                    }
                    out.extend(utf8_percent_encode(&value, SEGMENT));
                }
            }
        }
        if !out.starts_with(&self.static_prefix)
            || out
                .split('/')
                .any(|segment| segment == "." || segment == "..")
        {
            return Err("the expanded path leaves the backend's path".to_owned());
        }
        if self.has_query {
            out.push('?');
            for piece in &self.query {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Value(source) => {
                        let value = resolve(source, values)?;
                        out.extend(utf8_percent_encode(&value, SEGMENT));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn resolve(source: &Source, values: &dyn Values) -> Result<String, String> {
    let value = match source {
        Source::Param(name) => values.param(name),
        Source::Header(name) => values.header(name),
        Source::Query(name) => values.query(name),
        Source::Jwt(path) => values.claim(path)?,
    };
    value.ok_or_else(|| format!("{} is missing", describe(source)))
}

fn describe(source: &Source) -> String {
    match source {
        Source::Param(name) => format!("path parameter '{name}'"),
        Source::Header(name) => format!("header '{name}'"),
        Source::Query(name) => format!("query string '{name}'"),
        Source::Jwt(path) => format!("JWT claim '{path}'"),
    }
}

fn parse_pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .map(|i| i + open)
            .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
        let name = &rest[open + 1..close];
        pieces.push(Piece::Value(parse_source(name)?));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched '}}' in {text:?}"));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

fn parse_source(name: &str) -> Result<Source, String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let source = if let Some(header) = name.strip_prefix("input_headers.") {
        Source::Header(header.to_ascii_lowercase())
    } else if let Some(query) = name.strip_prefix("input_query_strings.") {
        Source::Query(query.to_owned())
    } else if let Some(claim) = name
        .strip_prefix("jwt.")
        .or_else(|| name.strip_prefix("JWT."))
    {
        Source::Jwt(claim.to_owned())
    } else if name.contains('.') && !crate::strategy::is_response_placeholder(name) {
        return Err(format!(
            "placeholder {{{name}}} is not supported (use {{param}}, {{input_headers.X}}, \
             {{input_query_strings.x}} or {{jwt.claim}})"
        ));
    } else {
        Source::Param(name.to_owned())
    };
    // A claim name may be a URL (`{JWT.http://example.com/custom}`), as
    // namespaced claims are.
    let claim_ok = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '_' | '-' | '.' | ':' | '/' | '~' | '%' | '+' | '@' | '#')
            })
    };
    let ok = match &source {
        Source::Param(s) | Source::Header(s) | Source::Query(s) => valid(s),
        Source::Jwt(s) => claim_ok(s),
    };
    if !ok {
        return Err(format!("placeholder {{{name}}} has an invalid name"));
    }
    Ok(source)
}

/// A claim as a placeholder value: strings as they are, numbers and booleans
/// printed; objects and arrays are refused.
pub(crate) fn claim_to_string(value: &Value, path: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("JWT claim '{path}' is not a single value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Map(HashMap<String, String>);

    impl Values for Map {
        fn param(&self, name: &str) -> Option<String> {
            self.0.get(&format!("p:{name}")).cloned()
        }
        fn header(&self, name: &str) -> Option<String> {
            self.0.get(&format!("h:{name}")).cloned()
        }
        fn query(&self, name: &str) -> Option<String> {
            self.0.get(&format!("q:{name}")).cloned()
        }
        fn claim(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(&format!("j:{path}")).cloned())
        }
    }

    fn values(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect())
    }

    #[test]
    fn expands_each_source() {
        let pattern = UrlPattern::parse(
            "/v1/{model}/{input_headers.X-Llm}/{jwt.a.b}?key=k&u={input_query_strings.u}",
        )
        .unwrap();
        let out = pattern
            .expand(&values(&[
                ("p:model", "gpt"),
                ("h:x-llm", "openai"),
                ("j:a.b", "c"),
                ("q:u", "x y"),
            ]))
            .unwrap();
        assert_eq!(out, "/v1/gpt/openai/c?key=k&u=x%20y");
        assert_eq!(pattern.static_prefix(), "/v1/");
    }

    #[test]
    fn hostile_values_stay_one_segment() {
        let pattern = UrlPattern::parse("/_llm/{input_headers.X-Llm}").unwrap();
        for hostile in ["../x", "a/b", "a?b", "a#b", "%2e%2e", "..%2f", "\\..\\"] {
            let out = pattern.expand(&values(&[("h:x-llm", hostile)])).unwrap();
            let rest = out.strip_prefix("/_llm/").unwrap();
            assert!(!rest.contains(['/', '?', '#']), "{hostile} -> {out}");
            assert!(!rest.contains("%2e%2e"), "{hostile} -> {out}");
        }
        for refused in ["", ".", ".."] {
            assert!(pattern.expand(&values(&[("h:x-llm", refused)])).is_err());
        }
        assert!(pattern.expand(&values(&[])).is_err());
    }

    #[test]
    fn invalid_patterns() {
        assert!(UrlPattern::parse("v1").is_err());
        assert!(UrlPattern::parse("/a/{b").is_err());
        assert!(UrlPattern::parse("/a/{other.y}").is_err());
        // A sequential proxy's answer fields (checked against the strategy later).
        assert!(UrlPattern::parse("/a/{resp0_x.y}").is_ok());
        assert!(UrlPattern::parse("/a/../b").is_err());
        assert!(UrlPattern::parse("/a/{}").is_err());
        let pattern = UrlPattern::parse("/p/{JWT.http://example.com/custom}").unwrap();
        assert_eq!(
            pattern.sources().next(),
            Some(&Source::Jwt("http://example.com/custom".to_owned()))
        );
        let out = pattern
            .expand(&values(&[("j:http://example.com/custom", "v/1")]))
            .unwrap();
        assert_eq!(out, "/p/v%2F1");
        assert!(UrlPattern::parse("/p/{JWT.a b}").is_err());
    }
}
