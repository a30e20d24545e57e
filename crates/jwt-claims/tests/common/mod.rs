//! Shared helpers for the integration tests and the bench.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_core::{Body, Claims};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for the default test config.
pub fn claims() -> Value {
    json!({
        "sub": "user-1",
        "iss": "https://idp.example.com/",
        "aud": ["gateway"],
        "exp": now() + 600,
        "iat": now(),
        "roles": ["user", "admin"],
        "scope": "chat:read chat:write",
        "org": {"id": "acme", "tier": "gold"}
    })
}

pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap()
}

pub fn other_rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa2_private.pem")).unwrap()
}

pub const HMAC_SECRET: &[u8] = b"switchboard-test-hmac-secret-0123456789";

pub fn sign_with(header: Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn rs256(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    sign_with(header, claims, &rsa_key())
}

pub fn hs256(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    sign_with(header, claims, &EncodingKey::from_secret(HMAC_SECRET))
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The headers and claims of the last request the inner service saw.
type Last = Arc<Mutex<Option<(HeaderMap, Option<Claims>)>>>;

/// What the inner service saw.
#[derive(Clone, Default)]
pub struct Seen {
    pub calls: Arc<AtomicUsize>,
    pub last: Last,
}

impl Seen {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.last.lock().unwrap().clone().unwrap().0
    }

    pub fn last_claims(&self) -> Option<Claims> {
        self.last.lock().unwrap().clone().unwrap().1
    }

    pub fn service(
        &self,
    ) -> tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible> {
        let seen = self.clone();
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                seen.calls.fetch_add(1, Ordering::SeqCst);
                *seen.last.lock().unwrap() = Some((
                    request.headers().clone(),
                    request.extensions().get::<Claims>().cloned(),
                ));
                Ok::<_, Infallible>(Response::new(Body::from("ok")))
            }
        }))
    }
}

pub fn bearer(token: &str) -> Request<Body> {
    Request::builder()
        .uri("/v1/chat")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

pub fn status_of(response: &Response<Body>) -> StatusCode {
    response.status()
}

/// A JWKS endpoint on loopback that counts the downloads. With
/// `hang_after`, downloads after that many never answer.
pub async fn jwks_server(
    body: Vec<u8>,
    hang_after: Option<usize>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let body = Bytes::from(body);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = body.clone();
                    async move {
                        if hang_after.is_some_and(|limit| n > limit) {
                            std::future::pending::<()>().await;
                        }
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/jwk-set+json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}
