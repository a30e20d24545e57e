//! Request data in the shapes KrakenD gives policies (from
//! `switchboard_core::krakend`), and the header names policies read.

pub(crate) use switchboard_core::krakend::{canonical_header_name, header_lists, query_lists};

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
    fn referenced_names() {
        let names = referenced_header_names([
            "req_headers['x-llm'][0] in ['a'] && req_headers.Authorization[0] != ''",
            "hasHeader(\"X-Tenant\") && req_headers[\"X-LLM\"][0] == 'x'",
        ]);
        assert_eq!(names, vec!["X-Llm", "Authorization", "X-Tenant"]);
    }
}
