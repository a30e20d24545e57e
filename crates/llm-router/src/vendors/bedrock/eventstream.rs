//! AWS event-stream framing (the binary framing of Bedrock's
//! `ConverseStream`): an incremental, bounded decoder with no I/O.
//!
//! A frame is `total length (u32) | headers length (u32) | prelude CRC32 |
//! headers | payload | message CRC32`, all big-endian. The length prefix is
//! read here so that a frame larger than the limit is refused before it is
//! buffered; the frame itself (both checksums, the typed headers) is decoded
//! by `aws-smithy-eventstream`.

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};

/// The smallest frame: the 12-byte prelude and the 4-byte message CRC.
const MIN_FRAME: usize = 16;

/// One decoded frame: what kind of message it is and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// `:message-type`: `event`, `exception` or `error`.
    pub(crate) message_type: String,
    /// `:event-type` of an event, `:exception-type` of an exception, or
    /// `:error-code` of an error.
    pub(crate) kind: Option<String>,
    /// `:error-message` of an `error` frame.
    pub(crate) error_message: Option<String>,
    /// The payload (JSON for Bedrock).
    pub(crate) payload: Bytes,
}

/// A stream that is not valid event-stream framing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EventStreamError {
    /// A frame announces more bytes than the limit allows.
    #[error("event-stream frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A frame announces fewer bytes than its fixed parts take.
    #[error("event-stream frame length {0} is too small")]
    TooSmall(usize),
    /// A checksum or a header is wrong.
    #[error("invalid event-stream frame: {0}")]
    Invalid(String),
    /// The stream ended inside a frame.
    #[error("event stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Decodes frames from chunks as they arrive; holds at most one frame.
#[derive(Debug)]
pub(crate) struct EventStreamDecoder {
    buffer: BytesMut,
    max_frame: usize,
}

impl EventStreamDecoder {
    /// A decoder that refuses frames longer than `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_frame,
        }
    }

    /// Adds `chunk` and returns every frame it completes.
    pub(crate) fn decode(&mut self, chunk: &[u8]) -> Result<Vec<Frame>, EventStreamError> {
        self.buffer.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while self.buffer.len() >= 4 {
            let total = u32::from_be_bytes([
                self.buffer[0],
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
            ]) as usize;
            if total > self.max_frame {
                return Err(EventStreamError::TooLarge(total));
            }
            if total < MIN_FRAME {
                return Err(EventStreamError::TooSmall(total));
            }
            if self.buffer.len() < total {
                break;
            }
            let frame = self.buffer.split_to(total).freeze();
            let message = read_message_from(frame)
                .map_err(|err| EventStreamError::Invalid(err.to_string()))?;
            frames.push(Frame::from_message(&message));
        }
        Ok(frames)
    }

    /// Checks that the stream ended on a frame boundary.
    pub(crate) fn finish(&self) -> Result<(), EventStreamError> {
        if self.buffer.has_remaining() {
            return Err(EventStreamError::Truncated(self.buffer.len()));
        }
        Ok(())
    }
}

impl Frame {
    fn from_message(message: &Message) -> Self {
        let header = |name: &str| {
            message.headers().iter().find_map(|h| {
                if h.name().as_str() != name {
                    return None;
                }
                match h.value() {
                    HeaderValue::String(s) => Some(s.as_str().to_owned()),
                    _ => None,
                }
            })
        };
        let message_type = header(":message-type").unwrap_or_else(|| "event".to_owned());
        let kind = match message_type.as_str() {
            "exception" => header(":exception-type"),
            "error" => header(":error-code"),
            _ => header(":event-type"),
        };
        Self {
            message_type,
            kind,
            error_message: header(":error-message"),
            payload: message.payload().clone(),
        }
    }
}

/// Encodes one frame with string headers (for tests and mock vendors).
#[cfg(test)]
pub(crate) fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    use aws_smithy_types::event_stream::Header;
    let mut message = Message::new(Bytes::copy_from_slice(payload));
    for (name, value) in headers {
        message = message.add_header(Header::new(
            (*name).to_owned(),
            HeaderValue::String((*value).to_owned().into()),
        ));
    }
    let mut out = Vec::new();
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode_frame(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    /// A frame written out by hand: no headers, payload `{}`; the CRCs are
    /// the IEEE CRC-32 of the prelude and of everything before the last 4
    /// bytes (computed independently of the crate under test).
    #[test]
    fn decodes_a_frame_built_by_hand() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&18u32.to_be_bytes());
        frame.extend_from_slice(&0u32.to_be_bytes());
        frame.extend_from_slice(&crc32(&frame).to_be_bytes());
        frame.extend_from_slice(b"{}");
        let crc = crc32(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(frame, encode_frame(&[], b"{}"));
        let mut decoder = EventStreamDecoder::new(1024);
        let frames = decoder.decode(&frame).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].message_type, "event");
        assert_eq!(frames[0].payload.as_ref(), b"{}");
        decoder.finish().unwrap();
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let mut stream = event("messageStart", r#"{"role":"assistant"}"#);
        stream.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        stream.extend(encode_frame(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        let whole = EventStreamDecoder::new(4096).decode(&stream).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].kind.as_deref(), Some("contentBlockDelta"));
        assert_eq!(whole[2].message_type, "exception");
        assert_eq!(whole[2].kind.as_deref(), Some("throttlingException"));
        for cut in 1..stream.len() {
            let mut decoder = EventStreamDecoder::new(4096);
            let mut frames = decoder.decode(&stream[..cut]).unwrap();
            frames.extend(decoder.decode(&stream[cut..]).unwrap());
            decoder.finish().unwrap();
            assert_eq!(frames, whole, "cut at {cut}");
        }
        let mut decoder = EventStreamDecoder::new(4096);
        let mut frames = Vec::new();
        for byte in &stream {
            frames.extend(decoder.decode(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(frames, whole);
    }

    #[test]
    fn corrupt_checksums_are_refused() {
        let good = event("messageStop", r#"{"stopReason":"end_turn"}"#);
        // Prelude CRC.
        let mut bad = good.clone();
        bad[9] ^= 0x01;
        assert!(matches!(
            EventStreamDecoder::new(4096).decode(&bad),
            Err(EventStreamError::Invalid(_))
        ));
        // A payload byte, caught by the message CRC.
        let mut bad = good.clone();
        let at = bad.len() - 6;
        bad[at] ^= 0x20;
        assert!(matches!(
            EventStreamDecoder::new(4096).decode(&bad),
            Err(EventStreamError::Invalid(_))
        ));
    }

    #[test]
    fn oversized_small_and_truncated_frames_are_refused() {
        let good = event("messageStop", r#"{"stopReason":"end_turn"}"#);
        let mut decoder = EventStreamDecoder::new(good.len() - 1);
        assert_eq!(
            decoder.decode(&good[..4]),
            Err(EventStreamError::TooLarge(good.len()))
        );
        let mut decoder = EventStreamDecoder::new(4096);
        assert_eq!(
            decoder.decode(&[0, 0, 0, 3]),
            Err(EventStreamError::TooSmall(3))
        );
        let mut decoder = EventStreamDecoder::new(4096);
        assert!(decoder.decode(&good[..good.len() - 1]).unwrap().is_empty());
        assert_eq!(
            decoder.finish(),
            Err(EventStreamError::Truncated(good.len() - 1))
        );
    }
}
