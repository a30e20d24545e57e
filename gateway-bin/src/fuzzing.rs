//! Entry points for the fuzz targets in `fuzz/`: the parsers that read
//! config text or request values, reachable without a server. Not a stable
//! API.

use crate::url_pattern::{UrlPattern, Values};

/// Placeholder values that all come from one fuzzed string.
struct Fuzzed<'a>(&'a str);

impl Values for Fuzzed<'_> {
    fn param(&self, _: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn header(&self, _: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn query(&self, _: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn claim(&self, _: &str) -> Result<Option<String>, String> {
        Ok(Some(self.0.to_owned()))
    }
}

/// Parses `pattern` and expands every placeholder with `value`. An
/// expansion that succeeds is checked to stay one segment per value: it
/// never adds a `/`, `?` or `#` of its own, and never a dot segment.
pub fn url_pattern(pattern: &str, value: &str) -> Result<String, String> {
    let parsed = UrlPattern::parse(pattern)?;
    let expanded = parsed.expand(&Fuzzed(value))?;
    let literal = parsed.path_with("");
    let path = expanded.split('?').next().unwrap_or_default();
    let count = |s: &str, c: char| s.chars().filter(|&x| x == c).count();
    assert_eq!(
        count(path, '/'),
        count(&literal, '/'),
        "{pattern:?} with {value:?} gave {expanded:?}"
    );
    assert_eq!(
        count(&expanded, '#'),
        count(pattern, '#'),
        "{pattern:?} with {value:?} gave {expanded:?}"
    );
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "{pattern:?} with {value:?} gave a dot segment: {expanded:?}"
    );
    Ok(expanded)
}

/// Loads config text (no environment) and builds the gateway from it.
pub fn config(text: &str) {
    if let Ok(root) = crate::config::parse_str(text, &|_| None) {
        let loaded = crate::config::LoadedConfig {
            root,
            base_dir: std::path::PathBuf::from("/nonexistent"),
        };
        let _ = crate::build_app(&loaded);
    }
}
