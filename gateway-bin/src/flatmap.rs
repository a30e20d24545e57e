//! KrakenD's `proxy.flatmap_filter`: `move`, `del` and `append` operations
//! on dot paths of an answer, where `*` stands for every index of an
//! array (`paths.*.url`).
//!
//! On a backend it replaces `allow`, `deny` and `mapping` (as in KrakenD);
//! on an endpoint it runs on the merged answer.

use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::ConfigError;

/// The most operations one filter may hold.
const MAX_OPS: usize = 256;

/// A compiled `flatmap_filter`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flatmap {
    ops: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    /// Moves the value at the first path to the second (a rename when the
    /// wildcards match).
    Move(Vec<String>, Vec<String>),
    /// Deletes the value at the path.
    Del(Vec<String>),
    /// Appends the array (or value) at the first path to the array at the
    /// second, and removes the first.
    Append(Vec<String>, Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpConfig {
    #[serde(rename = "type")]
    kind: String,
    args: Vec<String>,
}

fn split(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("invalid path {path:?}: empty segment"));
    }
    Ok(path.split('.').map(str::to_owned).collect())
}

impl Flatmap {
    /// Reads a `flatmap_filter` list; errors point into it.
    pub(crate) fn from_config(value: &Value) -> Result<Self, ConfigError> {
        let Value::Array(items) = value else {
            return Err(ConfigError::new(
                "",
                "flatmap_filter must be a list of operations",
            ));
        };
        if items.len() > MAX_OPS {
            return Err(ConfigError::new(
                "",
                format!("at most {MAX_OPS} operations"),
            ));
        }
        let mut ops = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("[{i}]");
            let config: OpConfig =
                switchboard_core::config::from_value(item).map_err(|e| e.at(&at))?;
            let path = |n: usize| {
                config
                    .args
                    .get(n)
                    .ok_or_else(|| ConfigError::new(format!("{at}.args"), "missing argument"))
                    .and_then(|p| {
                        split(p).map_err(|m| ConfigError::new(format!("{at}.args[{n}]"), m))
                    })
            };
            let want = |n: usize| {
                if config.args.len() == n {
                    Ok(())
                } else {
                    Err(ConfigError::new(
                        format!("{at}.args"),
                        format!(
                            "{:?} takes {n} path{}, got {}",
                            config.kind,
                            if n == 1 { "" } else { "s" },
                            config.args.len()
                        ),
                    ))
                }
            };
            let op = match config.kind.as_str() {
                "move" => {
                    want(2)?;
                    let (from, to) = (path(0)?, path(1)?);
                    if wildcards(&from) != wildcards(&to) {
                        return Err(ConfigError::new(
                            format!("{at}.args"),
                            "both paths of a move need the same number of `*`",
                        ));
                    }
                    Op::Move(from, to)
                }
                "del" => {
                    want(1)?;
                    Op::Del(path(0)?)
                }
                "append" => {
                    want(2)?;
                    let (from, to) = (path(0)?, path(1)?);
                    if wildcards(&from) != 0 || wildcards(&to) != 0 {
                        return Err(ConfigError::new(
                            format!("{at}.args"),
                            "append takes paths without `*`",
                        ));
                    }
                    Op::Append(from, to)
                }
                other => {
                    return Err(ConfigError::new(
                        format!("{at}.type"),
                        format!("unknown operation {other:?}: use move, del or append"),
                    ));
                }
            };
            ops.push(op);
        }
        Ok(Self { ops })
    }

    /// Runs the operations in order on `value`.
    pub(crate) fn apply(&self, value: &mut Value) {
        for op in &self.ops {
            match op {
                Op::Del(path) => {
                    for concrete in expand(value, path) {
                        remove(value, &concrete);
                    }
                }
                Op::Move(from, to) => {
                    for concrete in expand(value, from) {
                        let indexes: Vec<&String> = concrete
                            .iter()
                            .zip(from)
                            .filter(|(_, p)| p.as_str() == "*")
                            .map(|(c, _)| c)
                            .collect();
                        let mut indexes = indexes.into_iter();
                        let target: Vec<String> = to
                            .iter()
                            .map(|segment| match segment.as_str() {
                                "*" => indexes.next().cloned().unwrap_or_default(),
                                _ => segment.clone(),
                            })
                            .collect();
                        if let Some(moved) = remove(value, &concrete) {
                            insert(value, &target, moved);
                        }
                    }
                }
                Op::Append(from, to) => {
                    let Some(moved) = remove(value, from) else {
                        continue;
                    };
                    let moved = match moved {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    match get_mut(value, to) {
                        Some(Value::Array(items)) => items.extend(moved),
                        Some(other) => {
                            let mut items = vec![other.take()];
                            items.extend(moved);
                            *other = Value::Array(items);
                        }
                        None => insert(value, to, Value::Array(moved)),
                    }
                }
            }
        }
    }
}

fn wildcards(path: &[String]) -> usize {
    path.iter().filter(|s| s.as_str() == "*").count()
}

/// Every concrete path `path` matches in `value` (a `*` becomes each index
/// of an array), in order; indexes come out last first so that removing
/// one does not shift the next.
fn expand(value: &Value, path: &[String]) -> Vec<Vec<String>> {
    fn walk(value: &Value, path: &[String], prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some((head, rest)) = path.split_first() else {
            out.push(prefix.clone());
            return;
        };
        match (head.as_str(), value) {
            ("*", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate().rev() {
                    prefix.push(i.to_string());
                    walk(item, rest, prefix, out);
                    prefix.pop();
                }
            }
            ("*", Value::Object(map)) => {
                for (key, item) in map {
                    prefix.push(key.clone());
                    walk(item, rest, prefix, out);
                    prefix.pop();
                }
            }
            (key, Value::Object(map)) => {
                if let Some(item) = map.get(key) {
                    prefix.push(key.to_owned());
                    walk(item, rest, prefix, out);
                    prefix.pop();
                }
            }
            (key, Value::Array(items)) => {
                if let Some(item) = key.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    prefix.push(key.to_owned());
                    walk(item, rest, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, path, &mut Vec::new(), &mut out);
    out
}

fn get_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(value, |current, segment| match current {
            Value::Object(map) => map.get_mut(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        })
}

fn remove(value: &mut Value, path: &[String]) -> Option<Value> {
    let (last, parent) = path.split_last()?;
    match get_mut(value, parent)? {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < items.len())?;
            Some(items.remove(i))
        }
        _ => None,
    }
}

/// Inserts at `path`, creating objects on the way; an array index must
/// exist.
fn insert(value: &mut Value, path: &[String], item: Value) {
    let Some((last, parent)) = path.split_last() else {
        *value = item;
        return;
    };
    let mut current = value;
    for segment in parent {
        current = match current {
            Value::Object(map) => map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => {
                match segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(next) => next,
                    None => return,
                }
            }
            _ => return,
        };
    }
    match current {
        Value::Object(map) => {
            map.insert(last.clone(), item);
        }
        Value::Array(items) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = item;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(ops: Value) -> Flatmap {
        Flatmap::from_config(&ops).unwrap()
    }

    #[test]
    fn krakend_fixture_filter() {
        let f = filter(json!([
            {"type": "move", "args": ["collection", "paths"]},
            {"type": "del", "args": ["paths.*.i"]},
            {"type": "move", "args": ["paths.*.path", "paths.*.url"]}
        ]));
        let mut value = json!({"collection": [{"i": 0, "path": "/a"}, {"i": 1, "path": "/b"}]});
        f.apply(&mut value);
        assert_eq!(value, json!({"paths": [{"url": "/a"}, {"url": "/b"}]}));
    }

    #[test]
    fn append_and_nested() {
        let f = filter(json!([
            {"type": "append", "args": ["b", "a"]},
            {"type": "move", "args": ["x.y", "z.w"]},
            {"type": "del", "args": ["a.0"]}
        ]));
        let mut value = json!({"a": [1], "b": [2, 3], "x": {"y": 4}});
        f.apply(&mut value);
        assert_eq!(value, json!({"a": [2, 3], "x": {}, "z": {"w": 4}}));
        // Paths that match nothing change nothing.
        let mut value = json!({"q": 1});
        f.apply(&mut value);
        assert_eq!(value, json!({"q": 1}));
    }

    #[test]
    fn config_errors_have_paths() {
        let err = |v: Value| Flatmap::from_config(&v).unwrap_err().path;
        assert_eq!(
            err(json!([{"type": "copy", "args": ["a", "b"]}])),
            "[0].type"
        );
        assert_eq!(err(json!([{"type": "del", "args": []}])), "[0].args");
        assert_eq!(
            err(json!([{"type": "del", "args": ["a..b"]}])),
            "[0].args[0]"
        );
        assert_eq!(
            err(json!([{"type": "del", "args": ["a"]}, {"type": "move", "args": ["a.*", "b"]}])),
            "[1].args"
        );
        assert_eq!(
            err(json!([{"type": "del", "args": ["a"], "x": 1}])),
            "[0].x"
        );
        assert!(Flatmap::from_config(&json!({"type": "del"})).is_err());
    }
}
