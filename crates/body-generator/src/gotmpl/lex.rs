//! Lexing: text and actions, with `{{-` / `-}}` trimming applied; then the
//! tokens of one action.

use super::GoTemplateError;

pub(super) enum Piece {
    Text(String),
    Action { body: String, line: usize },
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset].bytes().filter(|b| *b == b'\n').count() + 1
}

pub(super) fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub(super) fn lex(source: &str) -> Result<Vec<Piece>, GoTemplateError> {
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
pub(super) enum Token {
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

pub(super) fn tokenize(body: &str, line: usize) -> Result<Vec<Token>, GoTemplateError> {
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
