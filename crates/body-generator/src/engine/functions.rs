//! The Go and Sprig functions translated templates call, registered with tera
//! as `__go_<name>`.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::json::to_json;
use crate::gotmpl::{FUNCTIONS, MAX_ARGS};

type GoFn = fn(&[Value]) -> Result<Value, String>;

pub(super) fn register(tera: &mut tera::Tera) {
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
