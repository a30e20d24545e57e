//! Entry points for the fuzz targets in `fuzz/`: the parsers that read
//! config text or request values, reachable without a server. Not a stable
//! API.

use crate::url_pattern::{UrlPattern, Values};

/// Placeholder values that all come from one fuzzed string.
struct Fuzzed<'a>(&'a str);

impl Values for Fuzzed<'_> {
    fn param(&self, _: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn header(&self, _: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn query(&self, _: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn claim(&self, _: &str) -> Result<Option<String>, String> {
        Ok(Some(self.0.to_owned()))
    }
}

/// Parses `pattern` and expands every placeholder with `value`. An
/// expansion that succeeds is checked to stay one segment per value: it
/// never adds a `/`, `?` or `#` of its own, and never a dot segment.
pub fn url_pattern(pattern: &str, value: &str) -> Result<String, String> {
    let parsed = UrlPattern::parse(pattern)?;
    let expanded = parsed.expand(&Fuzzed(value))?;
    let literal = parsed.path_with("");
    let path = expanded.split('?').next().unwrap_or_default();
    let count = |s: &str, c: char| s.chars().filter(|&x| x == c).count();
    assert_eq!(
        count(path, '/'),
        count(&literal, '/'),
        "{pattern:?} with {value:?} gave {expanded:?}"
    );
    assert_eq!(
        count(&expanded, '#'),
        count(pattern, '#'),
        "{pattern:?} with {value:?} gave {expanded:?}"
    );
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "{pattern:?} with {value:?} gave a dot segment: {expanded:?}"
    );
    Ok(expanded)
}

/// Loads config text (no environment) and builds the gateway from it.
pub fn config(text: &str) {
    if let Ok(root) = crate::config::parse_str(text, &|_| None) {
        let loaded = crate::config::LoadedConfig {
            root,
            base_dir: std::path::PathBuf::from("/nonexistent"),
        };
        let _ = crate::build_app(&loaded);
    }
}

/// Compiles any template source; a compiled template renders or errors.
pub fn go_template(source: &str) {
    if let Ok(template) = switchboard_body_generator::BodyTemplate::compile(source) {
        let data = serde_json::json!({
            "req_body": {"content": "hi", "messages": [{"role": "user", "content": "x"}], "n": 1.5},
            "req_headers": {"X-Llm": ["openai"]},
            "variables": {"model": "gpt-4o"}
        });
        let _ = template.render(&data);
    }
}

/// Compiles any `modifier/martian` JSON, or refuses it.
pub fn martian(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = switchboard_header_modifier::ModifyHeadersLayer::try_from_config(&value);
    }
}

/// Feeds an event stream to the streamed masker in pieces of the size the
/// first byte gives.
pub fn masker_stream(data: &[u8]) {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let config = serde_json::json!({"streaming": true, "modifiers": [
        {"regexp": {"field": "choices.0.delta.content", "find": "sk-[a-z0-9]+", "replace": "[key]"}},
        {"literal": {"field": "delta.text", "find": "secret", "replace": "******"}}
    ]});
    let Ok(masker) = switchboard_response_masker::ResponseMasker::try_from_config(&config) else {
        return;
    };
    let Some(mut stream) = masker.sse_masker() else {
        return;
    };
    for chunk in bytes.chunks(usize::from(cut).max(1)) {
        if stream.push(chunk).is_err() {
            return;
        }
    }
    let _ = stream.finish();
}

/// Decodes a byte stream whole and in pieces of the size the first byte
/// gives; both must give the same events.
pub fn sse_decoder(data: &[u8]) {
    use switchboard_core::sse::SseDecoder;
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut decoder = SseDecoder::new(4096);
        decoder.decode(bytes).and_then(|mut events| {
            events.extend(decoder.finish()?);
            Ok(events)
        })
    };
    let pieces = {
        let mut decoder = SseDecoder::new(4096);
        let mut events = Vec::new();
        let mut result = Ok(());
        for chunk in bytes.chunks(usize::from(cut).max(1)) {
            match decoder.decode(chunk) {
                Ok(more) => events.extend(more),
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        result.and_then(|()| {
            events.extend(decoder.finish()?);
            Ok(events)
        })
    };
    if let (Ok(whole), Ok(pieces)) = (&whole, &pieces) {
        assert_eq!(whole, pieces, "decoding in pieces changed the events");
    }
}

/// Splits fuzz input at the first NUL into a pattern and a value.
pub fn url_pattern_input(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let (pattern, value) = text.split_once('\0').unwrap_or((text, "v"));
        let _ = url_pattern(pattern, value);
    }
}

/// Runs the named target on one input, as its fuzz target does; `false`
/// for an unknown target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "config_loader" => {
            if let Ok(text) = std::str::from_utf8(data) {
                config(text);
            }
        }
        "go_template" => {
            if let Ok(text) = std::str::from_utf8(data) {
                go_template(text);
            }
        }
        "martian" => martian(data),
        "masker_stream" => masker_stream(data),
        "sse_decoder" => sse_decoder(data),
        "url_pattern" => url_pattern_input(data),
        _ => return false,
    }
    true
}
