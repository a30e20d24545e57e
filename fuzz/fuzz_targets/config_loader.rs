//! `switchboard::fuzzing::run("config_loader", ..)`: see that function for what is
//! checked; the committed corpus in `fuzz/corpus/config_loader` also runs as a
//! stable test (`gateway-bin/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchboard::fuzzing::run("config_loader", data);
});
