//! A JWK set reduced to the keys usable with the configured algorithm, and
//! the lookup of a token's key in it.

use std::sync::Arc;
use std::time::Instant;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde_json::Value;

use crate::config::KeyIdentifyStrategy;

struct KeyEntry {
    kid: Option<String>,
    x5t: Option<String>,
    x5t_s256: Option<String>,
    key: Arc<DecodingKey>,
}

/// The verification keys in force.
pub(crate) struct KeySet {
    entries: Vec<KeyEntry>,
    loaded_at: Instant,
}

/// The result of looking a token's key up.
pub(crate) enum Lookup {
    /// The key to verify with.
    Found(Arc<DecodingKey>),
    /// The token names a key this set does not hold (a rotation may have
    /// happened: a refresh can help).
    Unknown,
    /// The token names no key and the set holds several: no refresh helps.
    Ambiguous,
}

impl KeySet {
    /// No keys yet (a remote set before its first download).
    pub(crate) fn empty() -> Self {
        Self {
            entries: Vec::new(),
            loaded_at: Instant::now(),
        }
    }

    /// Parses a JWK set document, keeping the keys usable with `alg`.
    /// Keys of other types or algorithms, encryption keys and keys this
    /// build cannot read are skipped; a set left with no key is an error.
    pub(crate) fn from_json(bytes: &[u8], alg: Algorithm) -> Result<Self, String> {
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JSON document: {e}"))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "not a JWK set: no `keys` array".to_owned())?;
        let mut entries = Vec::with_capacity(keys.len());
        let mut skipped = 0usize;
        for key in keys {
            match usable_key(key, alg) {
                Some(entry) => entries.push(entry),
                None => skipped += 1,
            }
        }
        if entries.is_empty() {
            return Err(format!(
                "the JWK set holds no key usable with {alg:?} ({skipped} skipped)"
            ));
        }
        if skipped > 0 {
            tracing::debug!(
                skipped,
                ?alg,
                "auth/validator: skipped JWKs not usable with the algorithm"
            );
        }
        Ok(Self {
            entries,
            loaded_at: Instant::now(),
        })
    }

    /// When the set was loaded.
    pub(crate) fn loaded_at(&self) -> Instant {
        self.loaded_at
    }

    /// How many keys the set holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Finds the key a token header names. Identifiers are compared as
    /// opaque strings, never used as paths or URLs.
    pub(crate) fn find(&self, header: &Header, strategy: KeyIdentifyStrategy) -> Lookup {
        if self.entries.is_empty() {
            return Lookup::Unknown;
        }
        let by_kid = || {
            header
                .kid
                .as_deref()
                .map(|kid| self.entries.iter().find(|e| e.kid.as_deref() == Some(kid)))
        };
        let by_x5t = || {
            header
                .x5t
                .as_deref()
                .map(|t| self.entries.iter().find(|e| e.x5t.as_deref() == Some(t)))
        };
        let by_x5t_s256 = || {
            header.x5t_s256.as_deref().map(|t| {
                self.entries
                    .iter()
                    .find(|e| e.x5t_s256.as_deref() == Some(t))
            })
        };
        let named = match strategy {
            KeyIdentifyStrategy::Kid => by_kid(),
            KeyIdentifyStrategy::X5t => by_x5t(),
            KeyIdentifyStrategy::X5tS256 => by_x5t_s256(),
            KeyIdentifyStrategy::KidX5t => match by_kid() {
                Some(Some(entry)) => Some(Some(entry)),
                from_kid => match by_x5t() {
                    None => from_kid,
                    from_x5t => from_x5t,
                },
            },
        };
        match named {
            Some(Some(entry)) => Lookup::Found(entry.key.clone()),
            Some(None) => Lookup::Unknown,
            // A token without an identifier is accepted only when the set
            // leaves no choice.
            None => match self.entries.as_slice() {
                [only] => Lookup::Found(only.key.clone()),
                _ => Lookup::Ambiguous,
            },
        }
    }
}

fn usable_key(value: &Value, alg: Algorithm) -> Option<KeyEntry> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    if let Some(key_alg) = jwk.common.key_algorithm {
        // KeyAlgorithm and Algorithm share their names.
        if format!("{key_alg:?}") != format!("{alg:?}") {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    if key.family() != alg.family() {
        return None;
    }
    Some(KeyEntry {
        kid: jwk.common.key_id,
        x5t: jwk.common.x509_sha1_fingerprint,
        x5t_s256: jwk.common.x509_sha256_fingerprint,
        key: Arc::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oct(kid: &str) -> Value {
        json!({"kty": "oct", "kid": kid, "k": "c2VjcmV0"})
    }

    #[test]
    fn keeps_only_keys_for_the_algorithm() {
        let doc = json!({"keys": [
            oct("a"),
            {"kty": "oct", "kid": "b", "alg": "HS512", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "c", "use": "enc", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "d"},
            {"kty": "RSA", "kid": "e", "n": "AQAB", "e": "AQAB"}
        ]});
        let set = KeySet::from_json(doc.to_string().as_bytes(), Algorithm::HS256).unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn no_usable_key_is_an_error() {
        let doc = json!({"keys": [{"kty": "oct", "kid": "b", "alg": "HS512", "k": "c2VjcmV0"}]});
        assert!(KeySet::from_json(doc.to_string().as_bytes(), Algorithm::HS256).is_err());
        assert!(KeySet::from_json(b"[]", Algorithm::HS256).is_err());
        assert!(KeySet::from_json(b"nope", Algorithm::HS256).is_err());
    }

    #[test]
    fn lookup_by_kid() {
        let doc = json!({"keys": [oct("a"), oct("b")]});
        let set = KeySet::from_json(doc.to_string().as_bytes(), Algorithm::HS256).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("b".into());
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::Kid),
            Lookup::Found(_)
        ));
        header.kid = Some("../../etc/passwd".into());
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::Kid),
            Lookup::Unknown
        ));
        header.kid = None;
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::Kid),
            Lookup::Ambiguous
        ));
        let single = json!({"keys": [oct("a")]});
        let set = KeySet::from_json(single.to_string().as_bytes(), Algorithm::HS256).unwrap();
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::Kid),
            Lookup::Found(_)
        ));
        assert!(matches!(
            KeySet::empty().find(&header, KeyIdentifyStrategy::Kid),
            Lookup::Unknown
        ));
    }

    #[test]
    fn lookup_by_thumbprint() {
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "a", "x5t": "T1", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "b", "x5t#S256": "T2", "k": "c2VjcmV0"}
        ]});
        let set = KeySet::from_json(doc.to_string().as_bytes(), Algorithm::HS256).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.x5t = Some("T1".into());
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::X5t),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::KidX5t),
            Lookup::Found(_)
        ));
        header.x5t_s256 = Some("T2".into());
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::X5tS256),
            Lookup::Found(_)
        ));
        header.kid = Some("zzz".into());
        header.x5t = None;
        assert!(matches!(
            set.find(&header, KeyIdentifyStrategy::KidX5t),
            Lookup::Unknown
        ));
    }
}
