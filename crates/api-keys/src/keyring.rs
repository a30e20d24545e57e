//! The configured keys and the constant-time lookup of a presented key.

use std::fmt;
use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::hash::HashKind;

struct StoredKey {
    digest: Vec<u8>,
    roles: Arc<[String]>,
}

/// Every known key, as digests.
pub(crate) struct KeyRing {
    hash: HashKind,
    salt: Vec<u8>,
    keys: Vec<StoredKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("hash", &self.hash)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub(crate) fn new(hash: HashKind, salt: &str) -> Self {
        Self {
            hash,
            salt: salt.as_bytes().to_vec(),
            keys: Vec::new(),
        }
    }

    /// Adds a configured key; a key given twice is an error.
    pub(crate) fn add(&mut self, stored: &str, roles: Vec<String>) -> Result<(), String> {
        let digest = self.hash.stored(stored)?;
        if self.keys.iter().any(|k| k.digest == digest) {
            return Err("the same key is declared twice".to_owned());
        }
        self.keys.push(StoredKey {
            digest,
            roles: roles.into(),
        });
        Ok(())
    }

    /// The roles of a presented key. Every stored digest is compared in
    /// constant time, with no early exit, whether or not one matches.
    pub(crate) fn roles_of(&self, presented: &[u8]) -> Option<Arc<[String]>> {
        let digest = self.hash.presented(&self.salt, presented);
        let mut found = 0u64;
        let mut matched = subtle::Choice::from(0);
        for (i, key) in self.keys.iter().enumerate() {
            let equal = key.digest.as_slice().ct_eq(&digest);
            let index = i as u64 + 1;
            found = u64::conditional_select(&found, &index, equal & !matched);
            matched |= equal;
        }
        if bool::from(matched) {
            let index = usize::try_from(found).ok()?.checked_sub(1)?;
            self.keys.get(index).map(|k| k.roles.clone())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_any_key() {
        let mut ring = KeyRing::new(HashKind::Plain, "");
        ring.add("k1", vec!["a".into()]).unwrap();
        ring.add("k2", vec!["b".into()]).unwrap();
        assert_eq!(&*ring.roles_of(b"k2").unwrap(), &["b".to_owned()]);
        assert_eq!(&*ring.roles_of(b"k1").unwrap(), &["a".to_owned()]);
        assert!(ring.roles_of(b"k3").is_none());
        assert!(ring.roles_of(b"").is_none());
        assert!(ring.add("k1", vec![]).is_err());
    }

    #[test]
    fn debug_shows_no_key() {
        let mut ring = KeyRing::new(HashKind::Plain, "pepper");
        ring.add("super-secret", vec![]).unwrap();
        let text = format!("{ring:?}");
        assert!(!text.contains("super-secret") && !text.contains("pepper"));
    }
}
