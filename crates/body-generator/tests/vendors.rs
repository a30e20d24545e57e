//! Every seed vendor template, read from disk exactly as published, renders

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! the vendor payload for any content.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard_body_generator::BodyTemplate;

const VENDORS: [&str; 7] = [
    "gemini",
    "openai",
    "mistral",
    "deepseek",
    "llama",
    "anthropic",
    "cohere",
];

fn template(vendor: &str) -> BodyTemplate {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/templates")
        .join(format!("{vendor}.tmpl"));
    let source = std::fs::read_to_string(path).unwrap();
    let template = BodyTemplate::compile(&source).unwrap();
    assert!(template.is_go_style());
    template
}

fn expected(vendor: &str, content: &Value) -> Value {
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": content}]});
    match vendor {
        "gemini" => json!({"contents": [{"parts": [{"text": content}]}]}),
        "openai" => chat("gpt-4o"),
        "mistral" => chat("mistral-medium"),
        "deepseek" => chat("deepseek-chat"),
        "llama" => chat("meta-llama-3-70b-instruct"),
        "anthropic" => json!({
            "model": "claude-3-sonnet-20240229",
            "max_tokens": 1024,
            "temperature": 0.7,
            "messages": [{"role": "user", "content": content}]
        }),
        "cohere" => json!({
            "model": "command-r-plus",
            "chat_history": [],
            "message": content,
            "temperature": 0.5
        }),
        other => panic!("unknown vendor {other}"),
    }
}

fn render(template: &BodyTemplate, content: &Value) -> Value {
    let output = template
        .render(&json!({"req_body": {"content": content}}))
        .unwrap();
    serde_json::from_str(&output).unwrap_or_else(|err| panic!("invalid JSON ({err}): {output}"))
}

fn hard_contents() -> Vec<Value> {
    let control: String = (0u8..0x20).map(char::from).collect();
    vec![
        json!("hello"),
        json!(""),
        json!("say \"hi\" and 'bye'"),
        json!(r"C:\path\to\file \\ \n literal"),
        json!("line one\nline two\r\n\ttabbed"),
        json!(control),
        json!("\u{7f}\u{2028}\u{2029}"),
        json!("emoji 🚀👩‍💻 and ñ, 中文"),
        json!("</script><script>alert(1)</script> & <b>"),
        json!("{{ .req_body }} {{ .req_body.content | toJson }} {% raw %} {# x #}"),
        json!("}}}{{{"),
        json!("x".repeat(100 * 1024)),
        json!("\"\\\n</script>🚀".repeat(20 * 1024)),
        json!(42),
        json!({"nested": ["a", 1, null]}),
        Value::Null,
    ]
}

#[test]
fn seed_templates_render_vendor_payloads() {
    for vendor in VENDORS {
        let template = template(vendor);
        for content in hard_contents() {
            assert_eq!(
                render(&template, &content),
                expected(vendor, &content),
                "{vendor} with {:.80}",
                content.to_string()
            );
        }
    }
}

#[test]
fn missing_content_is_null() {
    for vendor in VENDORS {
        let output = template(vendor).render(&json!({"req_body": {}})).unwrap();
        let value: Value = serde_json::from_str(&output).unwrap();
        assert_eq!(value, expected(vendor, &Value::Null));
    }
}

#[test]
fn html_characters_are_escaped_like_go() {
    let output = template("openai")
        .render(&json!({"req_body": {"content": "</script>&"}}))
        .unwrap();
    assert!(
        output.contains(r#""\u003c/script\u003e\u0026""#),
        "{output}"
    );
}

#[test]
fn example_copies_match_the_test_templates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for vendor in VENDORS {
        let name = format!("{vendor}.tmpl");
        let test_copy = std::fs::read(root.join("tests/templates").join(&name)).unwrap();
        let example = std::fs::read(root.join("../../examples/configs/_llms").join(&name)).unwrap();
        assert_eq!(test_copy, example, "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_string_survives_every_template(content in any::<String>()) {
        for vendor in VENDORS {
            let template = template(vendor);
            let content = Value::String(content.clone());
            prop_assert_eq!(render(&template, &content), expected(vendor, &content));
        }
    }

    #[test]
    fn template_like_strings_survive(content in "[{}%#.| \"\\\\a-z<>/\n]{0,64}") {
        let template = template("cohere");
        let content = Value::String(content);
        prop_assert_eq!(render(&template, &content), expected("cohere", &content));
    }
}
