//! Any `modifier/martian` JSON: compiled or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_header_modifier::ModifyHeadersLayer;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = ModifyHeadersLayer::try_from_config(&value);
    }
});
