//! The one rule for secrets: which header and query names carry
//! credentials, which values came from the config's secrets, and a scrubber
//! that removes those values from anything the gateway returns or logs.
//!
//! - A header or query parameter is secret when its name says so
//!   ([`is_secret_name`]: `Authorization`, cookies, and any name containing
//!   `key`, `token`, `secret`, `auth`, `passw`, `credential`, `session`,
//!   `signature` or `jwt`), or when its value is marked sensitive
//!   ([`http::HeaderValue::set_sensitive`], as `modifier/martian` marks what
//!   it injects).
//! - A value is a configured secret when the config put it there from a
//!   secret source: an `{{ env "NAME" }}` substitution, a credential field
//!   (API keys, shared secrets), the value a martian modifier sets on a
//!   secret name, or a secret-named query value in a `url_pattern`. These
//!   go into one [`Secrets`] set when the config loads.
//! - [`Secrets::scrub`] replaces every configured secret in a text with
//!   `[redacted]`; [`Secrets::scrub_body`] does the same to a body as it
//!   streams, holding back only the bytes a secret could still be cut in.
//!
//! Values shorter than [`MIN_SECRET_LEN`] are not scrubbed: they cannot be
//! told apart from ordinary text (a port, a model name) and are too short
//! to be a credential.
//!
//! ```
//! use switchboard_core::secrets::{Secrets, is_secret_name};
//!
//! assert!(is_secret_name("Ocp-Apim-Subscription-Key"));
//! assert!(is_secret_name("x-goog-api-key"));
//! assert!(!is_secret_name("x-llm"));
//!
//! let secrets = Secrets::new(["sk-live-0123456789".to_owned()]);
//! assert_eq!(
//!     secrets.scrub("invalid key sk-live-0123456789"),
//!     "invalid key [redacted]"
//! );
//! ```

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{Body, BoxError};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The shortest value the scrubber looks for.
pub const MIN_SECRET_LEN: usize = 8;

/// Names that are secret as a whole.
const SECRET_NAMES: [&str; 5] = ["authorization", "cookie", "set-cookie", "sig", "code"];

/// Parts that make any name secret.
const SECRET_PARTS: [&str; 9] = [
    "key",
    "token",
    "secret",
    "auth",
    "passw",
    "credential",
    "session",
    "signature",
    "jwt",
];

/// Whether a header or query parameter name carries a credential
/// (case-insensitive).
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAMES.contains(&lower.as_str()) || SECRET_PARTS.iter().any(|part| lower.contains(part))
}

/// Whether a header's value must not be shown: its name is secret or its
/// value is marked sensitive.
pub fn is_secret_header(name: &HeaderName, value: &HeaderValue) -> bool {
    value.is_sensitive() || is_secret_name(name.as_str())
}

/// Credential schemes whose token is a secret by itself too.
const SCHEMES: [&str; 4] = ["Bearer ", "Basic ", "Token ", "Key "];

/// The secret values a config holds, and the scrubber that hides them.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
    matcher: Option<AhoCorasick>,
    longest: usize,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("values", &self.values.len())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The set of `values` (shorter ones are dropped; a `Bearer …` value
    /// also adds its token).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<String> = Vec::new();
        for value in values {
            let value = value.trim();
            for scheme in SCHEMES {
                if let Some(token) = value.strip_prefix(scheme) {
                    all.push(token.trim().to_owned());
                }
            }
            all.push(value.to_owned());
        }
        all.retain(|v| v.len() >= MIN_SECRET_LEN);
        all.sort();
        all.dedup();
        let longest = all.iter().map(String::len).max().unwrap_or(0);
        let matcher = if all.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&all)
                .ok()
        };
        Self {
            values: all,
            matcher,
            longest,
        }
    }

    /// Whether no value is to be scrubbed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values scrubbed.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// How many values are scrubbed.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether `text` holds a configured secret.
    pub fn contains_secret(&self, text: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(text))
    }

    /// `text` with every configured secret replaced by `[redacted]`.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(matcher) if matcher.is_match(text) => {
                Cow::Owned(matcher.replace_all(text, &vec![REDACTED; self.values.len()]))
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// As [`Secrets::scrub`], on bytes.
    pub fn scrub_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        match &self.matcher {
            Some(matcher) if matcher.is_match(bytes) => Cow::Owned(
                matcher.replace_all_bytes(bytes, &vec![REDACTED.as_bytes(); self.values.len()]),
            ),
            _ => Cow::Borrowed(bytes),
        }
    }

    /// A header value with secrets scrubbed (the value itself when it holds
    /// none).
    pub fn scrub_header(&self, value: &HeaderValue) -> HeaderValue {
        match self.scrub_bytes(value.as_bytes()) {
            Cow::Borrowed(_) => value.clone(),
            Cow::Owned(bytes) => HeaderValue::from_bytes(&bytes)
                .unwrap_or_else(|_| HeaderValue::from_static(REDACTED)),
        }
    }

    /// A raw query string with the values of secret-named parameters
    /// replaced and configured secrets scrubbed from the rest.
    pub fn redact_query(&self, raw: &str) -> String {
        let redacted = raw
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_name(&decode_component(key)) => {
                    format!("{key}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        self.scrub(&redacted).into_owned()
    }

    /// Wraps a body so that configured secrets never leave in it, even
    /// when one is split across chunks.
    pub fn scrub_body(self: &Arc<Self>, body: Body) -> Body {
        if self.is_empty() {
            return body;
        }
        Body::new(ScrubBody {
            inner: body,
            secrets: Arc::clone(self),
            carry: BytesMut::new(),
            done: false,
        })
    }

    /// Scrubs the complete part of `buffer` and returns it; what a secret
    /// could still straddle stays in `buffer`. With `last`, everything goes.
    fn drain_scrubbed(&self, buffer: &mut BytesMut, last: bool) -> Bytes {
        let Some(matcher) = &self.matcher else {
            return buffer.split().freeze();
        };
        let hold = if last {
            0
        } else {
            self.longest.saturating_sub(1)
        };
        let mut safe = buffer.len().saturating_sub(hold);
        let mut out = BytesMut::with_capacity(buffer.len());
        let mut at = 0;
        for found in matcher.find_iter(&buffer[..]) {
            if found.start() >= safe {
                break;
            }
            out.extend_from_slice(&buffer[at..found.start()]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = found.end();
            safe = safe.max(at);
        }
        out.extend_from_slice(&buffer[at..safe]);
        let _ = buffer.split_to(safe);
        out.freeze()
    }
}

fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode(&spaced)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pin_project! {
    /// A body with configured secrets scrubbed as it streams.
    struct ScrubBody {
        #[pin]
        inner: Body,
        secrets: Arc<Secrets>,
        carry: BytesMut,
        done: bool,
    }
}

impl HttpBody for ScrubBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.carry.extend_from_slice(&data);
                        let out = this.secrets.drain_scrubbed(this.carry, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => {
                    *this.done = true;
                    let out = this.secrets.drain_scrubbed(this.carry, true);
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.carry.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn names() {
        for name in [
            "Authorization",
            "x-api-key",
            "X-Goog-Api-Key",
            "Ocp-Apim-Subscription-Key",
            "anthropic-api-key",
            "X-Auth",
            "cookie",
            "x-amz-security-token",
            "password",
            "key",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["x-llm", "content-type", "model", "page", "accept"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn sensitive_values_are_secret() {
        let mut value = HeaderValue::from_static("v");
        let name = HeaderName::from_static("x-tenant");
        assert!(!is_secret_header(&name, &value));
        value.set_sensitive(true);
        assert!(is_secret_header(&name, &value));
    }

    #[test]
    fn short_values_and_bearer_tokens() {
        let secrets = Secrets::new(["1234".to_owned(), "Bearer sk-abcdefgh".to_owned()]);
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets.scrub("port 1234"), "port 1234");
        assert_eq!(secrets.scrub("got sk-abcdefgh!"), "got [redacted]!");
        assert_eq!(
            secrets.redact_query("key=abc&page=2&q=sk-abcdefgh"),
            "key=[redacted]&page=2&q=[redacted]"
        );
    }

    #[tokio::test]
    async fn bodies_are_scrubbed_across_chunk_boundaries() {
        let secrets = Arc::new(Secrets::new(["sk-0123456789".to_owned()]));
        let text = "a sk-0123456789 b sk-0123456789 sk-012345678";
        for split in 1..text.len() {
            let chunks: std::collections::VecDeque<Bytes> = text
                .as_bytes()
                .chunks(split)
                .map(Bytes::copy_from_slice)
                .collect();
            let body = Body::new(Chunks(chunks));
            let out = secrets.scrub_body(body).collect().await.unwrap().to_bytes();
            assert_eq!(
                &out[..],
                b"a [redacted] b [redacted] sk-012345678",
                "split {split}"
            );
        }
    }

    struct Chunks(std::collections::VecDeque<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }
}
