//! Small pieces the vendor modules share: reading JSON answers, SSE streams
//! of JSON events, tool-result text. (The provider's `variables` are applied
//! to the request by the service before an adapter sees it.)

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use switchboard_core::sse::{Event, SseDecoder};

use crate::ir::{ContentPart, LlmError, Message, StreamEvent, Tool};

/// The most a single streamed event (an SSE event, an NDJSON line, an
/// event-stream frame) may hold before the stream is refused.
pub(crate) const MAX_STREAM_EVENT: usize = 4 * 1024 * 1024;

/// Parses a vendor's JSON answer into `T`; anything else is a 502.
pub(crate) fn parse_json<T: DeserializeOwned>(vendor: &str, body: &[u8]) -> Result<T, LlmError> {
    serde_json::from_slice(body)
        .map_err(|err| LlmError::bad_upstream(format!("{vendor} answered unreadable JSON: {err}")))
}

/// Serialises an upstream body.
pub(crate) fn to_body(value: &Value) -> Result<bytes::Bytes, LlmError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|err| LlmError::invalid_request(format!("cannot encode the request: {err}")))
}

/// Puts `value` under `key` when there is one.
pub(crate) fn put<T: Into<Value>>(object: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        object.insert(key.to_owned(), value.into());
    }
}

/// Tools in the Chat Completions shape (`{"type": "function", "function":
/// {name, description, parameters}}`) that Cohere and Ollama take too.
pub(crate) fn function_tools(tools: &[Tool]) -> Value {
    tools
        .iter()
        .map(|tool| {
            let mut function = Map::new();
            function.insert("name".to_owned(), Value::from(tool.name.as_str()));
            put(&mut function, "description", tool.description.clone());
            function.insert("parameters".to_owned(), tool.parameters.clone());
            serde_json::json!({"type": "function", "function": function})
        })
        .collect()
}

/// The text of a tool result; `vendor` cannot take images there.
pub(crate) fn tool_result_text(content: &[ContentPart], vendor: &str) -> Result<String, LlmError> {
    let mut text = String::new();
    for part in content {
        match part {
            ContentPart::Text(piece) => text.push_str(piece),
            _ => return Err(LlmError::unsupported("tool result images", vendor)),
        }
    }
    Ok(text)
}

/// The name of the tool whose call `tool_use_id` is, from the assistant
/// turns before `before` (vendors that match results by name need it); the
/// latest call with that id wins.
pub(crate) fn tool_name_for<'a>(
    messages: &'a [Message],
    before: usize,
    tool_use_id: &str,
) -> Option<&'a str> {
    messages.get(..before)?.iter().rev().find_map(|message| {
        message.content.iter().find_map(|part| match part {
            ContentPart::ToolUse { id, name, .. } if id == tool_use_id => Some(name.as_str()),
            _ => None,
        })
    })
}

/// Parses tool-call arguments as JSON, as vendors that take an object need.
pub(crate) fn arguments_object(arguments: &str) -> Result<Value, LlmError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_str(arguments).map_err(|err| {
        let mut error =
            LlmError::invalid_request(format!("tool call arguments are not JSON: {err}"));
        error.param = Some("tool_calls.function.arguments".to_owned());
        error
    })
}

/// A stream of server-sent events whose data are JSON, read event by event.
pub(crate) struct SseJson {
    decoder: SseDecoder,
    failed: bool,
}

impl SseJson {
    pub(crate) fn new() -> Self {
        Self {
            decoder: SseDecoder::new(MAX_STREAM_EVENT),
            failed: false,
        }
    }

    /// Whether an error event was already emitted (nothing follows it).
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// Marks the stream failed and emits `error`.
    pub(crate) fn fail(&mut self, error: LlmError, out: &mut Vec<StreamEvent>) {
        if !self.failed {
            self.failed = true;
            out.push(StreamEvent::Error(error));
        }
    }

    /// The complete events in `chunk` (with those carried over).
    pub(crate) fn events(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Vec<Event> {
        if self.failed {
            return Vec::new();
        }
        match self.decoder.decode(chunk) {
            Ok(events) => events,
            Err(err) => {
                self.fail(
                    LlmError::bad_upstream(format!("unreadable stream: {err}")),
                    out,
                );
                Vec::new()
            }
        }
    }

    /// The last event, if the stream ended without its blank line.
    pub(crate) fn rest(&mut self, out: &mut Vec<StreamEvent>) -> Option<Event> {
        if self.failed {
            return None;
        }
        match self.decoder.finish() {
            Ok(event) => event,
            Err(err) => {
                self.fail(
                    LlmError::bad_upstream(format!("unreadable stream: {err}")),
                    out,
                );
                None
            }
        }
    }
}

/// Reads an event's data as JSON into `T` (`None` for comments and empty
/// data), in one pass.
pub(crate) fn event_json<T: DeserializeOwned>(
    vendor: &str,
    event: &Event,
) -> Option<Result<T, LlmError>> {
    let data = event.data.as_deref()?;
    if data.trim().is_empty() {
        return None;
    }
    Some(
        serde_json::from_str(data).map_err(|err| {
            LlmError::bad_upstream(format!("{vendor} streamed unreadable JSON: {err}"))
        }),
    )
}

/// The error for a stream cut before the vendor's end marker.
pub(crate) fn cut_stream(vendor: &str) -> LlmError {
    LlmError::bad_upstream(format!("the {vendor} stream ended before its end"))
}

/// A string field.
pub(crate) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}
