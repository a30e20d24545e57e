//! KrakenD's response manipulation of a backend's JSON answer: the
//! [`Shape`] a backend declares, the reshape it drives and the key order
//! answers are written in.

use std::sync::Arc;

use serde_json::{Map, Value};

/// How a backend's answer is reshaped before the merge.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shape {
    pub(crate) group: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) is_collection: bool,
    pub(crate) allow: Vec<String>,
    pub(crate) deny: Vec<String>,
    pub(crate) mapping: Vec<(String, String)>,
    /// The backend's `proxy.flatmap_filter`: replaces allow, deny and
    /// mapping, as in KrakenD.
    pub(crate) flatmap: Option<Arc<crate::flatmap::Flatmap>>,
}

/// Orders every object's keys as KrakenD writes them (Go encodes a map
/// with its keys sorted), so that merged answers read the same.
pub(super) fn sort_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// KrakenD's response manipulation, in its order: collection, target,
/// allow/deny, mapping, group.
pub(crate) fn reshape(value: Value, shape: &Shape) -> Value {
    let mut value = match value {
        Value::Array(items) if shape.is_collection => {
            let mut map = Map::new();
            map.insert("collection".to_owned(), Value::Array(items));
            Value::Object(map)
        }
        other => other,
    };
    if let Some(target) = &shape.target {
        value = take_path(value, target).unwrap_or_else(|| Value::Object(Map::new()));
    }
    if let Some(flatmap) = &shape.flatmap {
        flatmap.apply(&mut value);
        return match &shape.group {
            Some(group) => {
                let mut map = Map::new();
                map.insert(group.clone(), value);
                Value::Object(map)
            }
            None => value,
        };
    }
    if !shape.allow.is_empty() {
        let mut kept = Value::Object(Map::new());
        for path in &shape.allow {
            if let Some(found) = switchboard_core::lookup_path(&value, path) {
                insert_path(&mut kept, path, found.clone());
            }
        }
        value = kept;
    }
    for path in &shape.deny {
        remove_path(&mut value, path);
    }
    if let Value::Object(map) = &mut value {
        for (from, to) in &shape.mapping {
            if let Some(moved) = map.remove(from) {
                map.insert(to.clone(), moved);
            }
        }
    }
    match &shape.group {
        Some(group) => {
            let mut map = Map::new();
            map.insert(group.clone(), value);
            Value::Object(map)
        }
        None => value,
    }
}

/// Moves the value at a dot path out of `value` (the rest is dropped).
fn take_path(value: Value, path: &str) -> Option<Value> {
    path.split('.')
        .try_fold(value, |current, segment| match current {
            Value::Object(mut map) => map.remove(segment),
            Value::Array(mut items) => segment
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .map(|i| items.swap_remove(i)),
            _ => None,
        })
}

fn insert_path(target: &mut Value, path: &str, value: Value) {
    let mut current = target;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Value::Object(map) = current else { return };
        if segments.peek().is_none() {
            map.insert(segment.to_owned(), value);
            return;
        }
        current = map
            .entry(segment.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn remove_path(target: &mut Value, path: &str) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (Some(parent), last),
        None => (None, path),
    };
    let container =
        match parent {
            Some(parent) => parent
                .split('.')
                .try_fold(&mut *target, |current, segment| match current {
                    Value::Object(map) => map.get_mut(segment),
                    _ => None,
                }),
            None => Some(target),
        };
    if let Some(Value::Object(map)) = container {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reshape_in_krakend_order() {
        let shape = Shape {
            group: Some("g".to_owned()),
            target: Some("data".to_owned()),
            allow: vec!["a".to_owned(), "b.c".to_owned()],
            deny: vec!["b.c".to_owned()],
            mapping: vec![("a".to_owned(), "alpha".to_owned())],
            ..Shape::default()
        };
        let value = json!({"data": {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}});
        assert_eq!(reshape(value, &shape), json!({"g": {"alpha": 1, "b": {}}}));
    }

    #[test]
    fn keys_are_sorted_as_go_writes_them() {
        let mut value = json!({"b": {"z": 1, "A-B": 2, "Accept": 3}, "a": [{"y": 1, "x": 2}]});
        sort_keys(&mut value);
        assert_eq!(
            value.to_string(),
            r#"{"a":[{"x":2,"y":1}],"b":{"A-B":2,"Accept":3,"z":1}}"#
        );
    }

    #[test]
    fn collections_wrap() {
        let shape = Shape {
            is_collection: true,
            ..Shape::default()
        };
        assert_eq!(
            reshape(json!([1, 2]), &shape),
            json!({"collection": [1, 2]})
        );
    }
}
