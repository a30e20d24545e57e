//! The JSON writer: values and strings as Go's `encoding/json` writes them.

use serde_json::Value;

/// JSON as Go's `encoding/json` writes it (Sprig's `toJson`): `<`, `>`, `&`,
/// U+2028 and U+2029 are escaped so the output is also safe inside HTML.
/// Those characters only occur inside JSON strings, so escaping them in the
/// serialized text keeps it valid JSON.
pub(crate) fn to_json(value: &Value, pretty: bool, html_safe: bool) -> Result<String, String> {
    if let (Value::String(text), true) = (value, html_safe) {
        let mut out = String::with_capacity(text.len() + text.len() / 8 + 2);
        push_json_string(&mut out, text);
        return Ok(out);
    }
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| e.to_string())?;
    // A cheap byte scan first; 0xE2 leads the UTF-8 of U+2028 and U+2029.
    let needs_escape = text.bytes().any(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2));
    if !html_safe || !needs_escape {
        return Ok(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    Ok(escaped)
}

/// What a byte becomes inside a JSON string: 0 stays, `b'u'` is `\u00XX`,
/// anything else is the letter after a backslash. `<`, `>` and `&` are
/// escaped as Go does, to keep the output safe inside HTML.
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'<' as usize] = b'u';
    table[b'>' as usize] = b'u';
    table[b'&' as usize] = b'u';
    // The lead byte of U+2028 and U+2029: checked below.
    table[0xE2] = b'?';
    table
};

/// Whether any of 8 bytes may need escaping (see [`ESCAPES`]): eight table
/// loads joined without branches.
fn table_needs_escape(chunk: &[u8; 8]) -> bool {
    let [a, b, c, d, e, f, g, h] = *chunk;
    let t = |x: u8| ESCAPES[usize::from(x)];
    (t(a) | t(b) | t(c) | t(d) | t(e) | t(f) | t(g) | t(h)) != 0
}

/// How many bytes [`chunk_needs_escape`] looks at at once.
const CHUNK: usize = 32;

/// Whether any of 32 bytes may need escaping (see [`ESCAPES`]). Written as
/// comparisons folded into a byte without branches, which the compiler
/// turns into a few SSE2 instructions per 16 bytes.
fn chunk_needs_escape(chunk: &[u8; CHUNK]) -> bool {
    let mut any = 0u8;
    for &b in chunk {
        // `b | 4 == b'&'` is `"` or `&`; `b | 2 == b'>'` is `<` or `>`.
        any |= u8::from(b < 0x20)
            | u8::from(b | 4 == b'&')
            | u8::from(b | 2 == b'>')
            | u8::from(b == b'\\')
            | u8::from(b == 0xE2);
    }
    any != 0
}

/// How many leading bytes need no escape (see [`ESCAPES`]): eight table
/// loads at a time first (text with escapes close together stops there),
/// then, once a run is past 32 clean bytes, 32 bytes at a time.
fn clean_prefix(bytes: &[u8]) -> usize {
    let mut i = 0;
    let mut clean = 0;
    while let Some(chunk) = bytes
        .get(i..i + 8)
        .and_then(|c| <&[u8; 8]>::try_from(c).ok())
    {
        if table_needs_escape(chunk) {
            break;
        }
        i += 8;
        clean += 1;
        if clean == 4 {
            while let Some(chunk) = bytes
                .get(i..i + CHUNK)
                .and_then(|c| <&[u8; CHUNK]>::try_from(c).ok())
            {
                if chunk_needs_escape(chunk) {
                    break;
                }
                i += CHUNK;
            }
        }
    }
    while i < bytes.len() && ESCAPES[bytes[i] as usize] == 0 {
        i += 1;
    }
    i
}

/// Writes `text` as a JSON string literal with Go's escaping. Runs that
/// need no escape are found 32 bytes at a time and copied in one piece.
pub(super) fn push_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 8 + 2);
    out.push('"');
    let mut i = 0;
    while i < bytes.len() {
        let run_start = i;
        i += clean_prefix(&bytes[i..]);
        // `i` stops only at an ASCII byte, a lead byte or the end: a char
        // boundary, so the run is valid text.
        out.push_str(&text[run_start..i]);
        let Some(&byte) = bytes.get(i) else { break };
        match ESCAPES[byte as usize] {
            b'?' => {
                // U+2028 and U+2029 are E2 80 A8 / E2 80 A9; other
                // characters led by E2 are copied as they are.
                let len = if matches!(bytes.get(i + 1..i + 3), Some([0x80, 0xA8 | 0xA9])) {
                    out.push_str(if bytes[i + 2] == 0xA8 {
                        "\\u2028"
                    } else {
                        "\\u2029"
                    });
                    3
                } else {
                    let len = text[i..].chars().next().map_or(1, char::len_utf8);
                    out.push_str(&text[i..i + len]);
                    len
                };
                i += len;
            }
            b'u' => {
                out.push_str("\\u00");
                out.push(char::from(HEX[(byte >> 4) as usize]));
                out.push(char::from(HEX[(byte & 0xF) as usize]));
                i += 1;
            }
            escape => {
                out.push('\\');
                out.push(char::from(escape));
                i += 1;
            }
        }
    }
    out.push('"');
}
