//! Rendering a direct plan from the client's JSON bytes without building
//! the body as a `serde_json::Value`: the top-level fields are located as
//! raw JSON text, and a string that is already written as `toJson` would
//! write it (Go's escaping) is copied verbatim. A large prompt is then
//! checked by a few vectorised byte searches and copied once, instead of
//! being unescaped into a `String` and escaped again.
//!
//! Only the happy case is handled here: a JSON object without repeated
//! keys, read by a plan whose actions are all `.req_body.<field>`. Anything
//! else (another shape, a syntax error, a repeated key, a field printed as
//! a list) is `None`, and the caller takes the ordinary path, which answers
//! exactly as before.

use std::borrow::Cow;

use serde_json::Value;

use super::json::push_json_string;
use super::{Segment, write_json, write_print};

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

/// The top-level fields of a JSON object, in document order: strings as
/// their validated literal text, other values parsed. `None` for anything
/// that is not such an object, or that a full parse would refuse (a
/// syntax error, a repeated key at any depth, invalid UTF-8).
fn top_fields(bytes: &[u8]) -> Option<Vec<(Cow<'_, str>, Field<'_>)>> {
    let mut fields: Vec<(Cow<'_, str>, Field<'_>)> = Vec::new();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(bytes, i + 1);
    if bytes.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, end) = string_at(bytes, i)?;
            let key = match key {
                Literal {
                    text,
                    escapes: false,
                    ..
                } => Cow::Borrowed(&text[1..text.len() - 1]),
                Literal { text, .. } => Cow::Owned(serde_json::from_str::<String>(text).ok()?),
            };
            i = skip_ws(bytes, end);
            if bytes.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(bytes, i + 1);
            let (field, end) = match bytes.get(i)? {
                b'"' => {
                    let (literal, end) = string_at(bytes, i)?;
                    (Field::String(literal), end)
                }
                b'{' | b'[' => {
                    let end = container_end(bytes, i)?;
                    let value = switchboard_core::json::from_slice_unique(&bytes[i..end]).ok()?;
                    (Field::Parsed(value), end)
                }
                _ => {
                    let end = i + bytes[i..]
                        .iter()
                        .position(|b| matches!(b, b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                        .unwrap_or(bytes.len() - i);
                    let value = serde_json::from_slice::<Value>(&bytes[i..end]).ok()?;
                    (Field::Parsed(value), end)
                }
            };
            if fields.iter().any(|(seen, _)| *seen == key) {
                return None;
            }
            fields.push((key, field));
            i = skip_ws(bytes, end);
            match bytes.get(i)? {
                b',' => i = skip_ws(bytes, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(bytes, i) == bytes.len()).then_some(fields)
}

/// JSON's whitespace.
fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string literal as the document writes it (quotes included).
struct Literal<'a> {
    text: &'a str,
    /// Whether it holds a backslash escape.
    escapes: bool,
}

/// The string literal starting at `bytes[start]` and the index after it,
/// validated as a full parse would: escapes, no control characters, UTF-8,
/// and `\u` escapes that decode (no lone surrogates).
fn string_at(bytes: &[u8], start: usize) -> Option<(Literal<'_>, usize)> {
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut i = start + 1;
    let mut escapes = false;
    let mut unicode = false;
    let end = loop {
        let at = i + memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        if has_control(&bytes[i..at]) {
            return None;
        }
        if bytes[at] == b'"' {
            break at + 1;
        }
        escapes = true;
        match bytes.get(at + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i = at + 2,
            b'u' => {
                let hex = bytes.get(at + 2..at + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                unicode = true;
                i = at + 6;
            }
            _ => return None,
        }
    };
    let text = std::str::from_utf8(&bytes[start..end]).ok()?;
    if unicode {
        // Surrogates must pair, as the parser requires.
        serde_json::from_str::<String>(text).ok()?;
    }
    Some((Literal { text, escapes }, end))
}

/// Whether any byte is a control character (not allowed raw in a JSON
/// string), 32 bytes at a time.
fn has_control(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        if chunk.iter().fold(0u8, |any, &b| any | u8::from(b < 0x20)) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20)
}

/// The index after the object or array starting at `bytes[start]`
/// (brackets matched outside strings; the slice is parsed afterwards).
fn container_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match bytes.get(i)? {
            b'"' => {
                i = string_at(bytes, i)?.1;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// One field, read as far as its use needs.
enum Field<'a> {
    /// A string, as the document writes it.
    String(Literal<'a>),
    /// Anything else, parsed (objects and arrays are checked for repeated
    /// keys at every depth on the way).
    Parsed(Value),
}

/// Renders `plan` from the request body `bytes`, or `None` for anything
/// the ordinary path must decide (see the module docs).
pub(super) fn render(plan: &[Segment], bytes: &[u8]) -> Option<String> {
    let fields = top_fields(bytes)?;
    let lookup = |name: &str| fields.iter().find(|(key, _)| key == name).map(|(_, f)| f);

    let capacity = plan
        .iter()
        .map(|segment| match segment {
            Segment::Text(text) => text.len(),
            Segment::Json(path) | Segment::Print(path) => match lookup(&path[1]) {
                Some(Field::String(literal)) => literal.text.len() + literal.text.len() / 8 + 2,
                _ => 32,
            },
        })
        .sum();
    let mut out = String::with_capacity(capacity);
    for segment in plan {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Json(path) => match lookup(&path[1]) {
                Some(Field::String(literal)) if is_canonical(literal) => out.push_str(literal.text),
                Some(Field::String(literal)) => {
                    let decoded: String = serde_json::from_str(literal.text).ok()?;
                    push_json_string(&mut out, &decoded);
                }
                Some(Field::Parsed(value)) => write_json(&mut out, Some(value)).ok()?,
                None => write_json(&mut out, None).ok()?,
            },
            Segment::Print(path) => match lookup(&path[1]) {
                Some(Field::String(literal)) => {
                    if literal.escapes {
                        let decoded: String = serde_json::from_str(literal.text).ok()?;
                        out.push_str(&decoded);
                    } else {
                        out.push_str(&literal.text[1..literal.text.len() - 1]);
                    }
                }
                other => {
                    let value = match other {
                        Some(Field::Parsed(value)) => Some(value),
                        _ => None,
                    };
                    if !write_print(&mut out, value) {
                        return None;
                    }
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
fn is_canonical(literal: &Literal<'_>) -> bool {
    let bytes = literal.text.as_bytes();
    let inner = &bytes[1..bytes.len() - 1];
    // `&`, `<`, `>` written as they are: the writer escapes them. (A bare
    // quote or control character cannot have passed the parser.)
    if memchr::memchr3(b'&', b'<', b'>', inner).is_some() {
        return false;
    }
    // U+2028 and U+2029 (E2 80 A8 / E2 80 A9) written as they are; other
    // characters led by E2 are written as they are by the writer too.
    for at in memchr::memchr_iter(0xE2, inner) {
        if matches!(inner.get(at + 1..at + 3), Some([0x80, 0xA8 | 0xA9])) {
            return false;
        }
    }
    if !literal.escapes {
        return true;
    }
    // Every escape must be one the writer uses.
    let mut next = 0;
    for at in memchr::memchr_iter(b'\\', inner) {
        if at < next {
            // The second backslash of `\\`.
            continue;
        }
        match inner.get(at + 1) {
            Some(b'"' | b'\\' | b'n' | b'r' | b't') => next = at + 2,
            Some(b'u') => match inner.get(at + 2..at + 6) {
                Some(hex) if is_written_escape(hex) => next = at + 6,
                _ => return false,
            },
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

    fn canonical(text: &str) -> bool {
        let (literal, end) = string_at(text.as_bytes(), 0).unwrap();
        assert_eq!(end, text.len());
        is_canonical(&literal)
    }

    #[test]
    fn canonical_strings_are_copied_and_others_rewritten() {
        assert!(canonical(
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
            assert!(!canonical(literal), "{literal}");
        }
        assert!(canonical("\"é ✓ \u{2030}\""));
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
        // What a full parse refuses is never rendered here.
        for body in [
            br#"{"prompt": "lone \ud800 surrogate"}"#.as_slice(),
            br#"{"prompt": "bad \x escape"}"#,
            b"{\"prompt\": \"raw \x01 control\"}",
            b"{\"prompt\": \"bad \xff utf-8\"}",
            br#"{"prompt": "a",}"#,
            br#"{"prompt" "a"}"#,
            br#"{"prompt": tru}"#,
            br#"{"prompt": [1, 2}"#,
            br#"{"prompt": 01}"#,
            br#"{"a": 1} {"b": 2}"#,
            br#"{"pr\u006fmpt": 1, "prompt": 2}"#,
        ] {
            assert_eq!(
                template.render_raw(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(
                switchboard_core::json::from_slice_unique(body).is_err(),
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
