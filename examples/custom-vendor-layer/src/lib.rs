//! A custom vendor layer for Switchboard: [`TranslateToAcmeLayer`] lets
//! clients that speak OpenAI's chat completions API call Acme, a made-up
//! vendor with its own dialect.
//!
//! It follows the conventions every Switchboard layer keeps: the service is
//! named for what it does ([`TranslateToAcme`]); the layer is built with
//! [`TranslateToAcmeLayer::try_from_config`], which checks the config once
//! and names the JSON path of a mistake; rejections are
//! [`switchboard_core::ErrorResponse`] responses; bodies are buffered only
//! through `switchboard_core::buffer` (bounded), and event streams are
//! rewritten frame by frame with `switchboard_core::sse`, never buffered.
//! The mapping itself is pure and lives apart from the tower glue.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use example_custom_vendor_layer::TranslateToAcmeLayer;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use switchboard_core::Body;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = TranslateToAcmeLayer::try_from_config(&serde_json::json!({
//!     "engines": {"gpt-4o": "acme-large"}
//! }))?;
//! // A stand-in for Acme that answers every prompt the same way.
//! let acme = service_fn(|_request: Request<Body>| async {
//!     let answer = r#"{"id": "a1", "output": {"text": "Hi!"}, "tokens": {"in": 3, "out": 1}}"#;
//!     Ok::<_, Infallible>(Response::new(Body::from(answer)))
//! });
//! let request = Request::post("/v1/chat/completions")
//!     .body(Body::from(r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}"#))?;
//! let response = layer.layer(acme).oneshot(request).await?;
//! let chat: serde_json::Value =
//!     serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
//! assert_eq!(chat["choices"][0]["message"]["content"], "Hi!");
//! # Ok(())
//! # }
//! ```

mod layer;
mod service;
mod translate;

pub use layer::{AcmeConfig, TranslateToAcmeLayer};
pub use service::TranslateToAcme;
