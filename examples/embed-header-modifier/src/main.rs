//! Embedding the Switchboard header-modifier layer in a plain axum app.
//!
//! The route below stands in for an LLM vendor. The layer in front of it
//! does what a gateway backend does with `modifier/martian`: it replaces
//! whatever `Authorization` the client sent with the vendor key taken from
//! `OPENAI_API_KEY`, and strips the vendor's `Server` header on the way
//! back.
//!
//! ```text
//! OPENAI_API_KEY=sk-demo cargo run -p example-embed-header-modifier
//! curl -s -H 'Authorization: Bearer client-token' http://127.0.0.1:3000/v1/chat/completions
//! ```

use axum::Router;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::json;
use switchboard_header_modifier::ModifyHeadersLayer;

const ADDR: &str = "127.0.0.1:3000";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("OPENAI_API_KEY").unwrap_or_else(|_| {
        println!("OPENAI_API_KEY is not set; injecting the placeholder key `sk-demo`");
        "sk-demo".to_owned()
    });

    // The same object a KrakenD config holds under `modifier/martian`.
    let layer = ModifyHeadersLayer::try_from_config(&json!({
        "fifo.Group": {
            "scope": ["request", "response"],
            "modifiers": [
                { "header.Modifier": { "scope": ["request"], "name": "Authorization", "value": format!("Bearer {key}") } },
                { "header.Blacklist": { "scope": ["response"], "names": ["Server"] } }
            ]
        }
    }))?;
    // Debug output shows the modifiers but never the key.
    println!("modifiers: {layer:?}");

    let app = Router::new()
        .route("/v1/chat/completions", any(vendor))
        .layer(layer);

    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("listening on http://{ADDR}");
    println!(
        "try: curl -si -H 'Authorization: Bearer client-token' http://{ADDR}/v1/chat/completions"
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// The mock vendor: reports which credential reached it, without echoing
/// the key itself.
async fn vendor(headers: HeaderMap) -> impl IntoResponse {
    let received = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let shown = match received.split_once(' ') {
        Some((scheme, secret)) => format!("{scheme} {}… ({} chars)", prefix(secret), secret.len()),
        None => "(none)".to_owned(),
    };
    println!("vendor received Authorization: {shown}");
    (
        [("server", "mock-vendor/1.0")],
        axum::Json(json!({
            "vendor_saw_authorization": shown,
            "client_token_reached_vendor": received.contains("client-token"),
        })),
    )
}

fn prefix(secret: &str) -> &str {
    let end = secret
        .char_indices()
        .nth(3)
        .map_or(secret.len(), |(index, _)| index);
    &secret[..end]
}
