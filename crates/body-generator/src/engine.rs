//! The template engine: tera, with the Go/Sprig functions the translated
//! templates call. Compiled once; rendering is a pure function of the data.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde_json::{Map, Value};
use switchboard_core::ConfigError;

use crate::gotmpl::{self, FUNCTIONS, MAX_ARGS, NULL_VAR};

const TEMPLATE_NAME: &str = "body";

/// A compiled body template: KrakenD Go-template style (translated to tera at
/// load time) or plain tera.
#[derive(Clone)]
pub struct BodyTemplate {
    tera: tera::Tera,
    go_style: bool,
    source: String,
    /// Literal text and `{{ .path | toJson }}` only (every seed vendor
    /// template): rendered directly, without tera's copies of the data.
    direct: Option<Vec<Segment>>,
}

#[derive(Clone, Debug)]
enum Segment {
    Text(String),
    /// `{{ .a.b | toJson }}`
    Json(Vec<String>),
    /// `{{ .a.b }}`: a scalar printed as tera prints it.
    Print(Vec<String>),
}

/// Plans a Go template made only of text and `{{ .a.b | toJson }}` /
/// `{{ toJson .a.b }}` actions; `None` for anything else.
fn plan_direct(source: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            segments.push(Segment::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find("}}")? + open;
        let action = rest[open + 2..close].trim();
        if action.starts_with('-') || action.ends_with('-') {
            return None;
        }
        let json = action
            .strip_suffix("| toJson")
            .map(str::trim_end)
            .or_else(|| action.strip_prefix("toJson ").map(str::trim_start));
        let path = json.unwrap_or(action).strip_prefix('.')?;
        let fields: Vec<String> = path.split('.').map(str::to_owned).collect();
        let plain = fields
            .iter()
            .all(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !plain {
            return None;
        }
        segments.push(if json.is_some() {
            Segment::Json(fields)
        } else {
            Segment::Print(fields)
        });
        rest = &rest[close + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    Some(segments)
}

/// Renders a direct plan, or `None` when a path crosses a value that is not
/// an object (tera then renders it, with Go's error).
fn render_direct<'a>(
    segments: &[Segment],
    top: impl Fn(&str) -> Option<&'a Value>,
) -> Option<Result<String, RenderError>> {
    // One buffer sized for the whole output (strings plus room for their
    // escapes), so that a large prompt is never copied by a regrowth.
    let capacity = segments
        .iter()
        .map(|segment| match segment {
            Segment::Text(text) => text.len(),
            Segment::Json(fields) | Segment::Print(fields) => {
                match lookup_path(fields, &top).flatten() {
                    Some(Value::String(text)) => text.len() + text.len() / 8 + 2,
                    _ => 32,
                }
            }
        })
        .sum();
    let mut out = String::with_capacity(capacity);
    for segment in segments {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Json(fields) => match lookup_path(fields, &top)? {
                Some(Value::String(text)) => push_json_string(&mut out, text),
                other => match to_json(other.unwrap_or(&Value::Null), false, true) {
                    Ok(json) => out.push_str(&json),
                    Err(message) => return Some(Err(RenderError { message })),
                },
            },
            Segment::Print(fields) => match lookup_path(fields, &top)? {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) => out.push_str(text),
                Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                Some(Value::Number(n)) => print_number(&mut out, n),
                // Lists and maps print as tera prints them.
                Some(_) => return None,
            },
        }
    }
    Some(Ok(out))
}

/// The value at a dot path: `Some(None)` when it is missing (or crosses a
/// `null`), `None` when it crosses a value that is not an object.
fn lookup_path<'a>(
    fields: &[String],
    top: &impl Fn(&str) -> Option<&'a Value>,
) -> Option<Option<&'a Value>> {
    let mut current = top(&fields[0]);
    for field in &fields[1..] {
        current = match current {
            Some(Value::Object(map)) => map.get(field),
            None | Some(Value::Null) => None,
            Some(_) => return None,
        };
    }
    Some(current)
}

/// A number as tera prints it: integers as they are, floats with Rust's
/// `Display`.
fn print_number(out: &mut String, n: &serde_json::Number) {
    use std::fmt::Write as _;
    let _ = if let Some(v) = n.as_i64() {
        write!(out, "{v}")
    } else if let Some(v) = n.as_u64() {
        write!(out, "{v}")
    } else if let Some(v) = n.as_f64() {
        write!(out, "{v}")
    } else {
        Ok(())
    };
}

impl fmt::Debug for BodyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyTemplate")
            .field("go_style", &self.go_style)
            .finish_non_exhaustive()
    }
}

/// A template failed while rendering (e.g. a tera template referring to a
/// missing variable).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenderError {
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template rendering failed: {}", self.message)
    }
}

impl std::error::Error for RenderError {}

impl BodyTemplate {
    /// Compiles a template. Go-template style (`{{ .x }}`, `{{ toJson .x }}`,
    /// `{{ if ... }}`) is translated to tera; anything else is taken as tera.
    /// An unsupported Go construct or a tera syntax error is a
    /// [`ConfigError`] whose message names the line.
    pub fn compile(source: &str) -> Result<Self, ConfigError> {
        crate::bounds::check(source).map_err(|message| ConfigError::new("", message))?;
        let go_style = gotmpl::is_go_template(source);
        let tera_source = if go_style {
            gotmpl::translate(source).map_err(|err| {
                ConfigError::new(
                    "",
                    if err.line == 0 {
                        err.message
                    } else {
                        format!("line {}: {}", err.line, err.message)
                    },
                )
            })?
        } else {
            source.to_owned()
        };
        let mut tera = tera::Tera::default();
        tera.autoescape_on(Vec::new());
        register(&mut tera);
        tera.add_raw_template(TEMPLATE_NAME, &tera_source)
            .map_err(|err| {
                ConfigError::new("", format!("invalid template: {}", error_chain(&err)))
            })?;
        Ok(Self {
            tera,
            go_style,
            source: tera_source,
            direct: if go_style { plan_direct(source) } else { None },
        })
    }

    /// Whether the template renders without tera (plain text and `toJson`
    /// of dot paths), reading its data in place.
    pub(crate) fn has_direct_plan(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether the template was written in Go-template style.
    pub fn is_go_style(&self) -> bool {
        self.go_style
    }

    /// Whether the (translated) template mentions a top-level name, so that
    /// data it never reads need not be built.
    pub(crate) fn mentions(&self, name: &str) -> bool {
        self.source.contains(name)
    }

    /// Renders with `data` (a JSON object of top-level names) as the context.
    pub fn render(&self, data: &Value) -> Result<String, RenderError> {
        if let (Some(plan), Value::Object(map)) = (self.direct.as_deref(), data)
            && let Some(rendered) = render_direct(plan, |name| map.get(name))
        {
            return rendered;
        }
        let mut map = match data {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            _ => {
                return Err(RenderError {
                    message: "template data must be a JSON object".to_owned(),
                });
            }
        };
        self.render_map(&mut map)
    }

    /// Renders with an owned data map plus top-level names read by
    /// reference (the parsed request body, the variables). A direct plan
    /// reads them in place; only tera needs its own copy.
    pub(crate) fn render_borrowing(
        &self,
        data: &mut Map<String, Value>,
        borrowed: &[(&str, &Value)],
    ) -> Result<String, RenderError> {
        if let Some(plan) = self.direct.as_deref() {
            let top = |name: &str| {
                borrowed
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .or_else(|| data.get(name))
            };
            if let Some(rendered) = render_direct(plan, top) {
                return rendered;
            }
        }
        for (name, value) in borrowed {
            data.insert((*name).to_owned(), (*value).clone());
        }
        self.render_map(data)
    }

    /// Renders with an owned data map (avoids a copy of large bodies).
    pub(crate) fn render_map(&self, data: &mut Map<String, Value>) -> Result<String, RenderError> {
        if let Some(rendered) = self
            .direct
            .as_deref()
            .and_then(|plan| render_direct(plan, |name| data.get(name)))
        {
            return rendered;
        }
        if self.go_style {
            data.insert(NULL_VAR.to_owned(), Value::Null);
        }
        let context =
            tera::Context::from_value(Value::Object(std::mem::take(data))).map_err(|err| {
                RenderError {
                    message: error_chain(&err),
                }
            })?;
        self.tera
            .render(TEMPLATE_NAME, &context)
            .map_err(|err| RenderError {
                message: error_chain(&err),
            })
    }
}

fn error_chain(err: &tera::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

// ---------------------------------------------------------------------------
// Functions.

type GoFn = fn(&[Value]) -> Result<Value, String>;

fn register(tera: &mut tera::Tera) {
    for (name, min, _) in FUNCTIONS {
        if let Some(function) = lookup(name) {
            let min = *min;
            tera.register_function(
                &format!("__go_{name}"),
                move |args: &HashMap<String, Value>| {
                    let positional = positional(args);
                    if positional.len() < min {
                        return Err(tera::Error::msg(format!("{name} needs {min} arguments")));
                    }
                    function(&positional).map_err(tera::Error::msg)
                },
            );
        }
    }
    tera.register_function("__go_entries", |args: &HashMap<String, Value>| {
        Ok(entries(args.get("a0").unwrap_or(&Value::Null)))
    });
    // For tera-style templates: `{{ x | toJson }}` with Go's escaping.
    tera.register_filter("toJson", |value: &Value, _: &HashMap<String, Value>| {
        to_json(value, false, true)
            .map(Value::String)
            .map_err(tera::Error::msg)
    });
}

fn positional(args: &HashMap<String, Value>) -> Vec<Value> {
    const NAMES: [&str; MAX_ARGS] = [
        "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10", "a11", "a12", "a13",
        "a14", "a15",
    ];
    NAMES
        .iter()
        .map_while(|name| args.get(*name).cloned())
        .collect()
}

fn lookup(name: &str) -> Option<GoFn> {
    Some(match name {
        "toJson" => |a| to_json(&a[0], false, true).map(Value::String),
        "toRawJson" => |a| to_json(&a[0], false, false).map(Value::String),
        "toPrettyJson" => |a| to_json(&a[0], true, true).map(Value::String),
        "toString" => |a| Ok(Value::String(plain(&a[0]))),
        "index" => |a| Ok(index(&a[0], &a[1..])),
        "len" => |a| {
            Ok(Value::from(match &a[0] {
                Value::String(s) => s.len(),
                Value::Array(items) => items.len(),
                Value::Object(map) => map.len(),
                Value::Null => 0,
                other => return Err(format!("len of {}", type_name(other))),
            }))
        },
        "default" => |a| {
            Ok(match a.get(1) {
                Some(value) if truthy(value) => value.clone(),
                _ => a[0].clone(),
            })
        },
        "empty" => |a| Ok(Value::Bool(!truthy(&a[0]))),
        "coalesce" => |a| Ok(a.iter().find(|v| truthy(v)).cloned().unwrap_or(Value::Null)),
        "upper" => |a| Ok(Value::String(plain(&a[0]).to_uppercase())),
        "lower" => |a| Ok(Value::String(plain(&a[0]).to_lowercase())),
        "title" => |a| Ok(Value::String(title(&plain(&a[0])))),
        "trim" => |a| Ok(Value::String(plain(&a[0]).trim().to_owned())),
        "trimAll" => |a| {
            let cutset = plain(&a[0]);
            Ok(Value::String(
                plain(&a[1]).trim_matches(|c| cutset.contains(c)).to_owned(),
            ))
        },
        "trimPrefix" => |a| {
            let (prefix, s) = (plain(&a[0]), plain(&a[1]));
            Ok(Value::String(
                s.strip_prefix(&prefix).unwrap_or(&s).to_owned(),
            ))
        },
        "trimSuffix" => |a| {
            let (suffix, s) = (plain(&a[0]), plain(&a[1]));
            Ok(Value::String(
                s.strip_suffix(&suffix).unwrap_or(&s).to_owned(),
            ))
        },
        "quote" => |a| {
            Ok(Value::String(
                a.iter()
                    .filter(|v| !v.is_null())
                    .map(|v| go_quote(&plain(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ))
        },
        "squote" => |a| {
            Ok(Value::String(
                a.iter()
                    .filter(|v| !v.is_null())
                    .map(|v| format!("'{}'", plain(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ))
        },
        "replace" => |a| {
            Ok(Value::String(
                plain(&a[2]).replace(&plain(&a[0]), &plain(&a[1])),
            ))
        },
        "join" => |a| {
            let separator = plain(&a[0]);
            Ok(Value::String(match &a[1] {
                Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(&separator),
                other => plain(other),
            }))
        },
        "split" => |a| {
            let separator = plain(&a[0]);
            let s = plain(&a[1]);
            // Sprig's split returns a map `_0`, `_1`, ...; `splitList` a list.
            let map: Map<String, Value> = s
                .split(separator.as_str())
                .enumerate()
                .map(|(i, part)| (format!("_{i}"), Value::String(part.to_owned())))
                .collect();
            Ok(Value::Object(map))
        },
        "contains" => |a| Ok(Value::Bool(plain(&a[1]).contains(&plain(&a[0])))),
        "hasPrefix" => |a| Ok(Value::Bool(plain(&a[1]).starts_with(&plain(&a[0])))),
        "hasSuffix" => |a| Ok(Value::Bool(plain(&a[1]).ends_with(&plain(&a[0])))),
        "b64enc" => |a| {
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(plain(&a[0])),
            ))
        },
        "b64dec" => |a| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(plain(&a[0]))
                .map_err(|e| format!("b64dec: {e}"))?;
            Ok(Value::String(
                String::from_utf8_lossy(&decoded).into_owned(),
            ))
        },
        "list" => |a| Ok(Value::Array(a.to_vec())),
        "eq" => |a| Ok(Value::Bool(a[1..].iter().any(|b| equal(&a[0], b)))),
        "ne" => |a| Ok(Value::Bool(!equal(&a[0], &a[1]))),
        "lt" => |a| compare(&a[0], &a[1]).map(|o| Value::Bool(o.is_lt())),
        "le" => |a| compare(&a[0], &a[1]).map(|o| Value::Bool(o.is_le())),
        "gt" => |a| compare(&a[0], &a[1]).map(|o| Value::Bool(o.is_gt())),
        "ge" => |a| compare(&a[0], &a[1]).map(|o| Value::Bool(o.is_ge())),
        "and" => |a| {
            Ok(a.iter()
                .find(|v| !truthy(v))
                .or(a.last())
                .cloned()
                .unwrap_or(Value::Null))
        },
        "or" => |a| {
            Ok(a.iter()
                .find(|v| truthy(v))
                .or(a.last())
                .cloned()
                .unwrap_or(Value::Null))
        },
        "not" => |a| Ok(Value::Bool(!truthy(&a[0]))),
        _ => return None,
    })
}

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

/// Writes `text` as a JSON string literal with Go's escaping. Runs that
/// need no escape are found 32 bytes at a time and copied in one piece.
fn push_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 8 + 2);
    out.push('"');
    let mut i = 0;
    while i < bytes.len() {
        let run_start = i;
        // Eight table loads at a time first (text with escapes close
        // together stops here); a run past 32 clean bytes goes on 32 bytes
        // at a time.
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

/// A value as text: strings as they are, `null` as nothing, the rest as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Go's emptiness: `nil`, `false`, `0`, `""`, empty list or map.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn index(value: &Value, keys: &[Value]) -> Value {
    let mut current = value;
    for key in keys {
        let next = match (current, key) {
            (Value::Object(map), Value::String(k)) => map.get(k),
            (Value::Array(items), Value::Number(n)) => n
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return Value::Null,
        }
    }
    current.clone()
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| "cannot compare numbers".to_owned()),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err(format!(
            "cannot compare {} with {}",
            type_name(a),
            type_name(b)
        )),
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        if at_word_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = c.is_whitespace();
    }
    out
}

/// Go's `strconv.Quote`, close enough for text: a double-quoted string with
/// backslash escapes for quotes, backslashes and control characters.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What `range` iterates: `[index, value]` pairs for a list, `[key, value]`
/// pairs in key order for a map (as Go does), nothing for anything else.
fn entries(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| Value::Array(vec![Value::from(i), v.clone()]))
                .collect(),
        ),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Array(
                keys.into_iter()
                    .map(|k| Value::Array(vec![Value::String(k.clone()), map[k].clone()]))
                    .collect(),
            )
        }
        _ => Value::Array(Vec::new()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn json_strings_parse_back_to_the_same_text() {
        for text in [
            "",
            "plain",
            "\"\\\n\r\t\u{0}\u{1f}\u{7f}",
            "<script>&</script>",
            "\u{2028}\u{2029}\u{2027}€😀",
        ] {
            let mut out = String::new();
            push_json_string(&mut out, text);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text, "{out}");
            assert!(!out.contains(['<', '>', '&', '\u{2028}']), "{out}");
        }
    }

    #[test]
    fn direct_rendering_equals_tera_rendering() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/templates");
        let contents = [
            "plain",
            "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7}",
            "</script><script>alert(1)</script> & \u{2028}\u{2029}",
            "{{ .req_body }} {% raw %} {{ toJson . }}",
            "😀 emoji ünïcödé",
        ];
        let mut planned = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let template = BodyTemplate::compile(&source).unwrap();
            if template.direct.is_some() {
                planned += 1;
            }
            let mut through_tera = template.clone();
            through_tera.direct = None;
            for content in contents {
                for data in [
                    json!({"req_body": {"content": content}}),
                    json!({"req_body": null}),
                    json!({"req_body": {"content": {"nested": [content, 1, true]}}}),
                ] {
                    assert_eq!(
                        template.render(&data).unwrap(),
                        through_tera.render(&data).unwrap(),
                        "{source}"
                    );
                }
            }
        }
        assert_eq!(planned, 7, "every seed template renders directly");
        // Plain prints of dot paths, as the gateway benchmark's template has.
        for source in [
            r#"{"model": {{ .req_body.model | toJson }}, "content": {{ .req_body.content | toJson }}, "max_tokens": {{ .req_body.max_tokens }}}"#,
            "[{{ .req_body.content }}] [{{ .req_body.content.x }}] [{{ .missing }}]",
        ] {
            let template = BodyTemplate::compile(source).unwrap();
            assert!(template.direct.is_some(), "{source}");
            let mut through_tera = template.clone();
            through_tera.direct = None;
            for value in [
                json!(128),
                json!(-3),
                json!(u64::MAX),
                json!(1.5),
                json!(1.0),
                json!(1e300),
                json!(true),
                json!(null),
                json!("text <&> \"q\""),
                json!([1, "a", null]),
                json!({"x": 1}),
            ] {
                for data in [
                    json!({"req_body": {"model": "m", "content": value, "max_tokens": value}}),
                    json!({"req_body": {"model": value, "max_tokens": value}}),
                    json!({"req_body": value}),
                ] {
                    assert_eq!(
                        template.render(&data),
                        through_tera.render(&data),
                        "{source} {data}"
                    );
                }
            }
        }
        let template = BodyTemplate::compile("{{ .req_body.content.x | toJson }}").unwrap();
        assert!(template.direct.is_some());
        // A path through a string falls back to tera, which refuses it as Go does.
        let data = json!({"req_body": {"content": "text"}});
        let mut through_tera = template.clone();
        through_tera.direct = None;
        assert_eq!(
            template.render(&data).is_ok(),
            through_tera.render(&data).is_ok()
        );
        assert!(
            BodyTemplate::compile("{{- .a | toJson }}")
                .unwrap()
                .direct
                .is_none()
        );
        assert!(
            BodyTemplate::compile("{{ .a | toJson | upper }}")
                .unwrap()
                .direct
                .is_none()
        );
    }

    use super::*;
    use serde_json::json;

    fn render(source: &str, data: Value) -> String {
        BodyTemplate::compile(source)
            .unwrap()
            .render(&data)
            .unwrap()
    }

    #[test]
    fn go_json_escapes_html() {
        assert_eq!(
            to_json(&json!("</script>&"), false, true).unwrap(),
            r#""\u003c/script\u003e\u0026""#
        );
    }

    #[test]
    fn missing_fields_are_null() {
        assert_eq!(
            render("{{ .req_body.x | toJson }}", json!({"req_body": null})),
            "null"
        );
        assert_eq!(render("{{ toJson .nothing.here }}", json!({})), "null");
        assert_eq!(render("[{{ .nothing }}]", json!({})), "[]");
    }

    #[test]
    fn sprig_functions() {
        let data = json!({"s": "  Hi There ", "l": ["a", "b"], "h": {"X-Llm": ["openai"]}, "n": 3});
        assert_eq!(render("{{ .s | trim | upper }}", data.clone()), "HI THERE");
        assert_eq!(render("{{ lower .s | trim }}", data.clone()), "hi there");
        assert_eq!(render("{{ join \",\" .l }}", data.clone()), "a,b");
        assert_eq!(render("{{ index .h \"X-Llm\" 0 }}", data.clone()), "openai");
        assert_eq!(render("{{ .missing | default \"d\" }}", data.clone()), "d");
        assert_eq!(
            render("{{ .s | trim | quote }}", data.clone()),
            "\"Hi There\""
        );
        assert_eq!(
            render("{{ replace \"Hi\" \"Yo\" .s | trim }}", data.clone()),
            "Yo There"
        );
        assert_eq!(render("{{ len .l }}", data.clone()), "2");
        assert_eq!(
            render("{{ if gt .n 2 }}big{{ else }}small{{ end }}", data.clone()),
            "big"
        );
        assert_eq!(
            render("{{ if and .n (not .missing) }}yes{{ end }}", data.clone()),
            "yes"
        );
        assert_eq!(
            render(
                "{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}",
                data.clone()
            ),
            "0=a;1=b;"
        );
        assert_eq!(
            render("{{ range .l }}[{{ . }}]{{ end }}", data.clone()),
            "[a][b]"
        );
        assert_eq!(
            render(
                "{{ range $k, $v := .h }}{{ $k }}:{{ index $v 0 }}{{ end }}",
                data.clone()
            ),
            "X-Llm:openai"
        );
        assert_eq!(
            render("{{ $m := .s | trim }}{{ $m | lower }}", data.clone()),
            "hi there"
        );
        assert_eq!(
            render("{{ if .missing }}a{{ else if .n }}b{{ end }}", data),
            "b"
        );
    }

    #[test]
    fn braces_next_to_actions() {
        assert_eq!(
            render("{\"a\":{\"b\":{{ .x | toJson }}}}", json!({"x": 1})),
            "{\"a\":{\"b\":1}}"
        );
        assert_eq!(render("{ {{- .x }}", json!({"x": 1})), "{1");
        assert_eq!(render("{%{{ .x }}#}", json!({"x": 1})), "{%1#}");
    }

    #[test]
    fn tera_templates_are_accepted() {
        assert_eq!(
            render(
                "{{ req_body.content | json_encode() }}",
                json!({"req_body": {"content": "a\"b"}})
            ),
            r#""a\"b""#
        );
        assert_eq!(
            render(
                "{{ req_body.content | toJson }}",
                json!({"req_body": {"content": "<"}})
            ),
            r#""\u003c""#
        );
        assert!(BodyTemplate::compile("{% if %}").is_err());
    }

    #[test]
    fn no_autoescape() {
        assert_eq!(
            render("{{ .x }}", json!({"x": "<a href='x'>&</a>"})),
            "<a href='x'>&</a>"
        );
    }
}
