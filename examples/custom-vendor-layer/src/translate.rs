//! The Acme dialect and its mapping to and from OpenAI chat completions:
//! pure functions on JSON values, no tower or HTTP types.
//!
//! Acme, a made-up vendor, takes `{"engine", "prompt", "max_tokens",
//! "stream"}` and answers `{"id", "created", "output": {"text"}, "finish",
//! "tokens": {"in", "out"}}`, or, when streaming, `token` events
//! (`{"text"}`) and one `end` event (`{"finish", "tokens"}`). Its errors
//! look like `{"fault": {"reason"}}`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// What a translation needs from the config.
#[derive(Clone, Debug)]
pub(crate) struct Engines {
    /// OpenAI model name → Acme engine.
    pub(crate) by_model: BTreeMap<String, String>,
    /// The engine for a model that is not listed (or no model at all).
    pub(crate) default: String,
}

impl Engines {
    fn for_model(&self, model: Option<&str>) -> &str {
        model
            .and_then(|m| self.by_model.get(m))
            .map_or(self.default.as_str(), String::as_str)
    }
}

/// An OpenAI chat request that cannot be expressed in Acme's dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invalid(pub(crate) String);

/// Turns an OpenAI chat completion request into an Acme request.
///
/// Messages become one prompt, a line per message (`user: ...`), ending with
/// `assistant:` for Acme to complete. `content` may be a string or a list
/// of text parts.
pub(crate) fn chat_to_acme(chat: &Value, engines: &Engines) -> Result<Value, Invalid> {
    let Some(chat) = chat.as_object() else {
        return Err(Invalid("the body must be a JSON object".to_owned()));
    };
    let model = match chat.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(model)) => Some(model.as_str()),
        Some(_) => return Err(Invalid("`model` must be a string".to_owned())),
    };
    let messages = match chat.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => return Err(Invalid("`messages` must be a non-empty array".to_owned())),
    };
    let mut prompt = String::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| Invalid(format!("messages[{i}].role must be a string")))?;
        let content = message_text(message.get("content"))
            .ok_or_else(|| Invalid(format!("messages[{i}].content must be text")))?;
        prompt.push_str(role);
        prompt.push_str(": ");
        prompt.push_str(&content);
        prompt.push('\n');
    }
    prompt.push_str("assistant:");

    let mut acme = Map::new();
    acme.insert("engine".to_owned(), json!(engines.for_model(model)));
    acme.insert("prompt".to_owned(), Value::String(prompt));
    let max_tokens = chat
        .get("max_completion_tokens")
        .or_else(|| chat.get("max_tokens"));
    if let Some(max_tokens) = max_tokens.filter(|v| !v.is_null()) {
        if !max_tokens.is_u64() {
            return Err(Invalid(
                "`max_tokens` must be a positive integer".to_owned(),
            ));
        }
        acme.insert("max_tokens".to_owned(), max_tokens.clone());
    }
    if chat.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        acme.insert("stream".to_owned(), Value::Bool(true));
    }
    Ok(Value::Object(acme))
}

fn message_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Option<Vec<_>>>()
            .map(|texts| texts.join("")),
        _ => None,
    }
}

fn finish_reason(acme: Option<&Value>) -> Value {
    match acme.and_then(Value::as_str) {
        Some("max_tokens") => json!("length"),
        Some("filtered") => json!("content_filter"),
        _ => json!("stop"),
    }
}

fn usage(tokens: Option<&Value>) -> Value {
    let count = |key: &str| {
        tokens
            .and_then(|t| t.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let (prompt, completion) = (count("in"), count("out"));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// Turns an Acme answer into an OpenAI `chat.completion`; `model` is the
/// model the client asked for.
pub(crate) fn acme_to_chat(acme: &Value, model: &str) -> Result<Value, Invalid> {
    let text = acme
        .pointer("/output/text")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid("the Acme answer has no output.text".to_owned()))?;
    Ok(json!({
        "id": acme.get("id").and_then(Value::as_str).unwrap_or("acme"),
        "object": "chat.completion",
        "created": acme.get("created").and_then(Value::as_u64).unwrap_or(0),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason(acme.get("finish")),
        }],
        "usage": usage(acme.get("tokens")),
    }))
}

/// The reason an Acme error body gives, if it has one.
pub(crate) fn acme_fault(acme: &Value) -> Option<&str> {
    acme.pointer("/fault/reason").and_then(Value::as_str)
}

/// Turns one Acme stream event into the `data` of OpenAI
/// `chat.completion.chunk` events; `created` is when the stream started
/// (Unix seconds). `None` when the event is not Acme's (it then passes
/// through untouched).
pub(crate) fn acme_event_to_chunks(
    event: Option<&str>,
    data: &Value,
    model: &str,
    created: u64,
) -> Option<Vec<String>> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-acme",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    match event {
        Some("token") => {
            let text = data.get("text").and_then(Value::as_str)?;
            Some(vec![
                chunk(json!({"content": text}), Value::Null).to_string(),
            ])
        }
        Some("end") => {
            let mut last = chunk(json!({}), finish_reason(data.get("finish")));
            last["usage"] = usage(data.get("tokens"));
            Some(vec![last.to_string(), "[DONE]".to_owned()])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines() -> Engines {
        Engines {
            by_model: [("gpt-4o".to_owned(), "acme-large".to_owned())]
                .into_iter()
                .collect(),
            default: "acme-small".to_owned(),
        }
    }

    #[test]
    fn chat_becomes_one_prompt() {
        let chat = json!({
            "model": "gpt-4o",
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}
            ]
        });
        let acme = chat_to_acme(&chat, &engines()).unwrap();
        assert_eq!(
            acme,
            json!({
                "engine": "acme-large",
                "prompt": "system: Be brief.\nuser: Hi there\nassistant:",
                "max_tokens": 64
            })
        );
        let other =
            json!({"model": "o1", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let acme = chat_to_acme(&other, &engines()).unwrap();
        assert_eq!(acme["engine"], "acme-small");
        assert_eq!(acme["stream"], true);
    }

    #[test]
    fn unusable_chats_are_named() {
        for (chat, needle) in [
            (json!([]), "object"),
            (json!({"model": 1, "messages": []}), "model"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user", "content": 3}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
                "max_tokens",
            ),
        ] {
            let Invalid(message) = chat_to_acme(&chat, &engines()).unwrap_err();
            assert!(message.contains(needle), "{message}");
        }
    }

    #[test]
    fn answer_becomes_a_chat_completion() {
        let acme = json!({
            "id": "acme-1", "created": 1700000000,
            "output": {"text": "Hello!"}, "finish": "max_tokens",
            "tokens": {"in": 5, "out": 2}
        });
        let chat = acme_to_chat(&acme, "gpt-4o").unwrap();
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["model"], "gpt-4o");
        assert_eq!(chat["choices"][0]["message"]["content"], "Hello!");
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
        assert_eq!(chat["usage"]["total_tokens"], 7);
        assert!(acme_to_chat(&json!({"fault": {"reason": "x"}}), "m").is_err());
        assert_eq!(acme_fault(&json!({"fault": {"reason": "x"}})), Some("x"));
    }

    #[test]
    fn stream_events_become_chunks() {
        let chunks = acme_event_to_chunks(Some("token"), &json!({"text": "Hel"}), "m", 7).unwrap();
        let chunk: Value = serde_json::from_str(&chunks[0]).unwrap();
        assert_eq!(chunk["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(chunk["created"], 7);
        let chunks =
            acme_event_to_chunks(Some("end"), &json!({"tokens": {"in": 1, "out": 2}}), "m", 7)
                .unwrap();
        assert_eq!(chunks[1], "[DONE]");
        let last: Value = serde_json::from_str(&chunks[0]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["usage"]["total_tokens"], 3);
        assert!(acme_event_to_chunks(Some("ping"), &json!({}), "m", 7).is_none());
    }
}
