//! Translation of KrakenD's Go-template style into tera, once, at load time.
//!
//! The supported subset: text, dot paths (`.a.b`, `$.a`, `$var.a`), string,
//! number, boolean and `nil` literals, pipelines (`x | f a`), parenthesised
//! pipelines, `if` / `else if` / `else` / `end`, `range` (with optional
//! `$i, $v :=`), `break`, `continue`, `$x := ...` and comments. Functions
//! are the ones listed in [`FUNCTIONS`]; each becomes a call of a tera
//! function `__go_<name>` registered by the engine. Everything else is refused
//! with the line and the construct named.

use std::fmt::Write as _;

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

// ---------------------------------------------------------------------------
// Lexing: text and actions, with `{{-` / `-}}` trimming applied.

enum Piece {
    Text(String),
    Action { body: String, line: usize },
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset].bytes().filter(|b| *b == b'\n').count() + 1
}

fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn lex(source: &str) -> Result<Vec<Piece>, GoTemplateError> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    let mut trim_next = false;
    while pos < source.len() {
        let Some(found) = source[pos..].find("{{") else {
            push_text(&mut pieces, &source[pos..], trim_next, false);
            break;
        };
        let start = pos + found;
        let line = line_of(source, start);
        let mut inner = start + 2;
        let trim_left =
            source[inner..].starts_with('-') && source[inner + 1..].starts_with(is_go_space);
        if trim_left {
            inner += 1;
        }
        push_text(&mut pieces, &source[pos..start], trim_next, trim_left);
        let close = find_close(source, inner, line)?;
        let mut body_end = close;
        let trim_right = source[..close].ends_with('-')
            && source[..close - 1].ends_with(is_go_space)
            && close - 1 > inner;
        if trim_right {
            body_end -= 1;
        }
        let body = source[inner..body_end].trim_matches(is_go_space);
        if !body.starts_with("/*") {
            pieces.push(Piece::Action {
                body: body.to_owned(),
                line,
            });
        } else if !body.ends_with("*/") {
            return Err(GoTemplateError::new(line, "unclosed comment"));
        }
        trim_next = trim_right;
        pos = close + 2;
    }
    Ok(pieces)
}

fn push_text(pieces: &mut Vec<Piece>, text: &str, trim_start: bool, trim_end: bool) {
    let mut text = text;
    if trim_start {
        text = text.trim_start_matches(is_go_space);
    }
    if trim_end {
        text = text.trim_end_matches(is_go_space);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_owned()));
    }
}

/// Finds the `}}` that closes the action starting at `from`, skipping
/// quoted strings and comments.
fn find_close(source: &str, from: usize, line: usize) -> Result<usize, GoTemplateError> {
    let bytes = source.as_bytes();
    let trimmed_from = from
        + source[from..]
            .len()
            .saturating_sub(source[from..].trim_start_matches(is_go_space).len());
    if source[trimmed_from..].starts_with("/*") {
        return match source[trimmed_from + 2..].find("*/") {
            Some(end) => {
                let after = trimmed_from + 2 + end + 2;
                let rest = &source[after..];
                let skipped =
                    rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n', '-']).len();
                if source[after + skipped..].starts_with("}}") {
                    Ok(after + skipped)
                } else {
                    Err(GoTemplateError::new(line, "comment must end with `*/}}`"))
                }
            }
            None => Err(GoTemplateError::new(line, "unclosed comment")),
        };
    }
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Ok(i),
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    } else if bytes[i] == b'\n' {
                        return Err(GoTemplateError::new(line, "unterminated quoted string"));
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(GoTemplateError::new(
        line,
        "unclosed action: `{{` without `}}`",
    ))
}

// ---------------------------------------------------------------------------
// Tokens of one action.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// `.`, `.a.b`
    Field(Vec<String>),
    /// `$`, `$x`, `$x.a.b` (name empty for `$`)
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

fn tokenize(body: &str, line: usize) -> Result<Vec<Token>, GoTemplateError> {
    let chars: Vec<char> = body.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if is_go_space(c) => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
                if chars.get(i) == Some(&'.') {
                    return Err(GoTemplateError::new(
                        line,
                        "field access on a parenthesised pipeline is not supported",
                    ));
                }
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Declare);
                i += 2;
            }
            '=' => {
                tokens.push(Token::Assign);
                i += 1;
            }
            '.' | '$' => {
                let is_var = c == '$';
                i += 1;
                let mut name = String::new();
                if is_var {
                    while i < chars.len() && ident_char(chars[i]) {
                        name.push(chars[i]);
                        i += 1;
                    }
                }
                let mut path = Vec::new();
                if !is_var {
                    // The leading dot starts the first segment.
                    let mut segment = String::new();
                    while i < chars.len() && ident_char(chars[i]) {
                        segment.push(chars[i]);
                        i += 1;
                    }
                    if !segment.is_empty() {
                        path.push(segment);
                    }
                }
                while chars.get(i) == Some(&'.') {
                    i += 1;
                    let mut segment = String::new();
                    while i < chars.len() && ident_char(chars[i]) {
                        segment.push(chars[i]);
                        i += 1;
                    }
                    if segment.is_empty() {
                        return Err(GoTemplateError::new(line, "empty field name after `.`"));
                    }
                    path.push(segment);
                }
                for segment in &path {
                    if !segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(GoTemplateError::new(
                            line,
                            format!("field name `{segment}` is not ASCII; use `index` instead"),
                        ));
                    }
                }
                tokens.push(if is_var {
                    Token::Var(name, path)
                } else {
                    Token::Field(path)
                });
            }
            '"' => {
                i += 1;
                let mut value = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(GoTemplateError::new(line, "unterminated quoted string"));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&escape) = chars.get(i) else {
                                return Err(GoTemplateError::new(
                                    line,
                                    "unterminated quoted string",
                                ));
                            };
                            i += 1;
                            match escape {
                                'n' => value.push('\n'),
                                't' => value.push('\t'),
                                'r' => value.push('\r'),
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                '\'' => value.push('\''),
                                '0' => value.push('\0'),
                                'u' => {
                                    let hex: String = chars.iter().skip(i).take(4).collect();
                                    let decoded = u32::from_str_radix(&hex, 16)
                                        .ok()
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| {
                                            GoTemplateError::new(line, "invalid `\\u` escape")
                                        })?;
                                    value.push(decoded);
                                    i += 4;
                                }
                                other => {
                                    return Err(GoTemplateError::new(
                                        line,
                                        format!("unsupported escape `\\{other}` in string"),
                                    ));
                                }
                            }
                        }
                        c => value.push(c),
                    }
                }
                tokens.push(Token::Str(value));
            }
            '`' => {
                i += 1;
                let mut value = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(GoTemplateError::new(line, "unterminated raw string"));
                    };
                    i += 1;
                    if c == '`' {
                        break;
                    }
                    value.push(c);
                }
                tokens.push(Token::Str(value));
            }
            '\'' => {
                return Err(GoTemplateError::new(
                    line,
                    "character constants ('x') are not supported; use a string",
                ));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let mut text = String::from(c);
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    text.push(chars[i]);
                    i += 1;
                }
                if let Ok(int) = text.parse::<i64>() {
                    tokens.push(Token::Int(int));
                } else if let Ok(float) = text.parse::<f64>() {
                    tokens.push(Token::Float(float));
                } else {
                    return Err(GoTemplateError::new(
                        line,
                        format!("invalid number `{text}`"),
                    ));
                }
            }
            c if ident_char(c) => {
                let mut name = String::new();
                while i < chars.len() && ident_char(chars[i]) {
                    name.push(chars[i]);
                    i += 1;
                }
                tokens.push(Token::Ident(name));
            }
            other => {
                return Err(GoTemplateError::new(
                    line,
                    format!("unexpected character `{other}` in action"),
                ));
            }
        }
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Pipelines.

#[derive(Debug, Clone)]
enum Operand {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Function(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Paren(Vec<Vec<Operand>>),
}

/// Parses `cmd | cmd | ...` from `tokens[*pos..]`, stopping at `)` or the end.
fn parse_pipeline(
    tokens: &[Token],
    pos: &mut usize,
    line: usize,
) -> Result<Vec<Vec<Operand>>, GoTemplateError> {
    let mut pipeline = Vec::new();
    let mut command = Vec::new();
    while let Some(token) = tokens.get(*pos) {
        *pos += 1;
        match token {
            Token::Pipe => {
                if command.is_empty() {
                    return Err(GoTemplateError::new(line, "missing command before `|`"));
                }
                pipeline.push(std::mem::take(&mut command));
            }
            Token::RParen => {
                *pos -= 1;
                break;
            }
            Token::LParen => {
                let inner = parse_pipeline(tokens, pos, line)?;
                if tokens.get(*pos) != Some(&Token::RParen) {
                    return Err(GoTemplateError::new(line, "unclosed `(`"));
                }
                *pos += 1;
                command.push(Operand::Paren(inner));
            }
            Token::Field(path) => command.push(Operand::Field(path.clone())),
            Token::Var(name, path) => command.push(Operand::Var(name.clone(), path.clone())),
            Token::Str(s) => command.push(Operand::Str(s.clone())),
            Token::Int(n) => command.push(Operand::Int(*n)),
            Token::Float(f) => command.push(Operand::Float(*f)),
            Token::Ident(name) => command.push(match name.as_str() {
                "true" => Operand::Bool(true),
                "false" => Operand::Bool(false),
                "nil" => Operand::Nil,
                _ => Operand::Function(name.clone()),
            }),
            Token::Declare | Token::Assign | Token::Comma => {
                return Err(GoTemplateError::new(line, "unexpected `:=`, `=` or `,`"));
            }
        }
    }
    if command.is_empty() {
        return Err(GoTemplateError::new(
            line,
            if pipeline.is_empty() {
                "missing value in action"
            } else {
                "missing command after `|`"
            },
        ));
    }
    pipeline.push(command);
    Ok(pipeline)
}

// ---------------------------------------------------------------------------
// Translation.

enum FrameKind {
    If,
    Range,
}

struct Frame {
    kind: FrameKind,
    line: usize,
    /// The tera expression `.` stands for inside this frame, if it changes.
    dot: Option<String>,
    /// Variables declared in this frame.
    vars: Vec<String>,
    seen_else: bool,
}

impl Frame {
    fn keyword(&self) -> &'static str {
        match self.kind {
            FrameKind::If => "if",
            FrameKind::Range => "range",
        }
    }
}

#[derive(Default)]
struct Translator {
    out: String,
    text: String,
    frames: Vec<Frame>,
    top_vars: Vec<String>,
    loops: usize,
}

impl Translator {
    fn flush_text(&mut self) -> Result<(), GoTemplateError> {
        if self.text.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.text);
        let special = text.contains("{{")
            || text.contains("{%")
            || text.contains("{#")
            || text.ends_with('{');
        if special {
            if text.contains("endraw") {
                return Err(GoTemplateError::new(
                    0,
                    "template text may not contain both `{%`/`{#` and `endraw`",
                ));
            }
            self.out.push_str("{% raw %}");
            self.out.push_str(&text);
            self.out.push_str("{% endraw %}");
        } else {
            self.out.push_str(&text);
        }
        Ok(())
    }

    fn dot(&self) -> Option<&str> {
        self.frames.iter().rev().find_map(|f| f.dot.as_deref())
    }

    fn has_var(&self, name: &str) -> bool {
        self.top_vars.iter().any(|v| v == name)
            || self.frames.iter().any(|f| f.vars.iter().any(|v| v == name))
    }

    fn declare(&mut self, name: &str) {
        match self.frames.last_mut() {
            Some(frame) => frame.vars.push(name.to_owned()),
            None => self.top_vars.push(name.to_owned()),
        }
    }

    fn action(&mut self, body: &str, line: usize) -> Result<(), GoTemplateError> {
        self.flush_text()?;
        let shown = format!("{{{{ {body} }}}}");
        let tokens = tokenize(body, line)?;
        let keyword = match tokens.first() {
            Some(Token::Ident(word)) => word.as_str(),
            _ => "",
        };
        match keyword {
            "if" => {
                let condition = self.expression(&tokens[1..], line, &shown)?;
                let _ = write!(self.out, "{{% if {condition} %}}");
                self.frames.push(Frame {
                    kind: FrameKind::If,
                    line,
                    dot: None,
                    vars: Vec::new(),
                    seen_else: false,
                });
            }
            "else" => self.else_branch(&tokens, line, &shown)?,
            "end" => {
                if tokens.len() > 1 {
                    return Err(GoTemplateError::new(
                        line,
                        format!("unexpected words in `{shown}`"),
                    ));
                }
                let frame = self.frames.pop().ok_or_else(|| {
                    GoTemplateError::new(line, "`{{ end }}` without a matching `if` or `range`")
                })?;
                self.out.push_str(match frame.kind {
                    FrameKind::If => "{% endif %}",
                    FrameKind::Range => "{% endfor %}",
                });
            }
            "range" => self.range(&tokens[1..], line, &shown)?,
            "break" | "continue" if tokens.len() == 1 => {
                if !self
                    .frames
                    .iter()
                    .any(|f| matches!(f.kind, FrameKind::Range))
                {
                    return Err(GoTemplateError::new(
                        line,
                        format!("`{shown}` outside of a `range`"),
                    ));
                }
                let _ = write!(self.out, "{{% {keyword} %}}");
            }
            "with" | "define" | "template" | "block" => {
                return Err(GoTemplateError::new(
                    line,
                    format!("unsupported Go template construct `{{{{ {keyword} }}}}` in `{shown}`"),
                ));
            }
            _ => match (tokens.first(), tokens.get(1)) {
                (Some(Token::Var(name, path)), Some(Token::Declare)) if path.is_empty() => {
                    let value = self.expression(&tokens[2..], line, &shown)?;
                    let _ = write!(self.out, "{{% set {} = {value} %}}", var_name(name));
                    self.declare(name);
                }
                (Some(Token::Var(_, _)), Some(Token::Assign)) => {
                    return Err(GoTemplateError::new(
                        line,
                        format!(
                            "unsupported variable assignment with `=` in `{shown}`; declare with `:=`"
                        ),
                    ));
                }
                _ => {
                    let value = self.expression(&tokens, line, &shown)?;
                    let _ = write!(self.out, "{{{{ {value} }}}}");
                }
            },
        }
        Ok(())
    }

    fn else_branch(
        &mut self,
        tokens: &[Token],
        line: usize,
        shown: &str,
    ) -> Result<(), GoTemplateError> {
        let Some(frame) = self.frames.last_mut() else {
            return Err(GoTemplateError::new(
                line,
                "`{{ else }}` without a matching `if`",
            ));
        };
        if matches!(frame.kind, FrameKind::Range) {
            return Err(GoTemplateError::new(
                line,
                format!(
                    "unsupported Go template construct `{{{{ else }}}}` inside `range` in `{shown}`"
                ),
            ));
        }
        if frame.seen_else {
            return Err(GoTemplateError::new(
                line,
                "`{{ else }}` after `{{ else }}`",
            ));
        }
        match tokens.get(1) {
            None => {
                frame.seen_else = true;
                frame.vars.clear();
                self.out.push_str("{% else %}");
            }
            Some(Token::Ident(word)) if word == "if" => {
                frame.vars.clear();
                let condition = self.expression(&tokens[2..], line, shown)?;
                let _ = write!(self.out, "{{% elif {condition} %}}");
            }
            Some(_) => {
                return Err(GoTemplateError::new(
                    line,
                    format!(
                        "unsupported Go template construct in `{shown}` (only `else` and `else if`)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn range(&mut self, tokens: &[Token], line: usize, shown: &str) -> Result<(), GoTemplateError> {
        // `range $i, $v := pipeline`, `range $v := pipeline`, `range pipeline`.
        let (key_var, value_var, rest) = match tokens {
            [
                Token::Var(k, kp),
                Token::Comma,
                Token::Var(v, vp),
                Token::Declare,
                rest @ ..,
            ] if kp.is_empty() && vp.is_empty() => (Some(k.clone()), Some(v.clone()), rest),
            [Token::Var(v, vp), Token::Declare, rest @ ..] if vp.is_empty() => {
                (None, Some(v.clone()), rest)
            }
            _ => (None, None, tokens),
        };
        let source = self.expression(rest, line, shown)?;
        self.loops += 1;
        let element = format!("__e{}", self.loops);
        let _ = write!(
            self.out,
            "{{% for {element} in __go_entries(a0={source}) %}}"
        );
        let mut vars = Vec::new();
        if let Some(key) = key_var {
            let _ = write!(self.out, "{{% set {} = {element}.0 %}}", var_name(&key));
            vars.push(key);
        }
        if let Some(value) = value_var {
            let _ = write!(self.out, "{{% set {} = {element}.1 %}}", var_name(&value));
            vars.push(value);
        }
        self.frames.push(Frame {
            kind: FrameKind::Range,
            line,
            dot: Some(format!("{element}.1")),
            vars,
            seen_else: false,
        });
        Ok(())
    }

    fn expression(
        &self,
        tokens: &[Token],
        line: usize,
        shown: &str,
    ) -> Result<String, GoTemplateError> {
        let mut pos = 0;
        let pipeline = parse_pipeline(tokens, &mut pos, line)
            .map_err(|e| GoTemplateError::new(line, format!("{} in `{shown}`", e.message)))?;
        if pos != tokens.len() {
            return Err(GoTemplateError::new(
                line,
                format!("unexpected `)` in `{shown}`"),
            ));
        }
        self.pipeline(&pipeline, line, shown)
    }

    fn pipeline(
        &self,
        pipeline: &[Vec<Operand>],
        line: usize,
        shown: &str,
    ) -> Result<String, GoTemplateError> {
        let mut acc: Option<String> = None;
        for command in pipeline {
            let Some((first, rest)) = command.split_first() else {
                continue;
            };
            match first {
                Operand::Function(name) => {
                    let mut args = rest
                        .iter()
                        .map(|operand| self.operand(operand, line, shown))
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Some(previous) = acc.take() {
                        args.push(previous);
                    }
                    acc = Some(call(name, &args, line, shown)?);
                }
                operand => {
                    if !rest.is_empty() {
                        return Err(GoTemplateError::new(
                            line,
                            format!("cannot give arguments to a non-function value in `{shown}`"),
                        ));
                    }
                    if acc.is_some() {
                        return Err(GoTemplateError::new(
                            line,
                            format!("a non-function value cannot follow `|` in `{shown}`"),
                        ));
                    }
                    acc = Some(self.operand(operand, line, shown)?);
                }
            }
        }
        acc.ok_or_else(|| GoTemplateError::new(line, format!("empty pipeline in `{shown}`")))
    }

    fn operand(
        &self,
        operand: &Operand,
        line: usize,
        shown: &str,
    ) -> Result<String, GoTemplateError> {
        Ok(match operand {
            Operand::Field(path) => {
                let base = self.dot().map(str::to_owned);
                field(base, path, line, shown)?
            }
            Operand::Var(name, path) if name.is_empty() => field(None, path, line, shown)?,
            Operand::Var(name, path) => {
                if !self.has_var(name) {
                    return Err(GoTemplateError::new(
                        line,
                        format!("undefined variable `${name}` in `{shown}`"),
                    ));
                }
                field(Some(var_name(name)), path, line, shown)?
            }
            Operand::Function(name) => call(name, &[], line, shown)?,
            Operand::Str(s) => tera_string(s).ok_or_else(|| {
                GoTemplateError::new(
                    line,
                    format!("string literal uses all of \", ' and ` in `{shown}`"),
                )
            })?,
            Operand::Int(n) => n.to_string(),
            Operand::Float(f) => {
                let text = format!("{f:?}");
                if !text
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
                {
                    return Err(GoTemplateError::new(
                        line,
                        format!("unsupported number format in `{shown}`"),
                    ));
                }
                text
            }
            Operand::Bool(b) => b.to_string(),
            Operand::Nil => NULL_VAR.to_owned(),
            Operand::Paren(inner) => self.pipeline(inner, line, shown)?,
        })
    }
}

fn var_name(name: &str) -> String {
    format!("__v_{name}")
}

/// A field lookup that yields `null` when any part is missing, as Go does
/// for maps.
fn field(
    base: Option<String>,
    path: &[String],
    line: usize,
    shown: &str,
) -> Result<String, GoTemplateError> {
    let (mut expr, rest) = match (base, path.split_first()) {
        (Some(base), _) => (base, path),
        (None, Some((first, rest))) => (first.clone(), rest),
        (None, None) => {
            return Err(GoTemplateError::new(
                line,
                format!(
                    "the whole data (`.` or `$`) cannot be used at the top level in `{shown}`; name a field"
                ),
            ));
        }
    };
    for segment in rest {
        expr.push('.');
        expr.push_str(segment);
    }
    Ok(format!("{expr} | default(value={NULL_VAR})"))
}

fn tera_string(s: &str) -> Option<String> {
    ['"', '\'', '`']
        .into_iter()
        .find(|q| !s.contains(*q))
        .map(|q| format!("{q}{s}{q}"))
}

fn call(name: &str, args: &[String], line: usize, shown: &str) -> Result<String, GoTemplateError> {
    let Some((_, min, max)) = FUNCTIONS.iter().find(|(known, _, _)| *known == name) else {
        return Err(GoTemplateError::new(
            line,
            format!("unsupported function `{name}` in `{shown}`"),
        ));
    };
    let max = max.unwrap_or(MAX_ARGS).min(MAX_ARGS);
    if args.len() < *min || args.len() > max {
        return Err(GoTemplateError::new(
            line,
            format!(
                "wrong number of arguments for `{name}` in `{shown}`: got {}, want {}",
                args.len(),
                if *min == max {
                    min.to_string()
                } else {
                    format!("{min} to {max}")
                }
            ),
        ));
    }
    let mut out = format!("__go_{name}(");
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "a{i}={arg}");
    }
    out.push(')');
    Ok(out)
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
