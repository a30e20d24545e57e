//! Query string reading and rewriting, with Go's `url.Values` decoding
//! (`+` is a space) so filters match what KrakenD matches.

use std::borrow::Cow;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use switchboard_core::krakend::decode_query_component as decode;

/// Everything but `A-Z a-z 0-9 - _ . ~` is escaped, as Go's
/// `url.QueryEscape` does (a space becomes `+` separately).
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Encodes one query component the way Go's `url.QueryEscape` does.
fn encode(component: &str) -> String {
    utf8_percent_encode(component, QUERY_ESCAPE)
        .to_string()
        .replace("%20", "+")
}

fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether the query has a parameter `name` (and, when given, one of its
/// values equals `value`).
pub(crate) fn has_param(query: Option<&str>, name: &str, value: Option<&str>) -> bool {
    let Some(query) = query else {
        return false;
    };
    pairs(query)
        .any(|(key, val)| decode(key) == name && value.is_none_or(|wanted| decode(val) == wanted))
}

/// Sets parameter `name` to `value`, replacing every existing value. Other
/// parameters keep their order and their original encoding.
pub(crate) fn set_param(query: Option<&str>, name: &str, value: &str) -> String {
    let replacement = format!("{}={}", encode(name), encode(value));
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut replaced = false;
    for raw in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let key = raw.split_once('=').map_or(raw, |(key, _)| key);
        if decode(key) == name {
            if !replaced {
                out.push(Cow::Owned(replacement.clone()));
                replaced = true;
            }
        } else {
            out.push(Cow::Borrowed(raw));
        }
    }
    if !replaced {
        out.push(Cow::Owned(replacement));
    }
    out.join("&")
}

/// The parts a `url.Modifier` may replace; `None` keeps the request's own.
#[derive(Clone, Default)]
pub(crate) struct UrlParts {
    pub(crate) scheme: Option<Scheme>,
    pub(crate) authority: Option<Authority>,
    pub(crate) path: Option<String>,
    pub(crate) query: Option<String>,
}

/// Rebuilds `uri` with a new path and/or query. Returns `false` (and leaves
/// the URI alone) if the result would not be a valid URI.
pub(crate) fn rewrite_uri(uri: &mut Uri, change: &UrlParts) -> bool {
    let mut parts = uri.clone().into_parts();
    if let Some(scheme) = &change.scheme {
        parts.scheme = Some(scheme.clone());
    }
    if let Some(authority) = &change.authority {
        parts.authority = Some(authority.clone());
    }
    // An absolute URI needs both; a host without scheme gets `http`, and a
    // scheme alone cannot turn an origin-form URI absolute.
    match (&parts.scheme, &parts.authority) {
        (None, Some(_)) => parts.scheme = Some(Scheme::HTTP),
        (Some(_), None) => parts.scheme = None,
        _ => {}
    }
    if change.path.is_some() || change.query.is_some() {
        let current = parts.path_and_query.as_ref();
        let path = change
            .path
            .as_deref()
            .unwrap_or_else(|| current.map_or("/", PathAndQuery::path));
        let query = change
            .query
            .as_deref()
            .or_else(|| current.and_then(PathAndQuery::query));
        let rebuilt = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        match PathAndQuery::try_from(rebuilt) {
            Ok(path_and_query) => parts.path_and_query = Some(path_and_query),
            Err(_) => return false,
        }
    } else if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    match Uri::from_parts(parts) {
        Ok(new) => {
            *uri = new;
            true
        }
        Err(_) => false,
    }
}

/// Replaces the query of `uri`, keeping everything else.
pub(crate) fn set_query(uri: &mut Uri, query: String) -> bool {
    rewrite_uri(
        uri,
        &UrlParts {
            query: Some(query),
            ..UrlParts::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_decoded_names_and_values() {
        assert!(has_param(Some("a=1&legacy=1"), "legacy", Some("1")));
        assert!(has_param(Some("q=hello+world"), "q", Some("hello world")));
        assert!(has_param(Some("q=%C3%A9"), "q", Some("é")));
        assert!(has_param(Some("flag"), "flag", None));
        assert!(!has_param(Some("legacy=2"), "legacy", Some("1")));
        assert!(!has_param(None, "legacy", None));
    }

    #[test]
    fn set_replaces_all_values_and_keeps_order() {
        assert_eq!(
            set_param(
                Some("currency=EUR&amount=55&amount=3&x=%2F"),
                "amount",
                "75"
            ),
            "currency=EUR&amount=75&x=%2F"
        );
        assert_eq!(set_param(None, "key", "a b&c"), "key=a+b%26c");
        assert_eq!(set_param(Some("a=1"), "b", "2"), "a=1&b=2");
    }

    #[test]
    fn rewrites_parts_of_a_uri() {
        let mut uri: Uri = "https://does-not-exist/neither?x=1".parse().unwrap();
        let change = UrlParts {
            scheme: Some(Scheme::HTTP),
            authority: Some("localhost:8080".parse().unwrap()),
            path: Some("/__echo/hello".to_owned()),
            query: Some("flag=true".to_owned()),
        };
        assert!(rewrite_uri(&mut uri, &change));
        assert_eq!(uri, "http://localhost:8080/__echo/hello?flag=true");

        let mut origin: Uri = "/a?b=1".parse().unwrap();
        let path_only = UrlParts {
            path: Some("/c".to_owned()),
            ..UrlParts::default()
        };
        assert!(rewrite_uri(&mut origin, &path_only));
        assert_eq!(origin, "/c?b=1");

        let mut origin: Uri = "/a".parse().unwrap();
        assert!(set_query(&mut origin, "k=v".to_owned()));
        assert_eq!(origin, "/a?k=v");
    }
}
