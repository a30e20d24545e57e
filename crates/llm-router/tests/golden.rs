//! Golden transcripts: every recorded-shape vendor answer, stream and error
//! under `tests/fixtures/llm/<vendor>/`, translated into every client
//! format, must equal the expected transcript in `<vendor>/expected/`.
//! A property test splits every vendor stream at random byte boundaries and
//! must get the same events as the whole stream.
//!
//! A vendor directory holds `vendor.json` (`provider`, `model`, optional
//! `endpoint` and `error_headers` by status), `response*.json`,
//! `stream*.sse` / `stream*.ndjson` / `stream*.frames.json` (AWS
//! event-stream frames written as JSON, encoded here) and
//! `error_<status>.json`. `UPDATE_GOLDEN=1 cargo test -p
//! switchboard-llm-router --test golden` rewrites the expected files (review
//! the diff before committing it).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use http::{HeaderMap, HeaderName, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use switchboard_llm_router::{ClientFormat, StreamEvent, VendorAdapter, vendors};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm")
}

struct Vendor {
    dir: PathBuf,
    manifest: Value,
    adapter: Arc<dyn VendorAdapter>,
}

impl Vendor {
    fn model(&self) -> &str {
        self.manifest["model"].as_str().unwrap_or("model")
    }

    fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
            })
            .collect();
        files.sort();
        files
    }

    fn streams(&self) -> Vec<(String, Vec<u8>)> {
        self.files("stream")
            .into_iter()
            .map(|path| (stem(&path), stream_bytes(&path)))
            .collect()
    }
}

fn vendors_under_test() -> Vec<Vendor> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("vendor.json").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures under {}", root().display());
    dirs.into_iter()
        .map(|dir| {
            let manifest: Value =
                serde_json::from_slice(&fs::read(dir.join("vendor.json")).unwrap()).unwrap();
            let provider = manifest["provider"].as_str().unwrap();
            let adapter = vendors::adapter_for(provider, manifest["endpoint"].as_str()).unwrap();
            Vendor {
                dir,
                manifest,
                adapter,
            }
        })
        .collect()
}

/// `stream_tools.frames.json` -> `stream_tools`.
fn stem(path: &Path) -> String {
    let name = path.file_name().unwrap().to_str().unwrap();
    name.split('.').next().unwrap().to_owned()
}

/// The bytes of a stream fixture; `.frames.json` is encoded as AWS
/// event-stream frames (`{"event", "payload"}` or `{"exception",
/// "payload"}`).
fn stream_bytes(path: &Path) -> Vec<u8> {
    let raw = fs::read(path).unwrap();
    if !path.to_str().unwrap().ends_with(".frames.json") {
        return raw;
    }
    let frames: Vec<Value> = serde_json::from_slice(&raw).unwrap();
    let mut out = Vec::new();
    for frame in frames {
        let header = |name: &str, value: &str| {
            Header::new(
                name.to_owned(),
                HeaderValue::String(value.to_owned().into()),
            )
        };
        let payload = frame["payload"].to_string().into_bytes();
        let mut message = Message::new(payload);
        if let Some(event) = frame["event"].as_str() {
            message = message
                .add_header(header(":event-type", event))
                .add_header(header(":content-type", "application/json"))
                .add_header(header(":message-type", "event"));
        } else {
            let exception = frame["exception"].as_str().unwrap();
            message = message
                .add_header(header(":exception-type", exception))
                .add_header(header(":content-type", "application/json"))
                .add_header(header(":message-type", "exception"));
        }
        aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    }
    out
}

fn decode(adapter: &dyn VendorAdapter, bytes: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
    let mut decoder = adapter.stream_decoder();
    let mut events = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        decoder.decode(&bytes[from..cut], &mut events);
        from = cut;
    }
    decoder.decode(&bytes[from..], &mut events);
    decoder.finish(&mut events);
    events
}

/// Replaces what the gateway makes up per call (ids, timestamps) with
/// placeholders.
fn normalize_json(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, field) in object.iter_mut() {
                match (key.as_str(), &field) {
                    ("created", Value::Number(_)) => *field = Value::String("<created>".into()),
                    ("id", Value::String(id)) if made_up(id) => {
                        *field = Value::String("<id>".into());
                    }
                    _ => normalize_json(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

fn made_up(id: &str) -> bool {
    let suffix = id
        .strip_prefix("chatcmpl-")
        .or_else(|| id.strip_prefix("msg_"))
        .unwrap_or("");
    suffix.len() == 20 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
}

fn pretty(bytes: &[u8]) -> String {
    let mut value: Value = serde_json::from_slice(bytes).unwrap();
    normalize_json(&mut value);
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

/// An SSE transcript with every `data:` JSON normalised.
fn normalize_sse(bytes: &[u8]) -> String {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("data: ") {
            Some(data) if data.trim_start().starts_with('{') => {
                let mut value: Value = serde_json::from_str(data.trim_end()).unwrap();
                normalize_json(&mut value);
                out.push_str("data: ");
                out.push_str(&value.to_string());
                out.push('\n');
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn events_transcript(events: &[StreamEvent]) -> String {
    events.iter().map(|e| format!("{e:?}\n")).collect()
}

fn encode(format: ClientFormat, model: &str, events: &[StreamEvent]) -> Vec<u8> {
    let Some(mut encoder) = format.stream_encoder(model, true) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for event in events {
        encoder.encode(event, &mut out);
    }
    if !matches!(events.last(), Some(StreamEvent::Error(_))) {
        encoder.finish(&mut out);
    }
    out
}

const FORMATS: &[(&str, ClientFormat)] = &[
    ("unified", ClientFormat::Unified),
    ("openai", ClientFormat::OpenAi),
    ("anthropic", ClientFormat::Anthropic),
];

/// Compares with (or, with `UPDATE_GOLDEN`, writes) an expected file;
/// returns a description of the mismatch.
fn check(vendor: &Vendor, name: &str, actual: &str, mismatches: &mut Vec<String>) {
    let path = vendor.dir.join("expected").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    match fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => mismatches.push(format!(
            "{}: expected\n{expected}\nactual\n{actual}",
            path.display()
        )),
        Err(_) => mismatches.push(format!(
            "{}: missing (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

#[test]
fn responses_translate_to_every_client_format() {
    let mut mismatches = Vec::new();
    let mut seen = 0;
    for vendor in vendors_under_test() {
        for path in vendor.files("response") {
            let body = fs::read(&path).unwrap();
            let response = vendor
                .adapter
                .parse_response(&body)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !response.usage.is_empty(),
                "{}: no usage read",
                path.display()
            );
            for (name, format) in FORMATS {
                let rendered = format.render_response(&response, vendor.model());
                check(
                    &vendor,
                    &format!("{}.{name}.json", stem(&path)),
                    &pretty(&rendered),
                    &mut mismatches,
                );
            }
            seen += 1;
        }
    }
    assert!(seen > 0);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn streams_translate_to_every_client_format() {
    let mut mismatches = Vec::new();
    for vendor in vendors_under_test() {
        let streams = vendor.streams();
        assert!(!streams.is_empty(), "{}: no stream", vendor.dir.display());
        for (stem, bytes) in streams {
            let events = decode(vendor.adapter.as_ref(), &bytes, &[]);
            let failed = matches!(events.last(), Some(StreamEvent::Error(_)));
            // A stream that ends normally reports its usage.
            assert!(
                failed || events.iter().any(|e| matches!(e, StreamEvent::Usage(_))),
                "{}/{stem}: no usage",
                vendor.dir.display()
            );
            check(
                &vendor,
                &format!("{stem}.events.txt"),
                &events_transcript(&events),
                &mut mismatches,
            );
            for (name, format) in &FORMATS[1..] {
                let sse = encode(*format, vendor.model(), &events);
                check(
                    &vendor,
                    &format!("{stem}.{name}.sse"),
                    &normalize_sse(&sse),
                    &mut mismatches,
                );
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn errors_translate_to_every_client_format() {
    let mut mismatches = Vec::new();
    for vendor in vendors_under_test() {
        for path in vendor.files("error_") {
            let status: u16 = stem(&path)["error_".len()..].parse().unwrap();
            let mut headers = HeaderMap::new();
            if let Some(extra) = vendor.manifest["error_headers"][status.to_string()].as_object() {
                for (name, value) in extra {
                    headers.insert(
                        HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        value.as_str().unwrap().parse().unwrap(),
                    );
                }
            }
            let body = fs::read(&path).unwrap();
            let status = StatusCode::from_u16(status).unwrap();
            let err = vendor.adapter.parse_error(status, &headers, &body);
            let mut summary = format!(
                "status: {}\nkind: {:?}\nretry-after: {:?}\n",
                err.status.as_u16(),
                err.kind,
                err.retry_after
            );
            for (name, format) in FORMATS {
                summary.push_str(&format!("{name}: {}\n", format.error_body(&err)));
            }
            check(
                &vendor,
                &format!("{}.txt", stem(&path)),
                &summary,
                &mut mismatches,
            );
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any split of any vendor stream decodes to the same events.
    #[test]
    fn streams_split_anywhere_decode_the_same(
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..16)
    ) {
        for vendor in vendors_under_test() {
            for (stem, bytes) in vendor.streams() {
                let whole = decode(vendor.adapter.as_ref(), &bytes, &[]);
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                at.sort_unstable();
                let pieces = decode(vendor.adapter.as_ref(), &bytes, &at);
                prop_assert_eq!(
                    &pieces, &whole,
                    "{}/{} split at {:?}", vendor.dir.display(), stem, at
                );
            }
        }
    }
}

/// Every byte on its own: the hardest split.
#[test]
fn streams_fed_byte_by_byte_decode_the_same() {
    for vendor in vendors_under_test() {
        for (stem, bytes) in vendor.streams() {
            let whole = decode(vendor.adapter.as_ref(), &bytes, &[]);
            let every: Vec<usize> = (1..bytes.len()).collect();
            assert_eq!(
                decode(vendor.adapter.as_ref(), &bytes, &every),
                whole,
                "{}/{stem}",
                vendor.dir.display()
            );
        }
    }
}
