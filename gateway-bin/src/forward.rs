//! Zero-trust forwarding: which client headers and query strings reach a
//! backend, and the hop-by-hop headers that never do.

use http::header::{self, HeaderMap, HeaderName};
use switchboard_core::krakend::{HOP_BY_HOP, decode_query_component, strip_hop_by_hop};

/// Which client headers an endpoint forwards.
#[derive(Clone, Debug)]
pub(crate) enum HeaderFilter {
    All,
    Only(Vec<HeaderName>),
}

impl HeaderFilter {
    pub(crate) fn new(names: &[String]) -> Result<Self, String> {
        if names.iter().any(|n| n == "*") {
            return Ok(Self::All);
        }
        names
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("invalid header name {n:?}"))
            })
            .collect::<Result<_, _>>()
            .map(Self::Only)
    }

    pub(crate) fn allows(&self, lowercase_name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|n| n.as_str() == lowercase_name),
        }
    }

    /// The headers a backend request starts with: `Content-Type` always,
    /// the listed ones, never hop-by-hop, `Host` or `Content-Length` (the
    /// body sets its own length).
    pub(crate) fn apply(&self, client: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(8);
        if let Some(ct) = client.get(header::CONTENT_TYPE) {
            out.insert(header::CONTENT_TYPE, ct.clone());
        }
        match self {
            Self::All => {
                for (name, value) in client {
                    out.append(name.clone(), value.clone());
                }
                strip_hop_by_hop(&mut out);
                out.remove(header::HOST);
                out.remove(header::CONTENT_LENGTH);
            }
            Self::Only(names) => {
                for name in names {
                    if *name == header::HOST
                        || *name == header::CONTENT_LENGTH
                        || HOP_BY_HOP.contains(name)
                        || *name == header::CONTENT_TYPE
                    {
                        continue;
                    }
                    for value in client.get_all(name) {
                        out.append(name.clone(), value.clone());
                    }
                }
            }
        }
        out
    }
}

/// Which client query strings an endpoint forwards.
#[derive(Clone, Debug)]
pub(crate) enum QueryFilter {
    All,
    Only(Vec<String>),
}

impl QueryFilter {
    pub(crate) fn new(names: &[String]) -> Self {
        if names.iter().any(|n| n == "*") {
            Self::All
        } else {
            Self::Only(names.to_vec())
        }
    }

    /// The forwarded part of a raw query string, still encoded.
    pub(crate) fn apply(&self, raw_query: Option<&str>) -> String {
        let Some(raw) = raw_query else {
            return String::new();
        };
        match self {
            Self::All => raw.to_owned(),
            Self::Only(names) if names.is_empty() => String::new(),
            Self::Only(names) => raw
                .split('&')
                .filter(|pair| {
                    let key = pair.split('=').next().unwrap_or_default();
                    let key = decode_query_component(key);
                    names.iter().any(|n| *n == key)
                })
                .collect::<Vec<_>>()
                .join("&"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::krakend::query_value;

    #[test]
    fn only_listed_headers_pass() {
        let mut client = HeaderMap::new();
        client.insert("authorization", "Bearer client".parse().unwrap());
        client.insert("x-llm", "openai".parse().unwrap());
        client.insert("content-type", "application/json".parse().unwrap());
        client.insert("connection", "close".parse().unwrap());
        let out = HeaderFilter::new(&["X-Llm".to_owned()])
            .unwrap()
            .apply(&client);
        assert_eq!(out.len(), 2);
        assert_eq!(out["x-llm"], "openai");
        assert!(out.get("authorization").is_none());
    }

    #[test]
    fn wildcard_still_drops_hop_by_hop() {
        let mut client = HeaderMap::new();
        client.insert("connection", "x-secret-hop".parse().unwrap());
        client.insert("x-secret-hop", "1".parse().unwrap());
        client.insert("te", "trailers".parse().unwrap());
        client.insert("host", "gateway".parse().unwrap());
        client.insert("x-ok", "1".parse().unwrap());
        let out = HeaderFilter::new(&["*".to_owned()]).unwrap().apply(&client);
        assert_eq!(out.len(), 1);
        assert_eq!(out["x-ok"], "1");
    }

    #[test]
    fn query_filter_is_case_sensitive() {
        let filter = QueryFilter::new(&["page".to_owned()]);
        assert_eq!(filter.apply(Some("page=1&Page=2&key=s")), "page=1");
        assert_eq!(
            query_value(Some("a=1&b=x+y%21"), "b").as_deref(),
            Some("x y!")
        );
    }
}
