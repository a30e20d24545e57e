//! Translation cost per stream event and per whole answer, for every vendor
//! fixture under `tests/fixtures/llm/` into every client format.
//!
//! `cargo bench -p switchboard-llm-router --bench translate`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use switchboard_llm_router::{ClientFormat, StreamEvent, vendors};

struct Fixture {
    name: String,
    provider: String,
    endpoint: Option<String>,
    response: Option<Vec<u8>>,
    stream: Option<Vec<u8>>,
}

fn fixtures() -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm");
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("vendor.json").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let vendor: Value =
                serde_json::from_slice(&fs::read(dir.join("vendor.json")).unwrap()).unwrap();
            Fixture {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                provider: vendor["provider"].as_str().unwrap().to_owned(),
                endpoint: vendor["endpoint"].as_str().map(str::to_owned),
                response: fs::read(dir.join("response.json")).ok(),
                stream: ["stream.sse", "stream.bin", "stream.ndjson"]
                    .iter()
                    .find_map(|n| fs::read(dir.join(n)).ok()),
            }
        })
        .collect()
}

const FORMATS: [(ClientFormat, &str); 2] = [
    (ClientFormat::OpenAi, "openai"),
    (ClientFormat::Anthropic, "anthropic"),
];

fn translate(c: &mut Criterion) {
    for fixture in fixtures() {
        let Ok(adapter) = vendors::adapter_for(&fixture.provider, fixture.endpoint.as_deref())
        else {
            continue;
        };
        if let Some(stream) = &fixture.stream {
            let mut decoder = adapter.stream_decoder();
            let mut events = Vec::new();
            decoder.decode(stream, &mut events);
            decoder.finish(&mut events);
            let count = events
                .iter()
                .filter(|e| !matches!(e, StreamEvent::Usage(_)))
                .count()
                .max(1) as u64;
            let mut group = c.benchmark_group(format!("stream/{}", fixture.name));
            // Per event: decode the vendor bytes and encode the client's.
            group.throughput(Throughput::Elements(count));
            for (format, label) in FORMATS {
                group.bench_function(label, |b| {
                    b.iter(|| {
                        let mut decoder = adapter.stream_decoder();
                        let mut encoder = format.stream_encoder("m", true).unwrap();
                        let mut events = Vec::new();
                        let mut out = Vec::with_capacity(stream.len() * 2);
                        decoder.decode(black_box(stream), &mut events);
                        decoder.finish(&mut events);
                        for event in &events {
                            encoder.encode(event, &mut out);
                        }
                        encoder.finish(&mut out);
                        black_box(out)
                    })
                });
            }
            group.finish();
        }
        if let Some(body) = &fixture.response {
            let mut group = c.benchmark_group(format!("response/{}", fixture.name));
            for (format, label) in FORMATS
                .into_iter()
                .chain([(ClientFormat::Unified, "unified")])
            {
                group.bench_function(label, |b| {
                    b.iter(|| {
                        let response = adapter.parse_response(black_box(body)).unwrap();
                        black_box(format.render_response(&response, "m"))
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, translate);
criterion_main!(benches);
