//! `switchboard check`: every mistake of a config file in one run.

use std::path::Path;

use switchboard_core::{ConfigError, SharedState};

use crate::config::load_file_lenient;
use crate::lint::Lint;

/// What `check` found in a config file.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// Every mistake, each with its JSON path, in the order of the file
    /// (root, then each endpoint with its backends).
    pub errors: Vec<ConfigError>,
    /// The warnings and notes of a config without mistakes.
    pub lints: Vec<Lint>,
    /// How many endpoints the config declares.
    pub endpoints: usize,
}

impl CheckReport {
    /// The one-line summary: `3 errors`, or `ok, 1 endpoint, 0 warnings`
    /// (and `, 2 notes` when there are notes).
    pub fn summary(&self) -> String {
        if !self.errors.is_empty() {
            return plural(self.errors.len(), "error");
        }
        let notes = self.lints.iter().filter(|l| l.note).count();
        let mut summary = format!(
            "ok, {}, {}",
            plural(self.endpoints, "endpoint"),
            plural(self.lints.len() - notes, "warning")
        );
        if notes > 0 {
            summary.push_str(&format!(", {}", plural(notes, "note")));
        }
        summary
    }
}

/// `1 error`, `2 errors`.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Reads and builds a config file, collecting every mistake: those of
/// reading the file (types, names, durations) and those of building it
/// (hosts, placeholders, namespaces) together, so that one run shows them
/// all.
pub fn check_file(path: &Path) -> CheckReport {
    let (loaded, mut errors) = load_file_lenient(path);
    let Some(loaded) = loaded else {
        return CheckReport {
            errors,
            ..CheckReport::default()
        };
    };
    let mut report = CheckReport {
        endpoints: loaded.root.endpoints.len(),
        ..CheckReport::default()
    };
    match crate::app::build_app_checked(&loaded, &SharedState::new()) {
        Ok(app) => report.lints = app.lints().to_vec(),
        Err(found) => errors.extend(found),
    }
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert((e.path.clone(), e.message.clone())));
    errors.sort_by_key(|e| place(&e.path));
    report.errors = errors;
    report
}

/// Where a path sits in the file: the root first, then each endpoint with
/// its backends.
fn place(path: &str) -> (Option<usize>, Option<usize>) {
    let index = |text: &str, prefix: &str| -> Option<(usize, usize)> {
        let rest = text.strip_prefix(prefix)?;
        let end = rest.find(']')?;
        Some((rest[..end].parse().ok()?, prefix.len() + end + 1))
    };
    let Some((endpoint, used)) = index(path, "$.endpoints[") else {
        return (None, None);
    };
    let backend = index(&path[used..], ".backend[").map(|(b, _)| b);
    (Some(endpoint), backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_in_words() {
        assert_eq!(plural(1, "error"), "1 error");
        assert_eq!(plural(0, "warning"), "0 warnings");
        assert_eq!(plural(3, "error"), "3 errors");
    }

    #[test]
    fn places_follow_the_file() {
        assert_eq!(place("$.version"), (None, None));
        assert_eq!(place("$.endpoints[2].timeout"), (Some(2), None));
        assert_eq!(
            place("$.endpoints[10].backend[3].host[0]"),
            (Some(10), Some(3))
        );
        assert!(place("$.endpoints[2].method") < place("$.endpoints[10]"));
    }
}
