//! The template engine: tera, with the Go/Sprig functions the translated
//! templates call. Compiled once; rendering is a pure function of the data.

mod functions;
mod json;
mod raw;

use std::fmt;

use serde_json::{Map, Value};
use switchboard_core::ConfigError;

use crate::gotmpl::{self, NULL_VAR};

use functions::register;
use json::{push_json_string, to_json};

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
    /// Whether the direct plan reads only fields of `req_body`, so that it
    /// can render from the request's raw bytes.
    raw: bool,
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
            Segment::Json(fields) => {
                if let Err(error) = write_json(&mut out, lookup_path(fields, &top)?) {
                    return Some(Err(error));
                }
            }
            Segment::Print(fields) => {
                if !write_print(&mut out, lookup_path(fields, &top)?) {
                    return None;
                }
            }
        }
    }
    Some(Ok(out))
}

/// Writes a value as `{{ x | toJson }}` does (`null` when missing).
fn write_json(out: &mut String, value: Option<&Value>) -> Result<(), RenderError> {
    match value {
        Some(Value::String(text)) => push_json_string(out, text),
        other => out.push_str(
            &to_json(other.unwrap_or(&Value::Null), false, true)
                .map_err(|message| RenderError { message })?,
        ),
    }
    Ok(())
}

/// Writes a value as `{{ x }}` prints a scalar (nothing when missing or
/// `null`); false for a list or a map, which tera prints.
fn write_print(out: &mut String, value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => out.push_str(text),
        Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::Number(n)) => print_number(out, n),
        Some(_) => return false,
    }
    true
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
        let direct = if go_style { plan_direct(source) } else { None };
        let raw = direct.as_deref().is_some_and(raw::qualifies);
        Ok(Self {
            tera,
            go_style,
            source: tera_source,
            direct,
            raw,
        })
    }

    /// Whether the template renders without tera (plain text and `toJson`
    /// of dot paths), reading its data in place.
    pub(crate) fn has_direct_plan(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether [`render_raw`](Self::render_raw) applies: the template reads
    /// only fields of `req_body`, through a direct plan.
    pub(crate) fn renders_raw(&self) -> bool {
        self.raw
    }

    /// Renders from the request body's bytes without building it as a
    /// value, when the body is a JSON object without repeated keys and
    /// every field the template reads renders the same that way; `None`
    /// otherwise (the caller parses the body and renders as usual).
    pub(crate) fn render_raw(&self, body: &[u8]) -> Option<String> {
        match self.direct.as_deref() {
            Some(plan) if self.raw => raw::render(plan, body),
            _ => None,
        }
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
