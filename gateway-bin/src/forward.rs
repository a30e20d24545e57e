//! Zero-trust forwarding: which client headers and query strings reach a
//! backend, and the hop-by-hop headers that never do.

use http::header::{self, HeaderMap, HeaderName};
use switchboard_core::krakend::{decode_query_component, is_hop_by_hop};

/// Which client headers an endpoint forwards, decided at load: what a
/// request pays is one pass over the names that may go.
#[derive(Clone, Debug)]
pub(crate) enum HeaderFilter {
    /// `["*"]`: every header but those that never cross a proxy.
    All,
    Only {
        /// The names as listed (for `{input_headers.X}` checks).
        listed: Vec<HeaderName>,
        /// The listed names that may actually go: never `Host`,
        /// `Content-Length`, `Content-Type` (always sent) or hop-by-hop.
        forward: Vec<HeaderName>,
    },
}

/// Headers a backend request never takes from the client as they are:
/// hop-by-hop ones, `Host`, `Content-Length` (the body sets its own) and
/// `Content-Type` (copied first, always).
fn never_copied(name: &HeaderName) -> bool {
    *name == header::HOST
        || *name == header::CONTENT_LENGTH
        || *name == header::CONTENT_TYPE
        || is_hop_by_hop(name.as_str())
}

impl HeaderFilter {
    pub(crate) fn new(names: &[String]) -> Result<Self, String> {
        if names.iter().any(|n| n == "*") {
            return Ok(Self::All);
        }
        let listed = names
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("invalid header name {n:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut forward: Vec<HeaderName> = Vec::new();
        for name in &listed {
            if !never_copied(name) && !forward.contains(name) {
                forward.push(name.clone());
            }
        }
        Ok(Self::Only { listed, forward })
    }

    pub(crate) fn allows(&self, lowercase_name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only { listed, .. } => listed.iter().any(|n| n.as_str() == lowercase_name),
        }
    }

    /// The headers a backend request starts with: `Content-Type` always,
    /// the listed ones, never hop-by-hop (nor what `Connection` names),
    /// `Host` or `Content-Length` (the body sets its own length).
    pub(crate) fn apply(&self, client: &HeaderMap) -> HeaderMap {
        // Room for what the proxy adds after (`X-Forwarded-*`, `User-Agent`
        // or `X-Forwarded-Via`, `Accept-Encoding`, `Host`, the body's
        // length): the map is not grown per request.
        const ADDED: usize = 7;
        let mut out = HeaderMap::with_capacity(
            ADDED
                + match self {
                    Self::All => client.len(),
                    Self::Only { forward, .. } => forward.len() + 1,
                },
        );
        if let Some(ct) = client.get(header::CONTENT_TYPE) {
            out.insert(header::CONTENT_TYPE, ct.clone());
        }
        match self {
            Self::All => {
                let connection = client.contains_key(header::CONNECTION);
                for (name, value) in client {
                    if never_copied(name) || (connection && named_by_connection(client, name)) {
                        continue;
                    }
                    out.append(name.clone(), value.clone());
                }
            }
            Self::Only { forward, .. } => {
                for name in forward {
                    for value in client.get_all(name) {
                        out.append(name.clone(), value.clone());
                    }
                }
            }
        }
        out
    }
}

/// Whether a `Connection` header of `client` names `name` (it is then
/// hop-by-hop for this request).
fn named_by_connection(client: &HeaderMap, name: &HeaderName) -> bool {
    client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
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
            Self::Only(names) => {
                let mut out = String::new();
                for pair in raw.split('&') {
                    let key = pair.split('=').next().unwrap_or_default();
                    if names.iter().any(|n| *n == decode_query_component(key)) {
                        if !out.is_empty() {
                            out.push('&');
                        }
                        out.push_str(pair);
                    }
                }
                out
            }
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
