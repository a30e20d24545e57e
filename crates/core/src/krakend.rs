//! Request data in the shapes KrakenD gives its components, written once:
//! Go's canonical header names, header and query maps of lists, the
//! capitalised route parameters, and the hop-by-hop headers that never
//! cross a proxy.

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::header::{self, HeaderMap, HeaderName};

/// Go's canonical form of a header name (`textproto.CanonicalMIMEHeaderKey`):
/// the first letter and every letter after a `-` upper case, the rest lower
/// case. `x-llm` and `X-LLM` both give `X-Llm`. A name with a space or a
/// byte outside printable ASCII is returned unchanged, as Go does.
pub fn canonical_header_name(name: &str) -> String {
    if name
        .bytes()
        .any(|b| b == b' ' || !b.is_ascii() || b.is_ascii_control())
    {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// Headers as a map of lists under canonical names, in name order. Values
/// that are not UTF-8 are converted lossily.
pub fn header_lists(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        lists
            .entry(canonical_header_name(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    lists
}

/// The decoded pairs of a raw query string, as Go's `url.ParseQuery` reads
/// them (`+` is a space, percent escapes decoded, invalid UTF-8 replaced).
pub fn query_pairs(raw_query: Option<&str>) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes())
}

/// Decodes one query component (a key or a value already split off its
/// pair): `+` is a space, then percent escapes, invalid UTF-8 replaced.
pub fn decode_query_component(component: &str) -> Cow<'_, str> {
    if component.contains('+') {
        let spaced = component.replace('+', " ");
        Cow::Owned(
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        percent_encoding::percent_decode_str(component).decode_utf8_lossy()
    }
}

/// A query string as a map of lists, decoded, in name order.
pub fn query_lists(raw_query: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in query_pairs(raw_query) {
        lists
            .entry(key.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    lists
}

/// The first decoded value of one query parameter (case-sensitive name).
pub fn query_value(raw_query: Option<&str>, name: &str) -> Option<String> {
    query_pairs(raw_query).find_map(|(key, value)| (key == name).then(|| value.into_owned()))
}

/// KrakenD's name for a route parameter in templates and policies: the
/// first letter upper case (`{nick}` is `Nick`).
pub fn capitalise(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Headers that belong to one connection and never cross a proxy
/// (RFC 9110 §7.6.1, plus the legacy `Proxy-Connection` and `Keep-Alive`).
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a (lower-case) header name is in [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those a `Connection` header names.
/// One pass over the names first, so the usual map that has none is not
/// touched.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_follow_go() {
        assert_eq!(canonical_header_name("x-llm"), "X-Llm");
        assert_eq!(canonical_header_name("X-LLM"), "X-Llm");
        assert_eq!(canonical_header_name("content-type"), "Content-Type");
        assert_eq!(canonical_header_name("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header_name("a b"), "a b");
    }

    #[test]
    fn headers_group_values() {
        let mut headers = HeaderMap::new();
        headers.append("x-llm", "openai".parse().unwrap());
        headers.append("x-llm", "gemini".parse().unwrap());
        let lists = header_lists(&headers);
        assert_eq!(lists["X-Llm"], vec!["openai", "gemini"]);
    }

    #[test]
    fn query_strings() {
        let lists = query_lists(Some("a=1&a=2&b=x%20y&c&d=x+y%21"));
        assert_eq!(lists["a"], vec!["1", "2"]);
        assert_eq!(lists["b"], vec!["x y"]);
        assert_eq!(lists["c"], vec![""]);
        assert_eq!(lists["d"], vec!["x y!"]);
        assert_eq!(
            query_value(Some("a=1&b=x+y%21"), "b").as_deref(),
            Some("x y!")
        );
        assert_eq!(query_value(Some("B=1"), "b"), None);
        assert_eq!(query_value(None, "b"), None);
        assert_eq!(decode_query_component("a+b%3D%ZZ"), "a b=%ZZ");
    }

    #[test]
    fn capitalised_params() {
        assert_eq!(capitalise("nick"), "Nick");
        assert_eq!(capitalise(""), "");
    }

    #[test]
    fn hop_by_hop_list_and_connection_names() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("connection", "x-secret-hop".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("upgrade", "h2c".parse().unwrap());
        headers.insert("x-ok", "1".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-ok"], "1");
    }
}
