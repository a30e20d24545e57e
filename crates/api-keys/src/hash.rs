//! The key hashes KrakenD offers, and reading stored digests.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// How the configured keys are stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HashKind {
    /// The key as the client sends it.
    #[default]
    Plain,
    /// FNV-1 128-bit of `salt + key`.
    Fnv128,
    /// SHA-256 of `salt + key`.
    Sha256,
    /// SHA-1 of `salt + key`.
    Sha1,
}

impl HashKind {
    fn digest_len(self) -> usize {
        match self {
            Self::Plain | Self::Sha256 => 32,
            Self::Fnv128 => 16,
            Self::Sha1 => 20,
        }
    }

    /// The digest a presented key is compared by. Plain keys are compared
    /// through SHA-256 too, so every comparison has the same length and
    /// leaks nothing about the stored key's length.
    pub(crate) fn presented(self, salt: &[u8], key: &[u8]) -> Vec<u8> {
        match self {
            Self::Plain => Sha256::digest(key).to_vec(),
            Self::Sha256 => {
                let mut h = Sha256::new();
                h.update(salt);
                h.update(key);
                h.finalize().to_vec()
            }
            Self::Sha1 => {
                let mut h = Sha1::new();
                h.update(salt);
                h.update(key);
                h.finalize().to_vec()
            }
            Self::Fnv128 => fnv1_128([salt, key]).to_be_bytes().to_vec(),
        }
    }

    /// The digest of a configured key: the key itself hashed for `plain`,
    /// otherwise the stored digest in hex or base64.
    pub(crate) fn stored(self, stored: &str) -> Result<Vec<u8>, String> {
        if self == Self::Plain {
            if stored.is_empty() {
                return Err("empty key".to_owned());
            }
            return Ok(Sha256::digest(stored.as_bytes()).to_vec());
        }
        let len = self.digest_len();
        let bytes = decode_hex(stored)
            .or_else(|| {
                [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(stored).ok())
            })
            .filter(|bytes| bytes.len() == len)
            .ok_or_else(|| {
                format!("not a {self:?} digest: expected {len} bytes in hex or base64")
            })?;
        Ok(bytes)
    }
}

/// FNV-1 (multiply, then xor), 128 bits, over the concatenated parts.
fn fnv1_128<const N: usize>(parts: [&[u8]; N]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash = hash.wrapping_mul(PRIME);
        hash ^= u128::from(*byte);
    }
    hash
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // Reference values: `printf 'abc' | sha256sum` and `sha1sum`.
        assert_eq!(
            to_hex(&HashKind::Sha256.presented(b"", b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            to_hex(&HashKind::Sha1.presented(b"", b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        // FNV-1 128 of the empty input is the offset basis.
        assert_eq!(
            to_hex(&HashKind::Fnv128.presented(b"", b"")),
            "6c62272e07bb014262b821756295c58d"
        );
        // Salt and key are hashed as one string.
        assert_eq!(
            HashKind::Sha256.presented(b"ab", b"c"),
            HashKind::Sha256.presented(b"", b"abc")
        );
    }

    #[test]
    fn stored_digests_in_hex_or_base64() {
        let digest = HashKind::Sha1.presented(b"salt", b"key");
        let hex = to_hex(&digest);
        assert_eq!(HashKind::Sha1.stored(&hex).unwrap(), digest);
        assert_eq!(HashKind::Sha1.stored(&hex.to_uppercase()).unwrap(), digest);
        assert_eq!(
            HashKind::Sha1.stored(&STANDARD.encode(&digest)).unwrap(),
            digest
        );
        assert!(HashKind::Sha256.stored(&hex).is_err());
        assert!(HashKind::Sha1.stored("zz").is_err());
        assert!(HashKind::Plain.stored("").is_err());
    }
}
