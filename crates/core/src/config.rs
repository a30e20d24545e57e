//! Config errors that name the JSON path of the bad field.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A config mistake: where it is (a JSON path such as
/// `$.endpoints[0].backend[1].url_pattern`) and what is wrong.
///
/// Crates return paths relative to the value they were given; the binary
/// prefixes them with where that value sits in the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "$" } else { path.as_str() })]
#[non_exhaustive]
pub struct ConfigError {
    /// Where the mistake is.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Further mistakes found in the same value: a validator that reads a
    /// whole namespace returns every mistake it found in one error, the
    /// first one here and the rest in order (see [`ConfigError::into_all`]).
    pub more: Vec<ConfigError>,
}

impl ConfigError {
    /// An error at a (relative) path.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// One error carrying several: the first, with the others in
    /// [`ConfigError::more`]. `None` when `errors` is empty.
    pub fn from_errors(errors: Vec<ConfigError>) -> Option<Self> {
        let mut all = errors.into_iter().flat_map(ConfigError::into_all);
        let mut first = all.next()?;
        first.more = all.collect();
        Some(first)
    }

    /// This error and every further one it carries, each on its own.
    pub fn into_all(mut self) -> Vec<ConfigError> {
        let more = std::mem::take(&mut self.more);
        let mut all = vec![self];
        all.extend(more.into_iter().flat_map(ConfigError::into_all));
        all
    }

    /// Puts `prefix` in front of the path: `at("$.a")` on `b[0]` gives
    /// `$.a.b[0]`. Further errors it carries move with it.
    #[must_use]
    pub fn at(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
        self.more = std::mem::take(&mut self.more)
            .into_iter()
            .map(|e| e.at(prefix))
            .collect();
        self
    }
}

/// Joins a path prefix and a relative path.
pub fn join_path(prefix: &str, relative: &str) -> String {
    if relative.is_empty() || relative == "." {
        prefix.to_owned()
    } else if prefix.is_empty() {
        relative.to_owned()
    } else if relative.starts_with('[') {
        format!("{prefix}{relative}")
    } else {
        format!("{prefix}.{relative}")
    }
}

/// The path segment for an object key: `.key`, or `["key"]` when the key is
/// not a plain identifier (`extra_config["modifier/martian"]`).
pub fn key_segment(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_owned()
    } else {
        format!("[{}]", Value::String(key.to_owned()))
    }
}

/// Whether a key is a comment (`@`, `$`, `_`, `#` prefixes).
pub fn is_comment_key(key: &str) -> bool {
    key.starts_with(['@', '$', '_', '#'])
}

/// Objects whose keys are data, not config fields: their keys are kept even
/// when they look like comments (`"mapping": {"_id": "id"}`).
const DATA_MAPS: [&str; 2] = ["mapping", "variables"];

/// Removes comment keys from every object in a value, recursively, except
/// inside data maps (`mapping`, `variables`).
pub fn strip_comments(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !is_comment_key(key));
            for (key, item) in map.iter_mut() {
                if !DATA_MAPS.contains(&key.as_str()) {
                    strip_comments(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_comments),
        _ => {}
    }
}

/// Deserializes a config value, naming the path of every bad field: the
/// first mistake is the error, the others are in its
/// [`ConfigError::more`]. Comment keys are removed first.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ConfigError> {
    from_value_all(value).map_err(|errors| {
        ConfigError::from_errors(errors).unwrap_or_else(|| ConfigError::new("", "invalid"))
    })
}

/// The most mistakes reported for one value.
pub const MAX_ERRORS: usize = 100;

/// One step of a path into a value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn path_text(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => out = join_path(&out, &key_segment(key)),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Deserializes a config value and reports every mistake, each with its
/// path (relative to `value`), in the order serde meets them (the order of
/// the document; a missing field after its object's fields). serde stops
/// at the first mistake, so after each one the offending field is taken
/// out (or, when it is required, stood in for by an empty value of its
/// type; a misspelt field lends its value to the name suggested for it)
/// and the value is read again: a mistake hides none that follow it.
/// Comment keys are removed first.
pub fn from_value_all<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<ConfigError>> {
    let mut value = value.clone();
    strip_comments(&mut value);
    let mut errors: Vec<ConfigError> = Vec::new();
    // Paths whose mistakes follow from one already reported: a field
    // taken out, a name suggested for a misspelt one.
    let mut shadowed: Vec<String> = Vec::new();
    // What type a taken-out field wanted, for a stand-in when it is
    // required.
    let mut wanted: Vec<(String, Value)> = Vec::new();
    let mut last: Option<(String, String)> = None;
    for _ in 0..MAX_ERRORS * 4 {
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(parsed) if errors.is_empty() => return Ok(parsed),
            Ok(_) => break,
            Err(err) => err,
        };
        let mut steps: Vec<Step> = Vec::new();
        for segment in err.path() {
            match segment {
                serde_path_to_error::Segment::Map { key } => steps.push(Step::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => steps.push(Step::Index(*index)),
                // An externally tagged enum is an object keyed by its
                // variant in the document.
                serde_path_to_error::Segment::Enum { variant } => {
                    steps.push(Step::Key(variant.clone()));
                }
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        let message = err.into_inner().to_string();
        let here = (path_text(&steps), message.clone());
        if last.as_ref() == Some(&here) {
            break;
        }
        last = Some(here);
        let is_shadowed =
            |path: &str, shadowed: &[String]| shadowed.iter().any(|s| is_within(path, s));
        if let Some(field) = quoted_after(&message, "unknown field `") {
            // The path ends at the object or at the unknown key itself.
            if steps.last() == Some(&Step::Key(field.to_owned())) {
                steps.pop();
            }
            let expected = expected_names(&message);
            let suggestion = did_you_mean(field, expected.iter().map(String::as_str));
            let mut text = format!("unknown field {}", quote(field));
            match suggestion {
                Some(name) => text.push_str(&format!("; did you mean {}?", quote(name))),
                None if !expected.is_empty() && expected.len() <= 12 => {
                    let names: Vec<String> = expected.iter().map(|n| quote(n)).collect();
                    text.push_str(&format!("; expected one of {}", names.join(", ")));
                }
                None => {}
            }
            let mut at = steps.clone();
            at.push(Step::Key(field.to_owned()));
            let path = path_text(&at);
            if !is_shadowed(&path, &shadowed) {
                errors.push(ConfigError::new(path, text));
            }
            let Some(Value::Object(object)) = node_mut(&mut value, &steps) else {
                break;
            };
            let Some(misspelt) = object.shift_remove(field) else {
                break;
            };
            if let Some(name) = suggestion
                && !object.contains_key(name)
            {
                object.insert(name.to_owned(), misspelt);
                let mut at = steps.clone();
                at.push(Step::Key(name.to_owned()));
                shadowed.push(path_text(&at));
            }
            continue;
        }
        if let Some(field) = quoted_after(&message, "missing field `") {
            let mut at = steps.clone();
            at.push(Step::Key(field.to_owned()));
            let path = path_text(&at);
            let stand_in = wanted
                .iter()
                .rev()
                .find(|(p, _)| *p == path)
                .map(|(_, v)| v.clone());
            if !is_shadowed(&path, &shadowed) {
                errors.push(ConfigError::new(
                    path_text(&steps),
                    format!("missing field {}", quote(field)),
                ));
            }
            if let Some(stand_in) = stand_in
                && let Some(Value::Object(object)) = node_mut(&mut value, &steps)
                && !object.contains_key(field)
            {
                object.insert(field.to_owned(), stand_in);
                shadowed.push(path);
                continue;
            }
        } else {
            let path = path_text(&steps);
            if !is_shadowed(&path, &shadowed) {
                errors.push(ConfigError::new(path, friendlier_message(&message)));
            }
        }
        // Take out the innermost object field on the path (an array
        // element cannot go without renumbering the ones after it).
        let Some(last_key) = steps.iter().rposition(|s| matches!(s, Step::Key(_))) else {
            break;
        };
        let Step::Key(key) = &steps[last_key] else {
            break;
        };
        let Some(Value::Object(object)) = node_mut(&mut value, &steps[..last_key]) else {
            break;
        };
        if object.shift_remove(key).is_none() {
            break;
        }
        let path = path_text(&steps[..=last_key]);
        if let Some(stand_in) = stand_in_for(&message) {
            wanted.push((path.clone(), stand_in));
        }
        shadowed.push(path);
    }
    if errors.is_empty() {
        errors.push(ConfigError::new("", "invalid value"));
    }
    Err(errors)
}

/// Whether `path` is `prefix` or inside it.
fn is_within(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(['.', '[']))
}

/// The node at `steps`, if there is one.
fn node_mut<'a>(value: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    let mut node = value;
    for step in steps {
        node = match (step, node) {
            (Step::Key(key), Value::Object(map)) => map.get_mut(key)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// An empty value of the type serde expected, from its message
/// ("expected a string").
fn stand_in_for(message: &str) -> Option<Value> {
    let expected = message.rsplit("expected ").next()?.trim();
    let value = match expected {
        "a string" | "a borrowed string" | "string" => Value::String(String::new()),
        "a sequence" => Value::Array(Vec::new()),
        "a boolean" => Value::Bool(false),
        "a map" => Value::Object(serde_json::Map::new()),
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            Value::from(0)
        }
        "f32" | "f64" => Value::from(0.0),
        _ if expected.starts_with("struct ") => Value::Object(serde_json::Map::new()),
        _ => return None,
    };
    Some(value)
}

/// The text between `prefix` and the next backtick.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let start = message.find(prefix)? + prefix.len();
    let rest = &message[start..];
    Some(&rest[..rest.find('`')?])
}

/// The names serde lists after "expected" (`a`, `b` or `c`).
fn expected_names(message: &str) -> Vec<String> {
    let Some(start) = message.find("expected ") else {
        return Vec::new();
    };
    message[start..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// A name in double quotes, as JSON writes it.
fn quote(name: &str) -> String {
    Value::String(name.to_owned()).to_string()
}

/// serde's messages in the config's own terms: a misspelt variant gets the
/// nearest valid one.
fn friendlier_message(message: &str) -> String {
    if let Some(variant) = quoted_after(message, "unknown variant `") {
        let expected = expected_names(message);
        let mut text = format!("unknown value {}", quote(variant));
        match did_you_mean(variant, expected.iter().map(String::as_str)) {
            Some(name) => text.push_str(&format!("; did you mean {}?", quote(name))),
            None if !expected.is_empty() => {
                let names: Vec<String> = expected.iter().map(|n| quote(n)).collect();
                text.push_str(&format!("; expected one of {}", names.join(", ")));
            }
            None => {}
        }
        return text;
    }
    message.to_owned()
}

/// The candidate nearest to a misspelt `name` (edit distance, case
/// ignored), if it is near enough to be what was meant.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = name.to_lowercase();
    let limit = (lower.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|&(d, c)| d <= limit && c != name)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, with a swap of two neighbours counting as one
/// edit (`url_pattren`).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The most bytes of a file a config names (a template, a key set):
/// 4 MiB.
pub const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

/// Reads a file the config names, refusing anything that is not a regular
/// file (`/dev/zero`, a FIFO) or is larger than `limit` bytes. The message
/// names the file.
pub fn read_file_bounded(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let metadata = file
        .metadata()
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if metadata.len() > limit {
        return Err(format!(
            "{} is larger than the limit of {limit} bytes",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{} is larger than the limit of {limit} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// As [`read_file_bounded`], as UTF-8 text.
pub fn read_text_bounded(path: &std::path::Path, limit: u64) -> Result<String, String> {
    let bytes = read_file_bounded(path, limit)?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))
}

/// Parses a Go-style duration (`"2s"`, `"1500ms"`, `"1m30s"`, `"300us"`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit (ns, us, ms, s, m, h)"))?;
        if number_len == 0 {
            return Err(format!("invalid duration {text:?}"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("invalid number in duration {text:?}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(format!(
                    "unknown unit {unit:?} in duration {text:?} (use ns, us, ms, s, m, h)"
                ));
            }
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|e| format!("duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[test]
    fn errors_name_the_path() {
        let value = serde_json::json!({"items": [{"name": "a"}, {"name": 3}]});
        let err = from_value::<Outer>(&value).unwrap_err();
        assert_eq!(err.path, "items[1].name");
        let err = err.at("$.extra_config[\"x/y\"]");
        assert_eq!(err.path, "$.extra_config[\"x/y\"].items[1].name");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Many {
        url_pattern: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    enum Mode {
        #[serde(rename = "json")]
        Json,
        #[serde(rename = "no-op")]
        NoOp,
    }

    #[test]
    fn every_mistake_is_reported() {
        let value = serde_json::json!({
            "url_patern": "/a",
            "count": "three",
            "mode": "jsno",
            "items": [{"name": "a"}, {"name": 3}, {"nmae": "c"}]
        });
        let errors = from_value_all::<Many>(&value).unwrap_err();
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "url_patern",
                    "unknown field \"url_patern\"; did you mean \"url_pattern\"?"
                ),
                ("count", "invalid type: string \"three\", expected u32"),
                ("mode", "unknown value \"jsno\"; did you mean \"json\"?"),
                (
                    "items[1].name",
                    "invalid type: integer `3`, expected a string"
                ),
                (
                    "items[2].nmae",
                    "unknown field \"nmae\"; did you mean \"name\"?"
                ),
            ],
            "{errors:#?}"
        );
        // One error carries the others.
        let err = from_value::<Many>(&value).unwrap_err().at("$.x");
        assert_eq!(err.path, "$.x.url_patern");
        let all = err.into_all();
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].path, "$.x.items[2].nmae");
    }

    #[test]
    fn a_missing_field_is_reported_once() {
        let errors = from_value_all::<Many>(&serde_json::json!({"count": 1})).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "missing field \"url_pattern\"");
        let errors = from_value_all::<Many>(&serde_json::json!({"url_pattern": 1})).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "url_pattern");
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("url_pattren", "url_pattern"), 1);
        assert_eq!(
            did_you_mean("modifier/martain", ["modifier/martian", "auth/validator"]),
            Some("modifier/martian")
        );
        assert_eq!(did_you_mean("zzz", ["host", "port"]), None);
        assert_eq!(did_you_mean("Host", ["host", "port"]), Some("host"));
    }

    #[test]
    fn comments_are_ignored() {
        let value = serde_json::json!({"@comment": "x", "items": [{"name": "a", "$ref": 1}]});
        assert!(from_value::<Outer>(&value).is_ok());
    }

    #[test]
    fn data_maps_keep_their_keys() {
        let mut value = serde_json::json!({
            "@c": 1,
            "mapping": {"_id": "id", "@x": "x"},
            "variables": {"$v": 1},
            "other": {"_gone": 1}
        });
        strip_comments(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"mapping": {"_id": "id", "@x": "x"}, "variables": {"$v": 1}, "other": {}})
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn key_segments() {
        assert_eq!(key_segment("backend"), "backend");
        assert_eq!(key_segment("modifier/martian"), "[\"modifier/martian\"]");
    }
}
