//! Field paths: dot-separated keys, `*` for every member of an object or
//! array, and numeric segments that index arrays (or name object keys).

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Any,
    Name { key: String, index: Option<usize> },
}

/// A compiled `field` path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldPath {
    segments: Vec<Pattern>,
}

/// One step of a concrete location in a document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("field must not be empty".to_owned());
        }
        let segments = text
            .split('.')
            .map(|segment| match segment {
                "" => Err(format!("field {text:?} has an empty segment")),
                "*" => Ok(Pattern::Any),
                key => Ok(Pattern::Name {
                    key: key.to_owned(),
                    index: key.parse().ok(),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { segments })
    }

    /// Calls `f` on every string the path reaches.
    pub(crate) fn for_each_string_mut(&self, value: &mut Value, f: &mut impl FnMut(&mut String)) {
        visit_mut(value, &self.segments, f);
    }

    /// Appends the location of every string the path reaches.
    pub(crate) fn locate_strings(&self, value: &Value, found: &mut Vec<Vec<Step>>) {
        let mut current = Vec::new();
        locate(value, &self.segments, &mut current, found);
    }
}

fn visit_mut(value: &mut Value, segments: &[Pattern], f: &mut impl FnMut(&mut String)) {
    let Some((first, rest)) = segments.split_first() else {
        if let Value::String(text) = value {
            f(text);
        }
        return;
    };
    match (first, value) {
        (Pattern::Any, Value::Object(map)) => {
            map.values_mut().for_each(|child| visit_mut(child, rest, f));
        }
        (Pattern::Any, Value::Array(items)) => {
            items.iter_mut().for_each(|child| visit_mut(child, rest, f));
        }
        (Pattern::Name { key, .. }, Value::Object(map)) => {
            if let Some(child) = map.get_mut(key) {
                visit_mut(child, rest, f);
            }
        }
        (Pattern::Name { index: Some(i), .. }, Value::Array(items)) => {
            if let Some(child) = items.get_mut(*i) {
                visit_mut(child, rest, f);
            }
        }
        _ => {}
    }
}

fn locate(
    value: &Value,
    segments: &[Pattern],
    current: &mut Vec<Step>,
    found: &mut Vec<Vec<Step>>,
) {
    let Some((first, rest)) = segments.split_first() else {
        if value.is_string() {
            found.push(current.clone());
        }
        return;
    };
    let mut descend = |step: Step, child: &Value| {
        current.push(step);
        locate(child, rest, current, found);
        current.pop();
    };
    match (first, value) {
        (Pattern::Any, Value::Object(map)) => {
            for (key, child) in map {
                descend(Step::Key(key.clone()), child);
            }
        }
        (Pattern::Any, Value::Array(items)) => {
            for (i, child) in items.iter().enumerate() {
                descend(Step::Index(i), child);
            }
        }
        (Pattern::Name { key, .. }, Value::Object(map)) => {
            if let Some(child) = map.get(key) {
                descend(Step::Key(key.clone()), child);
            }
        }
        (Pattern::Name { index: Some(i), .. }, Value::Array(items)) => {
            if let Some(child) = items.get(*i) {
                descend(Step::Index(*i), child);
            }
        }
        _ => {}
    }
}

/// The value at a concrete location.
pub(crate) fn get_mut<'a>(value: &'a mut Value, location: &[Step]) -> Option<&'a mut Value> {
    location
        .iter()
        .try_fold(value, |current, step| match (step, current) {
            (Step::Key(key), Value::Object(map)) => map.get_mut(key),
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        })
}

/// The object that holds (or would hold) a location ending in a key, with
/// that key.
pub(crate) fn parent_object_mut<'a>(
    value: &'a mut Value,
    location: &'a [Step],
) -> Option<(&'a mut Map<String, Value>, &'a str)> {
    let (Step::Key(last), parent) = location.split_last()? else {
        return None;
    };
    match get_mut(value, parent)? {
        Value::Object(map) => Some((map, last.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upper_all(path: &str, mut value: Value) -> Value {
        FieldPath::parse(path)
            .unwrap()
            .for_each_string_mut(&mut value, &mut |s| *s = s.to_uppercase());
        value
    }

    #[test]
    fn keys_wildcards_and_indexes() {
        let doc =
            json!({"data": [{"user": "mary", "n": 1}, {"user": "larry"}], "o": {"0": "zero"}});
        assert_eq!(
            upper_all("data.*.user", doc.clone()),
            json!({"data": [{"user": "MARY", "n": 1}, {"user": "LARRY"}], "o": {"0": "zero"}})
        );
        assert_eq!(
            upper_all("data.1.user", doc.clone()),
            json!({"data": [{"user": "mary", "n": 1}, {"user": "LARRY"}], "o": {"0": "zero"}})
        );
        assert_eq!(upper_all("o.0", doc.clone())["o"]["0"], "ZERO");
        // Non-strings and missing paths are left alone.
        assert_eq!(upper_all("data.*.n", doc.clone()), doc);
        assert_eq!(upper_all("data.9.user", doc.clone()), doc);
        assert_eq!(upper_all("data", doc.clone()), doc);
    }

    #[test]
    fn locations_match_their_path() {
        let doc = json!({"choices": [{"delta": {"content": "a"}}, {"delta": {"content": 3}}]});
        let path = FieldPath::parse("choices.*.delta.content").unwrap();
        let mut found = Vec::new();
        path.locate_strings(&doc, &mut found);
        assert_eq!(
            found,
            vec![vec![
                Step::Key("choices".into()),
                Step::Index(0),
                Step::Key("delta".into()),
                Step::Key("content".into())
            ]]
        );
    }

    #[test]
    fn bad_paths() {
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
    }
}
