//! Taking the key out of a request, so that it never travels further.

use http::{HeaderMap, HeaderName, Uri};

/// Where an endpoint expects the key.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    Header(HeaderName),
    Query(String),
}

/// Why no single key could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeError {
    Missing,
    Ambiguous,
}

/// Removes every copy of the key from the request and returns it. All
/// copies go even when the request is then refused.
pub(crate) fn take_key(
    location: &Location,
    headers: &mut HeaderMap,
    uri: &mut Uri,
) -> Result<Vec<u8>, TakeError> {
    match location {
        Location::Header(name) => {
            let mut values: Vec<_> = match headers.entry(name) {
                http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
                http::header::Entry::Vacant(_) => Vec::new(),
            };
            match values.len() {
                0 => Err(TakeError::Missing),
                1 => {
                    let value = values.remove(0);
                    let key = strip_bearer(value.as_bytes());
                    if key.is_empty() {
                        Err(TakeError::Missing)
                    } else {
                        Ok(key.to_vec())
                    }
                }
                _ => Err(TakeError::Ambiguous),
            }
        }
        Location::Query(name) => take_query_param(name, uri),
    }
}

fn strip_bearer(value: &[u8]) -> &[u8] {
    let value = value.trim_ascii();
    match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => value,
    }
}

fn take_query_param(name: &str, uri: &mut Uri) -> Result<Vec<u8>, TakeError> {
    let Some(query) = uri.query() else {
        return Err(TakeError::Missing);
    };
    let mut found = Vec::new();
    let mut kept = Vec::new();
    for segment in query.split('&') {
        let pair = switchboard_core::krakend::query_pairs(Some(segment)).next();
        match pair {
            Some((key, value)) if key == name => found.push(value.into_owned()),
            _ => kept.push(segment),
        }
    }
    if found.is_empty() {
        return Err(TakeError::Missing);
    }
    let path = uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| TakeError::Ambiguous)?);
    *uri = Uri::from_parts(parts).map_err(|_| TakeError::Ambiguous)?;
    if found.len() > 1 {
        return Err(TakeError::Ambiguous);
    }
    let key = found.remove(0);
    if key.is_empty() {
        return Err(TakeError::Missing);
    }
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_key_with_or_without_bearer() {
        let location = Location::Header(http::header::AUTHORIZATION);
        let mut uri = Uri::from_static("/x");
        for value in ["Bearer k1", "bearer  k1", "k1"] {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(take_key(&location, &mut headers, &mut uri).unwrap(), b"k1");
            assert!(headers.is_empty());
        }
        let mut headers = HeaderMap::new();
        assert_eq!(
            take_key(&location, &mut headers, &mut uri),
            Err(TakeError::Missing)
        );
        headers.append(http::header::AUTHORIZATION, "a".parse().unwrap());
        headers.append(http::header::AUTHORIZATION, "b".parse().unwrap());
        assert_eq!(
            take_key(&location, &mut headers, &mut uri),
            Err(TakeError::Ambiguous)
        );
        assert!(headers.is_empty());
    }

    #[test]
    fn query_key_is_removed() {
        let location = Location::Query("key".into());
        let mut headers = HeaderMap::new();
        let mut uri = Uri::from_static("http://h/p?a=1&key=s%2Bx&b=%20");
        assert_eq!(take_key(&location, &mut headers, &mut uri).unwrap(), b"s+x");
        assert_eq!(uri.to_string(), "http://h/p?a=1&b=%20");
        let mut uri = Uri::from_static("/p?key=abc");
        assert_eq!(take_key(&location, &mut headers, &mut uri).unwrap(), b"abc");
        assert_eq!(uri.to_string(), "/p");
        let mut uri = Uri::from_static("/p?key=a&key=b");
        assert_eq!(
            take_key(&location, &mut headers, &mut uri),
            Err(TakeError::Ambiguous)
        );
        assert_eq!(uri.to_string(), "/p");
        let mut uri = Uri::from_static("/p?other=1");
        assert_eq!(
            take_key(&location, &mut headers, &mut uri),
            Err(TakeError::Missing)
        );
    }
}
