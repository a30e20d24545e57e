//! Small typed structs that layers pass to each other in request extensions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// Request headers a script set for the backends: KrakenD's
/// `modifier/lua-proxy` changes the proxy's request after `input_headers`
/// filtered it, so what it sets reaches every backend, whatever
/// `input_headers` says. A name with no value removes the header.
#[derive(Clone, Debug, Default)]
pub struct ScriptHeaders(pub Arc<Vec<(http::HeaderName, Vec<http::HeaderValue>)>>);

impl ScriptHeaders {
    /// Applies the changes to the headers a backend gets.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (name, values) in self.0.iter() {
            headers.remove(name);
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

/// The `{param}` values the endpoint path matched, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteParams {
    params: Arc<BTreeMap<String, String>>,
}

impl RouteParams {
    /// The value of one parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// All parameters, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no parameter was matched.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

impl FromIterator<(String, String)> for RouteParams {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self {
            params: Arc::new(iter.into_iter().collect()),
        }
    }
}

/// The claims of a validated JWT.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    claims: Arc<Value>,
}

impl Claims {
    /// Wraps the claims object of a validated token.
    pub fn new(claims: Value) -> Self {
        Self {
            claims: Arc::new(claims),
        }
    }

    /// The whole claims object.
    pub fn value(&self) -> &Value {
        &self.claims
    }

    /// A claim by dot path (`realm_access.roles`); a numeric segment indexes
    /// an array.
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        lookup_path(&self.claims, path)
    }
}

/// Looks a dot path (`a.b.0.c`) up in a JSON value.
pub fn lookup_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |current, segment| match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// The client's body, parsed as JSON once so that later layers need not parse
/// it again. A layer that rewrites the body must replace or remove it.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonBody {
    value: Arc<Value>,
}

impl JsonBody {
    /// Wraps a parsed body.
    pub fn new(value: Value) -> Self {
        Self {
            value: Arc::new(value),
        }
    }

    /// The parsed body.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The parsed body by value: moved out when this is the last reference
    /// (a layer that replaces the body removed it from the extensions
    /// first), copied otherwise.
    pub fn into_value(self) -> Value {
        Arc::try_unwrap(self.value).unwrap_or_else(|shared| (*shared).clone())
    }
}

/// The address of the client that opened the connection (the server puts
/// it in every request's extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Who an API key is: a stable, non-secret id of the key (a digest prefix)
/// and the role it was admitted with. Put in the extensions by the API-key
/// layer for quotas and rate limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyIdentity {
    id: Arc<str>,
    role: Arc<str>,
}

impl ApiKeyIdentity {
    /// An identity.
    pub fn new(id: impl Into<Arc<str>>, role: impl Into<Arc<str>>) -> Self {
        Self {
            id: id.into(),
            role: role.into(),
        }
    }

    /// The key's id (never the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The role the key was admitted with (`ANY` when the endpoint asks
    /// for none).
    pub fn role(&self) -> &str {
        &self.role
    }
}

/// The most bytes a layer may buffer of this request's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    /// The limit a request's extensions carry, or the default.
    pub fn of(extensions: &http::Extensions) -> usize {
        extensions.get::<BodyLimit>().copied().unwrap_or_default().0
    }
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self(crate::DEFAULT_BODY_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_dot_paths() {
        let claims = Claims::new(json!({"a": {"b": ["x", {"c": 1}]}, "m": "gemini"}));
        assert_eq!(claims.get_path("m"), Some(&json!("gemini")));
        assert_eq!(claims.get_path("a.b.1.c"), Some(&json!(1)));
        assert_eq!(claims.get_path("a.b.9"), None);
        assert_eq!(claims.get_path("a.x"), None);
    }
}
