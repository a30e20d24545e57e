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
}

impl ConfigError {
    /// An error at a (relative) path.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Puts `prefix` in front of the path: `at("$.a")` on `b[0]` gives
    /// `$.a.b[0]`.
    #[must_use]
    pub fn at(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
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

/// Deserializes a config value, naming the path of the first bad field.
/// Comment keys are removed first.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ConfigError> {
    let mut value = value.clone();
    strip_comments(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, err.into_inner().to_string())
    })
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
