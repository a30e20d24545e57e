//! Any config text: `parse_str` and `build_app` answer errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        switchboard::fuzzing::config(text);
    }
});
