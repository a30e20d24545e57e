//! Request data in the shapes KrakenD gives policies: headers keyed by Go's
//! canonical MIME names, query strings as maps of lists.

use std::collections::BTreeMap;

use http::HeaderMap;

/// Go's canonical form of a header name (`textproto.CanonicalMIMEHeaderKey`):
/// the first letter and every letter after a `-` upper case, the rest lower
/// case. `x-llm` and `X-LLM` both give `X-Llm`. A name with a space or a
/// byte outside ASCII is returned unchanged, as Go does.
pub(crate) fn canonical_header_name(name: &str) -> String {
    if name
        .bytes()
        .any(|b| b == b' ' || !b.is_ascii() || b.is_ascii_control())
    {
        return name.to_owned();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Headers as a map of lists under canonical names. Values that are not
/// UTF-8 are converted lossily.
pub(crate) fn header_lists(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        lists
            .entry(canonical_header_name(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    lists
}

/// A query string as a map of lists, percent-decoded.
pub(crate) fn query_lists(query: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(query) = query {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            lists
                .entry(key.into_owned())
                .or_default()
                .push(value.into_owned());
        }
    }
    lists
}

/// Header names a set of policies reads as `req_headers['X']`,
/// `req_headers.X` or `hasHeader('X')`, canonical and deduplicated. Found
/// in the source text: best effort, for linting only.
pub(crate) fn referenced_header_names<'a>(
    sources: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
        regex::Regex::new(
            r#"req_headers\s*\[\s*(?:'([^']+)'|"([^"]+)")\s*\]|req_headers\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)|(?:has|get)Header\s*\(\s*(?:'([^']+)'|"([^"]+)")\s*\)"#,
        )
        .ok()
    });
    let Some(pattern) = PATTERNS.as_ref() else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    for source in sources {
        for captures in pattern.captures_iter(source) {
            if let Some(name) = captures.iter().skip(1).flatten().next() {
                let name = canonical_header_name(name.as_str());
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
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
        let lists = query_lists(Some("a=1&a=2&b=x%20y&c"));
        assert_eq!(lists["a"], vec!["1", "2"]);
        assert_eq!(lists["b"], vec!["x y"]);
        assert_eq!(lists["c"], vec![""]);
    }

    #[test]
    fn referenced_names() {
        let names = referenced_header_names([
            "req_headers['x-llm'][0] in ['a'] && req_headers.Authorization[0] != ''",
            "hasHeader(\"X-Tenant\") && req_headers[\"X-LLM\"][0] == 'x'",
        ]);
        assert_eq!(names, vec!["X-Llm", "Authorization", "X-Tenant"]);
    }
}
