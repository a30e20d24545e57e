//! Bounds a template must keep before it is translated or compiled: the
//! translator and tera's parser recurse once per nesting level, so a
//! template of thousands of nested `if`s would overflow the stack at load.

/// The deepest nesting of blocks (`if`, `range`, `with`, `for`, …) and of
/// brackets inside one action.
pub(crate) const MAX_NESTING: usize = 64;

/// The largest template source: 1 MiB.
pub(crate) const MAX_SOURCE_BYTES: usize = 1024 * 1024;

/// The most actions (`{{ … }}`, `{% … %}`) in one template.
pub(crate) const MAX_ACTIONS: usize = 20_000;

/// Checks the bounds, naming the line of the first action past one.
pub(crate) fn check(source: &str) -> Result<(), String> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(format!(
            "the template is larger than the limit of {MAX_SOURCE_BYTES} bytes"
        ));
    }
    let mut depth = 0usize;
    let mut actions = 0usize;
    let mut rest = source;
    while let Some(open) = find_open(rest) {
        let (close, after) = if rest[open..].starts_with("{{") {
            ("}}", open + 2)
        } else {
            ("%}", open + 2)
        };
        let line = source[..source.len() - rest.len() + open]
            .lines()
            .count()
            .max(1);
        let Some(len) = rest[after..].find(close) else {
            // Unclosed: the compiler reports it.
            return Ok(());
        };
        let inner = &rest[after..after + len];
        actions += 1;
        if actions > MAX_ACTIONS {
            return Err(format!(
                "line {line}: the template has more than {MAX_ACTIONS} actions"
            ));
        }
        let word = inner
            .trim_start_matches('-')
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == '-' || c == '(')
            .next()
            .unwrap_or("");
        let go = close == "}}";
        let opens = if go {
            matches!(word, "if" | "range" | "with" | "block" | "define")
        } else {
            matches!(word, "if" | "for" | "block" | "macro" | "filter" | "raw")
                || (word == "set" && !inner.contains('='))
        };
        let ends = if go {
            word == "end"
        } else {
            word.starts_with("end")
        };
        if opens {
            depth += 1;
            if depth > MAX_NESTING {
                return Err(format!(
                    "line {line}: blocks are nested deeper than {MAX_NESTING} levels"
                ));
            }
        } else if ends {
            depth = depth.saturating_sub(1);
        }
        let mut brackets = 0usize;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        for c in inner.chars() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '"' | '\'' | '`' => quote = Some(c),
                '(' | '[' | '{' => {
                    brackets += 1;
                    if brackets > MAX_NESTING {
                        return Err(format!(
                            "line {line}: brackets are nested deeper than {MAX_NESTING} levels"
                        ));
                    }
                }
                ')' | ']' | '}' => brackets = brackets.saturating_sub(1),
                _ => {}
            }
        }
        rest = &rest[after + len + close.len()..];
    }
    Ok(())
}

fn find_open(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'{' && (bytes[i + 1] == b'{' || bytes[i + 1] == b'%'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}x{}", "{{ if .a }}".repeat(65), "{{ end }}".repeat(65));
        assert!(check(&deep).unwrap_err().contains("nested deeper"));
        let ok = format!("{}x{}", "{{ if .a }}".repeat(64), "{{ end }}".repeat(64));
        assert!(check(&ok).is_ok());
        let flat = "{{ if .a }}x{{ end }}".repeat(5000);
        assert!(check(&flat).is_ok());
        let tera = format!("{}x{}", "{% if a %}".repeat(65), "{% endif %}".repeat(65));
        assert!(check(&tera).is_err());
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(65), ")".repeat(65));
        assert!(check(&parens).unwrap_err().contains("brackets"));
        assert!(check("{{ \"((((\" }}").is_ok());
    }
}
