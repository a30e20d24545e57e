//! Rendering a direct plan from the client's JSON bytes without building
//! the body as a `serde_json::Value`: the top-level fields are located as
//! raw JSON text, and a string that is already written as `toJson` would
//! write it (Go's escaping) is copied verbatim. A large prompt is then
//! scanned once and copied once, instead of being unescaped into a `String`
//! and escaped again.
//!
//! Only the happy case is handled here: a JSON object without repeated
//! keys, read by a plan whose actions are all `.req_body.<field>`. Anything
//! else (another shape, a syntax error, a repeated key, a field printed as
//! a list) is `None`, and the caller takes the ordinary path, which answers
//! exactly as before.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{push_json_string, to_json};
use super::{Segment, print_number};

/// The top name every action of a raw plan reads.
pub(super) const REQ_BODY: &str = "req_body";

/// Whether a direct plan can render from raw bytes: every action reads one
/// field of `req_body`.
pub(super) fn qualifies(plan: &[Segment]) -> bool {
    plan.iter().all(|segment| match segment {
        Segment::Text(_) => true,
        Segment::Json(fields) | Segment::Print(fields) => {
            fields.len() == 2 && fields[0] == REQ_BODY
        }
    })
}

/// The top-level fields of a JSON object, as raw text, in document order.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed from the document unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;

        impl<'de> Visitor<'de> for TopVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Fields<'de>, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some(Key(key)) = access.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = access.next_value()?;
                    if fields.iter().any(|(seen, _)| *seen == key) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(TopVisitor)
    }
}

/// One field, read as far as its use needs.
enum Field<'a> {
    /// A string, as its JSON text (quotes included).
    String(&'a str),
    /// Anything else, parsed (objects and arrays are checked for repeated
    /// keys at every depth on the way).
    Parsed(Value),
}

/// Renders `plan` from the request body `bytes`, or `None` for anything
/// the ordinary path must decide (see the module docs).
pub(super) fn render(plan: &[Segment], bytes: &[u8]) -> Option<String> {
    let Fields(raw) = serde_json::from_slice(bytes).ok()?;
    // Each field is looked at once, whatever the plan mentions; nested
    // values are checked for repeated keys even when the plan skips them,
    // as a full parse would refuse them.
    let mut fields: Vec<(Cow<'_, str>, Field<'_>)> = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let text = value.get();
        let field = match text.as_bytes().first() {
            Some(b'"') => Field::String(text),
            Some(b'{' | b'[') => {
                Field::Parsed(switchboard_core::json::from_slice_unique(text.as_bytes()).ok()?)
            }
            _ => Field::Parsed(serde_json::from_str(text).ok()?),
        };
        fields.push((key, field));
    }
    let lookup = |name: &str| fields.iter().find(|(key, _)| key == name).map(|(_, f)| f);

    let capacity = plan
        .iter()
        .map(|segment| match segment {
            Segment::Text(text) => text.len(),
            Segment::Json(path) | Segment::Print(path) => match lookup(&path[1]) {
                Some(Field::String(text)) => text.len() + text.len() / 8 + 2,
                _ => 32,
            },
        })
        .sum();
    let mut out = String::with_capacity(capacity);
    for segment in plan {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Json(path) => match lookup(&path[1]) {
                Some(Field::String(text)) if is_canonical(text) => out.push_str(text),
                Some(Field::String(text)) => {
                    let decoded: String = serde_json::from_str(text).ok()?;
                    push_json_string(&mut out, &decoded);
                }
                Some(Field::Parsed(value)) => out.push_str(&to_json(value, false, true).ok()?),
                None => out.push_str("null"),
            },
            Segment::Print(path) => match lookup(&path[1]) {
                None | Some(Field::Parsed(Value::Null)) => {}
                Some(Field::String(text)) => {
                    let inner = &text[1..text.len() - 1];
                    if inner.contains('\\') {
                        let decoded: String = serde_json::from_str(text).ok()?;
                        out.push_str(&decoded);
                    } else {
                        out.push_str(inner);
                    }
                }
                Some(Field::Parsed(Value::Bool(b))) => {
                    out.push_str(if *b { "true" } else { "false" })
                }
                Some(Field::Parsed(Value::Number(n))) => print_number(&mut out, n),
                Some(Field::Parsed(Value::String(_) | Value::Array(_) | Value::Object(_))) => {
                    return None;
                }
            },
        }
    }
    Some(out)
}

/// Whether a JSON string literal (quotes included, already validated by
/// the parser) is exactly what [`push_json_string`] writes for its value:
/// no `<`, `>`, `&`, U+2028 or U+2029 written as they are, and only the
/// escapes that writer uses (`\"`, `\\`, `\n`, `\r`, `\t`, lower-case
/// `\u00XX` for the other control characters and for `<`, `>`, `&`, and
/// `\u2028`, `\u2029`).
fn is_canonical(literal: &str) -> bool {
    let bytes = literal.as_bytes();
    let inner = &bytes[1..bytes.len() - 1];
    let mut i = 0;
    while i < inner.len() {
        i += super::json::clean_prefix(&inner[i..]);
        let Some(&byte) = inner.get(i) else {
            return true;
        };
        match byte {
            b'\\' => match inner.get(i + 1) {
                Some(b'"' | b'\\' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let Some(hex) = inner.get(i + 2..i + 6) else {
                        return false;
                    };
                    if !is_written_escape(hex) {
                        return false;
                    }
                    i += 6;
                }
                _ => return false,
            },
            // A character led by E2 other than U+2028 / U+2029 is written
            // as it is.
            0xE2 => {
                if matches!(inner.get(i + 1..i + 3), Some([0x80, 0xA8 | 0xA9])) {
                    return false;
                }
                i += 1;
            }
            // `<`, `>`, `&` written as they are (the writer escapes them);
            // a bare quote or control character cannot pass the parser.
            _ => return false,
        }
    }
    true
}

/// Whether `\uXXXX` (the four hex digits given) is an escape the writer
/// produces: control characters other than `\n`, `\r`, `\t`, and `<`, `>`,
/// `&`, U+2028, U+2029, all in lower-case hex.
fn is_written_escape(hex: &[u8]) -> bool {
    match hex {
        b"003c" | b"003e" | b"0026" | b"2028" | b"2029" => true,
        [b'0', b'0', high @ (b'0' | b'1'), low] => {
            let low = match low {
                b'0'..=b'9' => low - b'0',
                b'a'..=b'f' => low - b'a' + 10,
                _ => return false,
            };
            let code = (high - b'0') * 16 + low;
            !matches!(code, 0x09 | 0x0A | 0x0D)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::BodyTemplate;

    const SEED: &str = r#"{"model": {{ .req_body.model | toJson }}, "messages": [{"role": "user", "content": {{ .req_body.prompt | toJson }}}], "max_tokens": {{ .req_body.max_tokens }}}"#;

    /// The raw path and the ordinary one, from the same bytes.
    fn both(template: &str, body: &[u8]) -> (Option<String>, String) {
        let template = BodyTemplate::compile(template).unwrap();
        let raw = template.render_raw(body);
        let value = switchboard_core::json::from_slice_unique(body).unwrap();
        let ordinary = template
            .render_borrowing(&mut serde_json::Map::new(), &[(REQ_BODY, &value)])
            .unwrap();
        (raw, ordinary)
    }

    fn agrees(template: &str, body: &[u8]) {
        let (raw, ordinary) = both(template, body);
        let raw =
            raw.unwrap_or_else(|| panic!("no raw render of {}", String::from_utf8_lossy(body)));
        assert_eq!(raw, ordinary, "body {}", String::from_utf8_lossy(body));
    }

    #[test]
    fn the_seed_template_renders_the_same_from_raw_bytes() {
        for prompt in [
            "hello",
            "",
            "quote \" backslash \\ newline \n tab \t cr \r",
            "html <b>&amp;</b>",
            "unicode é ✓ \u{2028} \u{2029} \u{1F600}",
            "controls \u{0} \u{1f} \u{8} \u{c}",
        ] {
            let body = serde_json::to_vec(
                &json!({"model": "gpt-4o", "prompt": prompt, "max_tokens": 256}),
            )
            .unwrap();
            agrees(SEED, &body);
        }
        // Escapes the writer would spell otherwise: decoded and rewritten.
        for body in [
            br#"{"model":"a\/b","prompt":"\u0041\u00e9\b\f","max_tokens":1}"#.as_slice(),
            br#"{"model":"x","prompt":"\uD83D\uDE00 \u001F \u001f \u003C","max_tokens":2.5}"#,
            br#"{"prompt":"<&>","max_tokens":-0}"#,
            br#"  {"prompt" : "spaced" , "model":null, "max_tokens": 1e2}  "#,
            br#"{"pro\u006dpt":"escaped key","model":["a",{"b":1}],"max_tokens":true}"#,
        ] {
            agrees(SEED, body);
        }
    }

    #[test]
    fn canonical_strings_are_copied_and_others_rewritten() {
        assert!(is_canonical(
            r#""plain \" \\ \n \r \t \u0000 \u001f \u003c \u2028""#
        ));
        for literal in [
            r#""\/""#,
            r#""\b""#,
            r#""\u0041""#,
            r#""\u001F""#,
            r#""\u000a""#,
            r#""<""#,
            "\"\u{2028}\"",
        ] {
            assert!(!is_canonical(literal), "{literal}");
        }
        assert!(is_canonical("\"é ✓ \u{2030}\""));
    }

    #[test]
    fn anything_but_the_happy_case_goes_the_ordinary_way() {
        let template = BodyTemplate::compile(SEED).unwrap();
        for body in [
            br#"["not", "an", "object"]"#.as_slice(),
            br#"{"prompt": "a", "prompt": "b"}"#,
            br#"{"prompt": {"x": 1, "x": 2}}"#,
            br#"{"prompt": "unterminated}"#,
            br#"{"prompt": "a"} trailing"#,
            b"",
            b"   ",
            b"\xff",
        ] {
            assert_eq!(
                template.render_raw(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A list printed without toJson is tera's to print.
        let print_list = BodyTemplate::compile("{{ .req_body.items }}").unwrap();
        assert_eq!(print_list.render_raw(br#"{"items": [1, 2]}"#), None);
        // Plans that read anything but req_body fields never take this path.
        for source in [
            "{{ .req_body.a.b | toJson }}",
            "{{ .variables.x }}",
            "{{ .req_body | toJson }}",
        ] {
            let template = BodyTemplate::compile(source).unwrap();
            assert_eq!(template.render_raw(br#"{"a": {"b": 1}}"#), None, "{source}");
        }
    }

    #[test]
    fn generated_strings_agree() {
        // A deterministic spread of strings mixing every class the writer
        // treats apart.
        let alphabet = [
            "a",
            "Z",
            " ",
            "\"",
            "\\",
            "\n",
            "\r",
            "\t",
            "\u{0}",
            "\u{1b}",
            "<",
            ">",
            "&",
            "é",
            "\u{2028}",
            "\u{2029}",
            "\u{2030}",
            "✓",
            "\u{1F600}",
            "/",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..500 {
            let mut text = String::new();
            for _ in 0..(state % 40) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(alphabet[(state >> 33) as usize % alphabet.len()]);
            }
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let body = serde_json::to_vec(&json!({"model": "m", "prompt": text, "max_tokens": 1}))
                .unwrap();
            agrees(SEED, &body);
        }
    }
}
