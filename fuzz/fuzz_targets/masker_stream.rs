//! An event stream cut anywhere through the masker's stream state: never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_response_masker::ResponseMasker;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let config = serde_json::json!({"streaming": true, "modifiers": [
        {"regexp": {"field": "choices.0.delta.content", "find": "sk-[a-z0-9]+", "replace": "[key]"}},
        {"literal": {"field": "delta.text", "find": "secret", "replace": "******"}}
    ]});
    let Ok(masker) = ResponseMasker::try_from_config(&config) else {
        return;
    };
    let Some(mut stream) = masker.sse_masker() else {
        return;
    };
    let step = usize::from(cut).max(1);
    for chunk in bytes.chunks(step) {
        if stream.push(chunk).is_err() {
            return;
        }
    }
    let _ = stream.finish();
});
