//! Translation: Go-template actions, with their `if` / `range` frames and
//! variables, written out as tera.

use std::fmt::Write as _;

use super::lex::{Token, tokenize};
use super::parse::{Operand, parse_pipeline};
use super::{FUNCTIONS, GoTemplateError, MAX_ARGS, NULL_VAR};

enum FrameKind {
    If,
    Range,
}

pub(super) struct Frame {
    kind: FrameKind,
    pub(super) line: usize,
    /// The tera expression `.` stands for inside this frame, if it changes.
    dot: Option<String>,
    /// Variables declared in this frame.
    vars: Vec<String>,
    seen_else: bool,
}

impl Frame {
    pub(super) fn keyword(&self) -> &'static str {
        match self.kind {
            FrameKind::If => "if",
            FrameKind::Range => "range",
        }
    }
}

#[derive(Default)]
pub(super) struct Translator {
    pub(super) out: String,
    pub(super) text: String,
    pub(super) frames: Vec<Frame>,
    top_vars: Vec<String>,
    loops: usize,
}

impl Translator {
    pub(super) fn flush_text(&mut self) -> Result<(), GoTemplateError> {
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

    pub(super) fn action(&mut self, body: &str, line: usize) -> Result<(), GoTemplateError> {
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
