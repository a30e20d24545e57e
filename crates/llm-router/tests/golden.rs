//! Golden transcripts: every vendor fixture under `tests/fixtures/llm/`
//! (a recorded-shape answer and stream) translated into every client
//! format equals the expected transcript; every stream split at random
//! byte boundaries decodes to the same events. `BLESS=1` writes the
//! expected files instead of comparing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use switchboard_llm_router::{ClientFormat, StreamEvent, VendorAdapter, vendors};

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm")
}

struct Fixture {
    name: String,
    dir: PathBuf,
    adapter: Arc<dyn VendorAdapter>,
    response: Option<Vec<u8>>,
    stream: Option<Vec<u8>>,
}

fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = fs::read_dir(fixtures_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("vendor.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let vendor: Value =
            serde_json::from_slice(&fs::read(dir.join("vendor.json")).unwrap()).unwrap();
        let provider = vendor["provider"].as_str().unwrap();
        let adapter = vendors::adapter_for(provider, vendor["endpoint"].as_str())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let stream = ["stream.sse", "stream.bin"]
            .iter()
            .find_map(|name| fs::read(dir.join(name)).ok());
        out.push(Fixture {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            response: fs::read(dir.join("response.json")).ok(),
            stream,
            adapter,
            dir,
        });
    }
    assert!(!out.is_empty(), "no fixtures found");
    out
}

/// Replaces what the gateway makes up (ids, `created`) by fixed values.
fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match (key.as_str(), &*item) {
                    ("created", Value::Number(_)) => *item = Value::from(0),
                    ("id", Value::String(id)) if is_made_up(id) => *item = Value::from("<id>"),
                    _ => normalize(item),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn is_made_up(id: &str) -> bool {
    let tail = id
        .strip_prefix("chatcmpl-")
        .or_else(|| id.strip_prefix("msg_"))
        .unwrap_or("");
    tail.len() == 20 && tail.bytes().all(|b| b.is_ascii_hexdigit())
}

fn normalize_sse(bytes: &[u8]) -> String {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("data: ") {
            Some(data) if data.trim_end() != "[DONE]" => {
                let mut value: Value = serde_json::from_str(data.trim_end()).unwrap();
                normalize(&mut value);
                out.push_str("data: ");
                out.push_str(&value.to_string());
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn decode(adapter: &dyn VendorAdapter, chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut decoder = adapter.stream_decoder();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.decode(chunk, &mut events);
    }
    decoder.finish(&mut events);
    events
}

fn encode(format: ClientFormat, events: &[StreamEvent]) -> Vec<u8> {
    let mut encoder = format.stream_encoder("fixture-model", true).unwrap();
    let mut out = Vec::new();
    for event in events {
        encoder.encode(event, &mut out);
    }
    if !events.iter().any(|e| matches!(e, StreamEvent::Error(_))) {
        encoder.finish(&mut out);
    }
    out
}

fn check(dir: &Path, name: &str, actual: &str) {
    let path = dir.join("expected").join(name);
    if std::env::var_os("BLESS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing (run with BLESS=1)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

const FORMATS: [(ClientFormat, &str); 3] = [
    (ClientFormat::OpenAi, "openai"),
    (ClientFormat::Anthropic, "anthropic"),
    (ClientFormat::Unified, "unified"),
];

#[test]
fn responses_match_their_transcripts() {
    for fixture in fixtures() {
        let Some(body) = &fixture.response else {
            continue;
        };
        let response = fixture
            .adapter
            .parse_response(body)
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        for (format, label) in FORMATS {
            let mut value: Value =
                serde_json::from_slice(&format.render_response(&response, "fixture-model"))
                    .unwrap();
            normalize(&mut value);
            let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
            check(&fixture.dir, &format!("response.{label}.json"), &text);
        }
    }
}

#[test]
fn streams_match_their_transcripts() {
    for fixture in fixtures() {
        let Some(stream) = &fixture.stream else {
            continue;
        };
        let events = decode(fixture.adapter.as_ref(), &[stream]);
        assert!(
            !events.iter().any(|e| matches!(e, StreamEvent::Error(_))),
            "{}: {events:?}",
            fixture.name
        );
        for (format, label) in &FORMATS[..2] {
            let bytes = encode(*format, &events);
            check(
                &fixture.dir,
                &format!("stream.{label}.sse"),
                &normalize_sse(&bytes),
            );
        }
    }
}

#[test]
fn byte_by_byte_equals_whole() {
    for fixture in fixtures() {
        let Some(stream) = &fixture.stream else {
            continue;
        };
        let whole = decode(fixture.adapter.as_ref(), &[stream]);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            decode(fixture.adapter.as_ref(), &bytes),
            whole,
            "{}",
            fixture.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_splits_give_the_same_events(cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24)) {
        for fixture in fixtures() {
            let Some(stream) = &fixture.stream else { continue };
            let whole = decode(fixture.adapter.as_ref(), &[stream]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for point in points {
                chunks.push(&stream[start..point]);
                start = point;
            }
            chunks.push(&stream[start..]);
            prop_assert_eq!(decode(fixture.adapter.as_ref(), &chunks), whole, "{}", fixture.name);
        }
    }
}
