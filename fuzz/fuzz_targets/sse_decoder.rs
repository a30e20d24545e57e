//! Any byte stream, cut anywhere: decoding in pieces gives the events of
//! decoding it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::sse::SseDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut decoder = SseDecoder::new(4096);
        decoder
            .decode(bytes)
            .and_then(|mut events| {
                events.extend(decoder.finish()?);
                Ok(events)
            })
    };
    let pieces = {
        let mut decoder = SseDecoder::new(4096);
        let step = usize::from(cut).max(1);
        let mut events = Vec::new();
        let mut result = Ok(());
        for chunk in bytes.chunks(step) {
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
        assert_eq!(whole, pieces);
    }
});
