//! Applying a realistic modifier set to a request head: vendor key
//! injection plus a group of three.

#![allow(clippy::unwrap_used)] // a bench: a bad fixture should stop it

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Uri};
use switchboard_header_modifier::Modifiers;

fn config() -> serde_json::Value {
    serde_json::json!({
        "fifo.Group": {
            "scope": ["request", "response"],
            "modifiers": [
                { "header.Modifier": { "scope": ["request"], "name": "Authorization", "value": "Bearer sk-proj-0123456789abcdef0123456789abcdef" } },
                { "priority.Group": {
                    "scope": ["request", "response"],
                    "modifiers": [
                        { "priority": 10, "modifier": { "header.Append": { "scope": ["request"], "name": "X-Gateway", "value": "switchboard" } } },
                        { "priority": 5, "modifier": { "header.Blacklist": { "scope": ["request", "response"], "names": ["Cookie", "X-Forwarded-For", "Server"] } } },
                        { "priority": 0, "modifier": { "header.Filter": {
                            "scope": ["request"], "name": "X-Tenant", "value": "v1",
                            "modifier": { "querystring.Modifier": { "scope": ["request"], "name": "legacy", "value": "1" } }
                        } } }
                    ]
                } }
            ]
        }
    })
}

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("user-agent", "OpenAI/Python 1.40.0"),
        ("authorization", "Bearer client-token"),
        ("cookie", "session=abc"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-tenant", "v1"),
        ("content-length", "128"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    headers
}

fn bench(c: &mut Criterion) {
    let modifiers = Modifiers::try_from_config(&config()).unwrap();
    let uri: Uri = "https://api.openai.com/v1/chat/completions"
        .parse()
        .unwrap();
    let headers = request_headers();
    c.bench_function("modify_request/auth+group_of_3", |b| {
        b.iter_batched(
            || (uri.clone(), headers.clone()),
            |(mut uri, mut headers)| {
                black_box(modifiers.modify_request(&mut uri, &mut headers));
                (uri, headers)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let only_auth = Modifiers::try_from_config(&serde_json::json!({
        "header.Modifier": { "scope": ["request"], "name": "Authorization", "value": "Bearer sk-proj-0123456789abcdef" }
    }))
    .unwrap();
    c.bench_function("modify_request/auth_only", |b| {
        b.iter_batched(
            || (uri.clone(), headers.clone()),
            |(mut uri, mut headers)| {
                black_box(only_auth.modify_request(&mut uri, &mut headers));
                (uri, headers)
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
