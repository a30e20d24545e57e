//! Masking a server-sent event stream as it flows.

use std::sync::Arc;

use serde_json::Value;
use switchboard_core::ErrorResponse;
use switchboard_core::sse::{Event, SseDecoder, SseError};

use crate::masker::State;
use crate::modifier::StreamChain;
use crate::path::{self, Step};

/// Masks one `text/event-stream` as it flows, event by event.
///
/// Each event whose `data` is JSON has the configured fields masked. The
/// text at one location (`choices.0.delta.content`) is treated as one
/// continuous text across events: each event carries what is already
/// certain, and only as many trailing bytes as the longest possible match
/// are held back and carried into the next event with that field. The
/// held-back text is flushed:
/// - into the next JSON event that lacks the field, when the field's parent
///   object is there (an OpenAI `finish_reason` chunk with `delta: {}`);
/// - otherwise as an extra event copied from the last one that carried the
///   field, placed before that event, before a non-JSON event such as
///   `data: [DONE]`, or at the end of the stream.
///
/// Events without `data` (comments, keep-alives) and `event: ping` events
/// pass through untouched and do not break a text.
#[derive(Debug)]
pub struct SseMasker {
    state: Arc<State>,
    decoder: SseDecoder,
    open: Vec<OpenText>,
}

#[derive(Debug)]
struct OpenText {
    location: Vec<Step>,
    chain: StreamChain,
    /// The last event that carried this text: the model for a flush event.
    template: Arc<Template>,
}

/// A carrying event as sent: its type, its data and the masked locations it
/// carried (emptied in a flush event copied from it).
#[derive(Debug, Default)]
struct Template {
    name: Option<String>,
    data: String,
    locations: Vec<Vec<Step>>,
}

impl SseMasker {
    pub(crate) fn new(state: Arc<State>) -> Self {
        let decoder = SseDecoder::new(state.max_event_size);
        Self {
            state,
            decoder,
            open: Vec::new(),
        }
    }

    /// Feeds raw stream bytes; returns the masked bytes to send now.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SseError> {
        let mut out = Vec::new();
        for event in self.decoder.decode(chunk)? {
            for masked in self.mask_event(event) {
                masked.encode_into(&mut out);
            }
        }
        Ok(out)
    }

    /// Ends the stream; returns the last masked bytes (a trailing event
    /// without its blank line, and everything still held back).
    pub fn finish(&mut self) -> Result<Vec<u8>, SseError> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        if let Some(event) = self.decoder.finish()? {
            events.extend(self.mask_event(event));
        }
        events.extend(self.finish_events());
        for event in events {
            event.encode_into(&mut out);
        }
        Ok(out)
    }

    /// The error event that ends a stream that could not be masked.
    pub fn error_event(message: &str) -> Event {
        let error = ErrorResponse::bad_gateway(format!("response could not be masked: {message}"))
            .with_code("response_not_masked");
        Event::data(error.json_body().to_string()).with_event("error")
    }

    /// Masks one decoded event; returns the events to send in its place (it,
    /// possibly preceded by flush events).
    pub fn mask_event(&mut self, mut event: Event) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(data) = event.data.as_deref() else {
            out.push(event);
            return out;
        };
        if event.event.as_deref() == Some("ping") {
            out.push(event);
            return out;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(data) else {
            out.extend(self.finish_events());
            out.push(event);
            return out;
        };
        let modifiers = &self.state.modifiers;

        // Where this event carries text to mask, and through which modifiers.
        let mut locations: Vec<(Vec<Step>, Vec<usize>)> = Vec::new();
        let mut found = Vec::new();
        for (index, modifier) in modifiers.iter().enumerate() {
            found.clear();
            modifier.path.locate_strings(&value, &mut found);
            for location in found.drain(..) {
                match locations.iter_mut().find(|(l, _)| *l == location) {
                    Some((_, indexes)) => indexes.push(index),
                    None => locations.push((location, vec![index])),
                }
            }
        }

        // Texts this event does not continue end here.
        let mut changed = false;
        let mut i = 0;
        while i < self.open.len() {
            if locations.iter().any(|(l, _)| *l == self.open[i].location) {
                i += 1;
                continue;
            }
            let mut ended = self.open.remove(i);
            let rest = ended.chain.finish(modifiers);
            if rest.is_empty() {
                continue;
            }
            if place(&mut value, &ended.location, &rest) {
                changed = true;
            } else {
                out.push(flush_event(&ended, rest));
            }
        }

        let mut carried = Vec::with_capacity(locations.len());
        for (location, indexes) in locations {
            let position = match self.open.iter().position(|o| {
                o.location == location && o.chain.modifier_indexes().eq(indexes.iter().copied())
            }) {
                Some(position) => position,
                None => {
                    self.open.push(OpenText {
                        location: location.clone(),
                        chain: StreamChain::new(&indexes),
                        template: Arc::default(),
                    });
                    self.open.len() - 1
                }
            };
            carried.push(position);
            let open = &mut self.open[position];
            if let Some(Value::String(text)) = path::get_mut(&mut value, &location) {
                let masked = open.chain.push(modifiers, text);
                if masked != *text {
                    *text = masked;
                    changed = true;
                }
            }
        }

        if changed {
            event.data = Some(value.to_string());
        }
        if !carried.is_empty() {
            let template = Arc::new(Template {
                name: event.event.clone(),
                data: event.data.clone().unwrap_or_default(),
                locations: carried
                    .iter()
                    .map(|&i| self.open[i].location.clone())
                    .collect(),
            });
            for i in carried {
                self.open[i].template = template.clone();
            }
        }
        out.push(event);
        out
    }

    /// Ends every open text: returns the flush events for what was held
    /// back.
    pub fn finish_events(&mut self) -> Vec<Event> {
        let modifiers = &self.state.modifiers;
        self.open
            .drain(..)
            .filter_map(|mut ended| {
                let rest = ended.chain.finish(modifiers);
                (!rest.is_empty()).then(|| flush_event(&ended, rest))
            })
            .collect()
    }
}

/// Puts flushed text at its location in an event that lacks it, when the
/// parent object is there.
fn place(value: &mut Value, location: &[Step], text: &str) -> bool {
    match path::parent_object_mut(value, location) {
        Some((map, key)) => match map.get_mut(key) {
            None => {
                map.insert(key.to_owned(), Value::String(text.to_owned()));
                true
            }
            Some(slot @ Value::Null) => {
                *slot = Value::String(text.to_owned());
                true
            }
            Some(_) => false,
        },
        None => false,
    }
}

fn flush_event(ended: &OpenText, rest: String) -> Event {
    let template = &*ended.template;
    let mut value = serde_json::from_str(&template.data).unwrap_or(Value::Null);
    for location in &template.locations {
        if let Some(slot) = path::get_mut(&mut value, location) {
            *slot = Value::String(String::new());
        }
    }
    if let Some(slot) = path::get_mut(&mut value, &ended.location) {
        *slot = Value::String(rest);
    }
    let mut event = Event::data(value.to_string());
    event.event = template.name.clone();
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResponseMasker;
    use serde_json::json;

    const CARD: &str = r"\b(?:\d[ -]?){13,16}\b";

    fn masker(field: &str) -> SseMasker {
        ResponseMasker::try_from_config(&json!({
            "streaming": true,
            "modifiers": [{"regexp": {"field": field, "find": CARD, "replace": "[card]"}}]
        }))
        .unwrap()
        .sse_masker()
        .unwrap()
    }

    fn openai_chunk(content: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        )
    }

    fn decode(bytes: &[u8]) -> Vec<Event> {
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events = decoder.decode(bytes).unwrap();
        events.extend(decoder.finish().unwrap());
        events
    }

    fn contents(events: &[Event]) -> String {
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    #[test]
    fn openai_card_split_across_events_keeps_the_event_count() {
        let mut sse = masker("choices.*.delta.content");
        let input = [
            openai_chunk("4111 11"),
            openai_chunk("11 1111 "),
            openai_chunk("1111"),
            format!(
                "data: {}\n\n",
                json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            ),
            "data: [DONE]\n\n".to_owned(),
        ];
        let mut out = Vec::new();
        for chunk in &input {
            let bytes = sse.push(chunk.as_bytes()).unwrap();
            // Every input event gives its output event at once.
            assert_eq!(decode(&bytes).len(), 1);
            out.extend(bytes);
        }
        out.extend(sse.finish().unwrap());
        let events = decode(&out);
        assert_eq!(events.len(), input.len());
        assert_eq!(contents(&events), "[card]");
        assert!(!String::from_utf8_lossy(&out).contains("1111"));
        assert_eq!(
            events[3]
                .data
                .as_deref()
                .map(|d| d.contains("\"finish_reason\":\"stop\"")),
            Some(true)
        );
        assert_eq!(events[4].data.as_deref(), Some("[DONE]"));
    }

    #[test]
    fn flush_before_done_synthesizes_an_event() {
        let mut sse = masker("choices.*.delta.content");
        let mut out = sse
            .push(openai_chunk("call 5555 5555 5555 4444").as_bytes())
            .unwrap();
        out.extend(sse.push(b"data: [DONE]\n\n").unwrap());
        out.extend(sse.finish().unwrap());
        let events = decode(&out);
        assert_eq!(events.len(), 3);
        assert_eq!(contents(&events), "call [card]");
        assert_eq!(events[2].data.as_deref(), Some("[DONE]"));
    }

    #[test]
    fn anthropic_text_flushes_before_block_stop() {
        let mut sse = masker("delta.text");
        let delta = |text: &str| {
            format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
            )
        };
        let stream = [
            delta("card 4000 0000"),
            "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_owned(),
            ": keep-alive\n\n".to_owned(),
            delta(" 0000 0002, thanks"),
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                .to_owned(),
        ];
        let mut out = Vec::new();
        for chunk in &stream {
            out.extend(sse.push(chunk.as_bytes()).unwrap());
        }
        out.extend(sse.finish().unwrap());
        let events = decode(&out);
        let text: String = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("content_block_delta"))
            .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
            .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(text, "card [card], thanks");
        assert_eq!(
            events.last().unwrap().event.as_deref(),
            Some("content_block_stop")
        );
        assert_eq!(events[1].event.as_deref(), Some("ping"));
        assert_eq!(events[2].comments, vec![" keep-alive".to_owned()]);
    }

    #[test]
    fn byte_by_byte_is_masked_too() {
        let mut sse = masker("choices.*.delta.content");
        let stream = format!(
            "{}{}data: [DONE]\n\n",
            openai_chunk("a 4111-1111-1111-1111"),
            openai_chunk(", b")
        );
        let mut out = Vec::new();
        for byte in stream.as_bytes() {
            out.extend(sse.push(std::slice::from_ref(byte)).unwrap());
        }
        out.extend(sse.finish().unwrap());
        assert_eq!(contents(&decode(&out)), "a [card], b");
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut sse = ResponseMasker::try_from_config(&json!({
            "max_event_size": 64,
            "modifiers": [{"upper": {"field": "a"}}]
        }))
        .unwrap()
        .sse_masker()
        .unwrap();
        assert!(
            sse.push(format!("data: {}\n\n", "x".repeat(100)).as_bytes())
                .is_err()
        );
    }
}
