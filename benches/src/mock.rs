//! A cheap, deterministic mock LLM vendor. Every knob is a query parameter
//! of the request, so one process serves every scenario:
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `shape` | `openai`, `anthropic` or `gemini` | `openai` |
//! | `size` | bytes of answer text in a JSON answer | `256` |
//! | `stream` | `1`: answer `text/event-stream` | off |
//! | `chunks` | events in a stream | `20` |
//! | `chunk_size` | bytes of text per event | `16` |
//! | `interval_us` | pause between events (0: burst, all ready at once) | `0` |
//! | `ttft_us` | pause before the first byte of the body | `0` |
//! | `status` | answer this status with a vendor-shaped error body | `200` |
//!
//! Each event's text starts with `t` and its five-digit sequence number, so
//! a client can check that no event was lost or reordered
//! ([`check_sequence`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The response body type of the mock.
pub type MockBody = BoxBody<Bytes, Infallible>;

/// The mock's knobs, read from a query string.
#[derive(Clone, Debug)]
pub struct Knobs {
    shape: Shape,
    size: usize,
    stream: bool,
    chunks: usize,
    chunk_size: usize,
    interval: Duration,
    ttft: Duration,
    status: StatusCode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Knobs {
    /// Reads the knobs from a raw query string; unknown or bad values keep
    /// their defaults.
    pub fn from_query(query: Option<&str>) -> Self {
        let mut knobs = Self {
            shape: Shape::OpenAi,
            size: 256,
            stream: false,
            chunks: 20,
            chunk_size: 16,
            interval: Duration::ZERO,
            ttft: Duration::ZERO,
            status: StatusCode::OK,
        };
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = value.parse::<u64>().ok();
            match (key, number) {
                ("shape", _) => {
                    knobs.shape = match value {
                        "anthropic" => Shape::Anthropic,
                        "gemini" => Shape::Gemini,
                        _ => Shape::OpenAi,
                    }
                }
                ("size", Some(n)) => knobs.size = n as usize,
                ("stream", Some(n)) => knobs.stream = n != 0,
                ("chunks", Some(n)) => knobs.chunks = n as usize,
                ("chunk_size", Some(n)) => knobs.chunk_size = (n as usize).max(6),
                ("interval_us", Some(n)) => knobs.interval = Duration::from_micros(n),
                ("ttft_us", Some(n)) => knobs.ttft = Duration::from_micros(n),
                ("status", Some(n)) => {
                    knobs.status = u16::try_from(n)
                        .ok()
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .unwrap_or(StatusCode::OK);
                }
                _ => {}
            }
        }
        knobs
    }
}

/// Deterministic answer text of `len` bytes (JSON-safe).
pub fn filler(len: usize) -> String {
    const WORDS: &[u8] = b"the quick brown fox jumps over the lazy dog ";
    WORDS.iter().cycle().take(len).map(|&b| b as char).collect()
}

/// The text of event `seq`: `t00042` padded to `len` bytes.
fn event_text(seq: usize, len: usize) -> String {
    let mut text = format!("t{seq:05}");
    while text.len() < len {
        text.push('x');
    }
    text
}

fn json_answer(shape: Shape, text: &str) -> String {
    let text = serde_json::Value::String(text.to_owned()).to_string();
    match shape {
        Shape::OpenAi => format!(
            r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":{text}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":64,"total_tokens":76}}}}"#
        ),
        Shape::Anthropic => format!(
            r#"{{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{{"type":"text","text":{text}}}],"stop_reason":"end_turn","usage":{{"input_tokens":12,"output_tokens":64}}}}"#
        ),
        Shape::Gemini => format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":{text}}}],"role":"model"}},"finishReason":"STOP","index":0}}],"usageMetadata":{{"promptTokenCount":12,"candidatesTokenCount":64,"totalTokenCount":76}}}}"#
        ),
    }
}

fn error_answer(shape: Shape, status: StatusCode) -> String {
    match shape {
        Shape::Anthropic => format!(
            r#"{{"type":"error","error":{{"type":"api_error","message":"injected {}"}}}}"#,
            status.as_u16()
        ),
        Shape::Gemini => format!(
            r#"{{"error":{{"code":{0},"message":"injected {0}","status":"INTERNAL"}}}}"#,
            status.as_u16()
        ),
        Shape::OpenAi => format!(
            r#"{{"error":{{"message":"injected {}","type":"server_error","code":null}}}}"#,
            status.as_u16()
        ),
    }
}

fn event(shape: Shape, text: &str) -> Bytes {
    let text = serde_json::Value::String(text.to_owned()).to_string();
    Bytes::from(match shape {
        Shape::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{text}}},\"finish_reason\":null}}]}}\n\n"
        ),
        Shape::Anthropic => format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{text}}}}}\n\n"
        ),
        Shape::Gemini => format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":{text}}}],\"role\":\"model\"}},\"index\":0}}]}}\n\n"
        ),
    })
}

/// What an Anthropic stream sends before its first text delta.
const ANTHROPIC_START: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench\",\"type\":\"message\",",
    "\"role\":\"assistant\",\"model\":\"claude-sonnet-4\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,",
    "\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
);

/// The event of sequence number `seq` (an Anthropic stream's first one
/// carries `message_start` and `content_block_start` ahead of it).
fn event_at(shape: Shape, seq: usize, len: usize) -> Bytes {
    let event = event(shape, &event_text(seq, len));
    if seq == 0 && shape == Shape::Anthropic {
        let mut first = ANTHROPIC_START.as_bytes().to_vec();
        first.extend_from_slice(&event);
        return Bytes::from(first);
    }
    event
}

fn last_event(shape: Shape) -> Bytes {
    Bytes::from_static(match shape {
        Shape::OpenAi => b"data: [DONE]\n\n",
        Shape::Anthropic => concat!(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},",
            "\"usage\":{\"output_tokens\":64}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        )
        .as_bytes(),
        Shape::Gemini => b"",
    })
}

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<MockBody> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Answers one request as the knobs in its query string say. The request
/// body is read to the end first, as a vendor does.
pub async fn answer(request: Request<Incoming>) -> Result<Response<MockBody>, Infallible> {
    let knobs = Knobs::from_query(request.uri().query());
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if !knobs.stream {
        if !knobs.ttft.is_zero() {
            tokio::time::sleep(knobs.ttft).await;
        }
        if knobs.status != StatusCode::OK {
            return Ok(full(
                knobs.status,
                "application/json",
                error_answer(knobs.shape, knobs.status),
            ));
        }
        return Ok(full(
            StatusCode::OK,
            "application/json",
            json_answer(knobs.shape, &filler(knobs.size)),
        ));
    }
    let events = futures_util::stream::unfold(0usize, move |seq| {
        let knobs = knobs.clone();
        async move {
            let pause = if seq == 0 { knobs.ttft } else { knobs.interval };
            if seq > knobs.chunks {
                return None;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let bytes = if seq == knobs.chunks {
                last_event(knobs.shape)
            } else {
                event_at(knobs.shape, seq, knobs.chunk_size)
            };
            Some((Ok::<_, Infallible>(Frame::data(bytes)), seq + 1))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

/// Checks that a stream body carries events `t00000` … `t{n-1}` in order,
/// each exactly once. Returns how many it found.
pub fn check_sequence(body: &[u8], expected: usize) -> Result<usize, String> {
    let mut next = 0usize;
    let mut i = 0;
    while i + 6 <= body.len() {
        if body[i] == b't' && body[i + 1..i + 6].iter().all(u8::is_ascii_digit) {
            let digits = std::str::from_utf8(&body[i + 1..i + 6]).unwrap_or("0");
            let seq: usize = digits.parse().unwrap_or(usize::MAX);
            if seq != next {
                return Err(format!("event {seq} where {next} was expected"));
            }
            next += 1;
            i += 6;
        } else {
            i += 1;
        }
    }
    if next == expected {
        Ok(next)
    } else {
        Err(format!("{next} events where {expected} were expected"))
    }
}

/// Serves the mock on `listener` forever (HTTP/1.1 and HTTP/2).
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                .await;
        });
    }
}

/// Binds `addr` and serves the mock.
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve(listener).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_check() {
        let body: Vec<u8> = (0..3)
            .flat_map(|i| event(Shape::OpenAi, &event_text(i, 16)).to_vec())
            .collect();
        assert_eq!(check_sequence(&body, 3), Ok(3));
        assert!(check_sequence(&body, 4).is_err());
        let swapped: Vec<u8> = [1, 0]
            .iter()
            .flat_map(|&i| event(Shape::OpenAi, &event_text(i, 16)).to_vec())
            .collect();
        assert!(check_sequence(&swapped, 2).is_err());
    }
}
