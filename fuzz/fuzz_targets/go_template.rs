//! Any template source: the Go-template translator and tera compile or
//! refuse it, and a compiled template renders or errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_body_generator::BodyTemplate;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(template) = BodyTemplate::compile(source) {
        let data = serde_json::json!({
            "req_body": {"content": "hi", "messages": [{"role": "user", "content": "x"}], "n": 1.5},
            "req_headers": {"X-Llm": ["openai"]},
            "variables": {"model": "gpt-4o"}
        });
        let _ = template.render(&data);
    }
});
