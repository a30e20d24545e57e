//! Translation of KrakenD's Go-template style into tera, once, at load time.
//!
//! The supported subset: text, dot paths (`.a.b`, `$.a`, `$var.a`), string,
//! number, boolean and `nil` literals, pipelines (`x | f a`), parenthesised
//! pipelines, `if` / `else if` / `else` / `end`, `range` (with optional
//! `$i, $v :=`), `break`, `continue`, `$x := ...` and comments. Functions
//! are the ones listed in [`FUNCTIONS`]; each becomes a call of a tera
//! function `__go_<name>` registered by the engine. Everything else is refused
//! with the line and the construct named.

mod lex;
mod parse;
mod translate;

use lex::{Piece, is_go_space, lex};
use translate::Translator;

/// The Go and Sprig functions a template may call, with their arity
/// (minimum, maximum; `None` = any number).
pub(crate) const FUNCTIONS: &[(&str, usize, Option<usize>)] = &[
    ("toJson", 1, Some(1)),
    ("toRawJson", 1, Some(1)),
    ("toPrettyJson", 1, Some(1)),
    ("toString", 1, Some(1)),
    ("index", 1, None),
    ("len", 1, Some(1)),
    ("default", 1, Some(2)),
    ("empty", 1, Some(1)),
    ("coalesce", 1, None),
    ("upper", 1, Some(1)),
    ("lower", 1, Some(1)),
    ("title", 1, Some(1)),
    ("trim", 1, Some(1)),
    ("trimAll", 2, Some(2)),
    ("trimPrefix", 2, Some(2)),
    ("trimSuffix", 2, Some(2)),
    ("quote", 0, None),
    ("squote", 0, None),
    ("replace", 3, Some(3)),
    ("join", 2, Some(2)),
    ("split", 2, Some(2)),
    ("contains", 2, Some(2)),
    ("hasPrefix", 2, Some(2)),
    ("hasSuffix", 2, Some(2)),
    ("b64enc", 1, Some(1)),
    ("b64dec", 1, Some(1)),
    ("list", 0, None),
    ("eq", 2, None),
    ("ne", 2, Some(2)),
    ("lt", 2, Some(2)),
    ("le", 2, Some(2)),
    ("gt", 2, Some(2)),
    ("ge", 2, Some(2)),
    ("and", 1, None),
    ("or", 1, None),
    ("not", 1, Some(1)),
];

/// The most arguments a translated call passes (`a0` … `a15`).
pub(crate) const MAX_ARGS: usize = 16;

/// The context variable holding `null`, the value of `nil` and of a missing
/// field.
pub(crate) const NULL_VAR: &str = "__null";

/// A translation failure: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoTemplateError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl GoTemplateError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// Whether a template is written in Go-template style (`{{ .x }}`,
/// `{{ toJson .x }}`, `{{- if ... }}`, `{{ $v }}`) rather than tera.
pub(crate) fn is_go_template(source: &str) -> bool {
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let mut action = &rest[start + 2..];
        if let Some(stripped) = action.strip_prefix('-') {
            action = stripped;
        }
        let trimmed = action.trim_start();
        if trimmed.starts_with('.') || trimmed.starts_with('$') || trimmed.starts_with("/*") {
            return true;
        }
        let first_word: String = trimmed
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if matches!(
            first_word.as_str(),
            "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block"
        ) {
            return true;
        }
        let after_word = &trimmed[first_word.len()..];
        if FUNCTIONS.iter().any(|(name, _, _)| *name == first_word)
            && after_word.starts_with(is_go_space)
            && !after_word.trim_start().starts_with(['|', '(', '}'])
        {
            return true;
        }
        let end = action.find("}}").unwrap_or(action.len());
        if has_go_operand(&action[..end]) {
            return true;
        }
        rest = &action[end..];
    }
    false
}

/// Whether an action body has a `.field` or `$var` operand outside quotes.
fn has_go_operand(action: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for c in action.chars() {
        match quote {
            Some(q) if c == q && previous != '\\' => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None if (c == '.' || c == '$') && (previous.is_whitespace() || previous == '(') => {
                return true;
            }
            None => {}
        }
        previous = c;
    }
    false
}

/// Translates a Go template into tera source.
pub(crate) fn translate(source: &str) -> Result<String, GoTemplateError> {
    let pieces = lex(source)?;
    let mut translator = Translator::default();
    for piece in pieces {
        match piece {
            Piece::Text(text) => translator.text.push_str(&text),
            Piece::Action { body, line } => translator.action(&body, line)?,
        }
    }
    translator.flush_text()?;
    if let Some(frame) = translator.frames.last() {
        return Err(GoTemplateError::new(
            frame.line,
            format!(
                "`{{{{ {} }}}}` is never closed with `{{{{ end }}}}`",
                frame.keyword()
            ),
        ));
    }
    Ok(translator.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_go_style() {
        assert!(is_go_template("{{ .req_body.content | toJson }}"));
        assert!(is_go_template("{{toJson .resp_body}}"));
        assert!(is_go_template("{{- if x }}{{ end }}"));
        assert!(is_go_template("{{ $x := 1 }}"));
        assert!(is_go_template("{{ toJson \"x\" }}"));
        assert!(!is_go_template("{{ upper | lower }}"));
        assert!(!is_go_template("{{ req_body.content | json_encode() }}"));
        assert!(!is_go_template("{% if a %}{{ a }}{% endif %}"));
        assert!(!is_go_template("{{ x | default(value=\"a .b\") }}"));
        assert!(!is_go_template("plain text"));
    }

    #[test]
    fn translates_seed_action() {
        let out = translate("{\"a\": {{ .req_body.content | toJson }}}").unwrap();
        assert_eq!(
            out,
            "{\"a\": {{ __go_toJson(a0=req_body.content | default(value=__null)) }}}"
        );
    }

    #[test]
    fn trims_and_comments() {
        let out = translate("a  {{- /* note */ -}}  b {{- .x -}} c").unwrap();
        assert_eq!(out, "ab{{ x | default(value=__null) }}c");
    }

    #[test]
    fn control_flow() {
        let out = translate("{{ if eq .a \"x\" }}1{{ else if .b }}2{{ else }}3{{ end }}").unwrap();
        assert_eq!(
            out,
            "{% if __go_eq(a0=a | default(value=__null), a1=\"x\") %}1{% elif b | default(value=__null) %}2{% else %}3{% endif %}"
        );
        let out = translate("{{ range $i, $v := .list }}{{ $i }}{{ .name }}{{ end }}").unwrap();
        assert!(out.starts_with("{% for __e1 in __go_entries(a0=list | default(value=__null)) %}"));
        assert!(out.contains("{% set __v_i = __e1.0 %}"));
        assert!(out.contains("{{ __e1.1.name | default(value=__null) }}"));
    }

    #[test]
    fn refuses_unsupported_constructs_with_line() {
        let err = translate("{\n{{ template \"x\" }}\n}").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("template"), "{}", err.message);
        let err = translate("{{ define \"x\" }}{{ end }}").unwrap_err();
        assert!(err.message.contains("define"));
        let err = translate("\n\n{{ with .a }}{{ end }}").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("with"));
        let err = translate("{{ sha256sum .a }}").unwrap_err();
        assert!(err.message.contains("unsupported function `sha256sum`"));
        let err = translate("{{ if .a }}").unwrap_err();
        assert!(err.message.contains("never closed"));
        let err = translate("{{ $x }}").unwrap_err();
        assert!(err.message.contains("undefined variable"));
    }

    #[test]
    fn text_with_tera_delimiters_is_raw() {
        let out = translate("{% not tera %} {{ .a }}").unwrap();
        assert!(out.starts_with("{% raw %}{% not tera %} {% endraw %}"));
    }
}
