//! A pattern and a value (split at the first NUL): expansion never lets a
//! value add a path segment, a fragment or a dot segment.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, value) = text.split_once('\0').unwrap_or((text, "v"));
    let _ = switchboard::fuzzing::url_pattern(pattern, value);
});
