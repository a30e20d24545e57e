//! Route validation: the gateway's own paths, endpoint paths and methods,
//! and the clash check of every path the router will hold.

use http::Method;

/// A health path the router can mount and no endpoint can shadow.
pub(super) fn validate_health_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("health_path {path:?} must start with '/'"));
    }
    if path.contains(['{', '}', '*', '?', '#', ':'])
        || path.split('/').any(|s| s == "." || s == "..")
    {
        return Err(format!(
            "health_path {path:?} must be a literal path (no {{params}}, ':', wildcards, query or dot segments)"
        ));
    }
    if path.starts_with("/__echo") || path.starts_with("/__debug") {
        return Err(format!("health_path {path:?} is reserved for the gateway"));
    }
    Ok(())
}

/// Whether a normalised host is this gateway (loopback on its own port).
pub(super) fn is_self_host(host: &str, port: u16) -> bool {
    let Ok(uri) = host.parse::<http::Uri>() else {
        return false;
    };
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let host_port = uri.port_u16().unwrap_or(default_port);
    let name = uri.host().unwrap_or_default();
    let loopback = matches!(name, "localhost" | "0.0.0.0" | "[::1]" | "::1" | "[::]")
        || name.starts_with("127.");
    loopback && host_port == port
}

/// A path with its parameter names erased: two paths of the same shape
/// clash in the router.
pub(super) fn route_shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn validate_path(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!("endpoint {path:?} must start with '/'"));
    }
    if path.starts_with("/__health") || path.starts_with("/__echo") || path.starts_with("/__debug")
    {
        return Err(format!("endpoint {path:?} is reserved for the gateway"));
    }
    let mut params = Vec::new();
    for segment in path.split('/').skip(1) {
        if let Some(inner) = segment.strip_prefix('{') {
            let name = inner
                .strip_suffix('}')
                .ok_or_else(|| format!("segment {segment:?} must be a whole {{param}}"))?;
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!("parameter {segment:?} has an invalid name"));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("parameter {name:?} appears twice"));
            }
            params.push(name.to_owned());
        } else if segment.contains(['{', '}', '*']) {
            return Err(format!(
                "segment {segment:?} must be a literal or a whole {{param}}"
            ));
        } else if segment == "." || segment == ".." {
            return Err("endpoint paths must not contain '.' or '..' segments".to_owned());
        }
    }
    Ok(params)
}

pub(super) fn parse_method(method: &str) -> Result<Method, String> {
    let upper = method.to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
            Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid method {method:?}"))
        }
        _ => Err(format!(
            "method {method:?} is not supported (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)"
        )),
    }
}

/// The paths the router will hold, in a throwaway `matchit` router, so that
/// a clash is a config error naming both paths (axum would panic).
#[derive(Default)]
pub(super) struct RouteCheck {
    router: matchit::Router<String>,
}

impl RouteCheck {
    /// A path the gateway serves itself.
    pub(super) fn reserve(&mut self, path: &str) {
        // The gateway's own paths never clash with each other.
        let _ = self.router.insert(path, path.to_owned());
    }

    /// An endpoint path; the message names what it clashes with.
    pub(super) fn insert(&mut self, path: &str) -> Result<(), String> {
        self.router
            .insert(path, path.to_owned())
            .map_err(|error| match error {
                matchit::InsertError::Conflict { with } => {
                    format!("path {path:?} clashes with {with:?}")
                }
                other => format!("path {path:?} cannot be routed: {other}"),
            })
    }
}
