//! Where verification keys live: a local set loaded once, or a remote set
//! downloaded, cached and refreshed without ever stalling requests that the
//! cached keys can serve.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use switchboard_core::ConfigError;
use tokio::sync::watch;

use crate::config::{KeyIdentifyStrategy, KeySourceConfig};
use crate::keys::{KeySet, Lookup};

/// How long one download of a JWK set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWK set document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The token names a key that is not in the set (after a refresh, when
    /// one was allowed).
    Unknown,
    /// The token names no key and the set holds several.
    Ambiguous,
}

/// The verification keys of one validator.
#[derive(Clone)]
pub(crate) struct KeyStore {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<KeySet>,
    remote: Option<Remote>,
    alg: Algorithm,
}

struct Remote {
    url: Uri,
    client: HttpsClient,
    refresh_after: Duration,
    cooldown: Duration,
    fetch_timeout: Duration,
    state: Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    last_started: Option<Instant>,
    /// Present while a download runs; flips to `true` when it ends.
    in_flight: Option<watch::Receiver<bool>>,
}

impl KeyStore {
    /// Builds the store. A local set is read now; a remote one is
    /// downloaded in the background when a Tokio runtime is running, or on
    /// the first request otherwise. Never blocks.
    pub(crate) fn new(source: &KeySourceConfig, alg: Algorithm) -> Result<Self, ConfigError> {
        let (set, remote) = match source {
            KeySourceConfig::Local(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    ConfigError::new(
                        "jwk_local_path",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let set = KeySet::from_json(&bytes, alg)
                    .map_err(|msg| ConfigError::new("jwk_local_path", msg))?;
                (set, None)
            }
            KeySourceConfig::Remote {
                url,
                allow_http,
                refresh_after,
                cooldown,
            } => {
                let client =
                    https_client(*allow_http).map_err(|msg| ConfigError::new("jwk_url", msg))?;
                let remote = Remote {
                    url: url.clone(),
                    client,
                    refresh_after: *refresh_after,
                    cooldown: *cooldown,
                    fetch_timeout: FETCH_TIMEOUT,
                    state: Mutex::new(FetchState::default()),
                };
                (KeySet::empty(), Some(remote))
            }
        };
        let store = Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(set),
                remote,
                alg,
            }),
        };
        if store.shared.remote.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            drop(store.start_refresh());
        }
        Ok(store)
    }

    /// The key for a token when it can be told without waiting: a cached
    /// key (a stale set is refreshed in the background), or a refusal that
    /// no download could change. `None` when a download may bring the key.
    pub(crate) fn cached_key(
        &self,
        header: &Header,
        strategy: KeyIdentifyStrategy,
    ) -> Option<Result<Arc<DecodingKey>, KeyError>> {
        let set = self.shared.current.load();
        match set.find(header, strategy) {
            Lookup::Found(key) => {
                if let Some(remote) = &self.shared.remote
                    && set.loaded_at().elapsed() >= remote.refresh_after
                {
                    drop(self.start_refresh());
                }
                Some(Ok(key))
            }
            Lookup::Ambiguous => Some(Err(KeyError::Ambiguous)),
            Lookup::Unknown if self.shared.remote.is_none() => Some(Err(KeyError::Unknown)),
            Lookup::Unknown => None,
        }
    }

    /// Finds the key for a token. A known key is returned at once (a stale
    /// set is refreshed in the background); an unknown one waits for at
    /// most one download, and only when the cooldown allows one.
    pub(crate) async fn key_for(
        &self,
        header: &Header,
        strategy: KeyIdentifyStrategy,
    ) -> Result<Arc<DecodingKey>, KeyError> {
        match self.cached_key(header, strategy) {
            Some(found) => found,
            None => {
                let Some(remote) = &self.shared.remote else {
                    return Err(KeyError::Unknown);
                };
                let Some(mut done) = self.start_refresh() else {
                    return Err(KeyError::Unknown);
                };
                // A dropped sender means the download task ended anyway.
                let _ = tokio::time::timeout(remote.fetch_timeout, done.wait_for(|d| *d)).await;
                match self.shared.current.load().find(header, strategy) {
                    Lookup::Found(key) => Ok(key),
                    Lookup::Ambiguous => Err(KeyError::Ambiguous),
                    Lookup::Unknown => Err(KeyError::Unknown),
                }
            }
        }
    }

    /// Starts a download unless one runs (then joins it) or the cooldown
    /// since the last one has not passed (then `None`).
    fn start_refresh(&self) -> Option<watch::Receiver<bool>> {
        let remote = self.shared.remote.as_ref()?;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut state = remote.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = &state.in_flight {
            return Some(running.clone());
        }
        let now = Instant::now();
        if state
            .last_started
            .is_some_and(|last| now.duration_since(last) < remote.cooldown)
        {
            return None;
        }
        state.last_started = Some(now);
        let (done_tx, done_rx) = watch::channel(false);
        state.in_flight = Some(done_rx.clone());
        drop(state);
        let shared = self.shared.clone();
        runtime.spawn(async move {
            let _finish = FinishGuard {
                shared: shared.clone(),
                done: done_tx,
            };
            shared.refresh().await;
        });
        Some(done_rx)
    }
}

/// Clears the in-flight marker and wakes waiters however the download task
/// ends (including a panic or the runtime shutting down).
struct FinishGuard {
    shared: Arc<Shared>,
    done: watch::Sender<bool>,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(remote) = &self.shared.remote {
            remote
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .in_flight = None;
        }
        let _ = self.done.send(true);
    }
}

impl Shared {
    async fn refresh(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        match tokio::time::timeout(remote.fetch_timeout, remote.download(self.alg)).await {
            Ok(Ok(set)) => {
                tracing::debug!(keys = set.len(), url = %remote.url, "auth/validator: JWK set loaded");
                self.current.store(Arc::new(set));
            }
            // The keys in force stay: a failing identity provider must not
            // take valid tokens down with it.
            Ok(Err(msg)) => {
                tracing::warn!(url = %remote.url, error = %msg, "auth/validator: JWK set download failed");
            }
            Err(_) => {
                tracing::warn!(url = %remote.url, timeout = ?remote.fetch_timeout, "auth/validator: JWK set download timed out");
            }
        }
    }
}

impl Remote {
    async fn download(&self, alg: Algorithm) -> Result<KeySet, String> {
        let request = Request::get(self.url.clone())
            .header(USER_AGENT, "switchboard-gateway")
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
            .to_bytes();
        KeySet::from_json(&body, alg)
    }
}

fn https_client(allow_http: bool) -> Result<HttpsClient, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = if allow_http {
        builder.https_or_http()
    } else {
        builder.https_only()
    };
    let connector = builder.enable_http1().enable_http2().build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
