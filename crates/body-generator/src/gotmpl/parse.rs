//! Pipelines: the operands and commands of one action, parsed from its tokens.

use super::GoTemplateError;
use super::lex::Token;

#[derive(Debug, Clone)]
pub(super) enum Operand {
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
pub(super) fn parse_pipeline(
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
