//! The `modifier/response-body` config, as written in the file.

use serde::Deserialize;

/// The object under `modifier/response-body`.
///
/// `modifiers` is KrakenD's; the other fields are Switchboard's and all
/// optional.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MaskConfig {
    /// The modifiers, applied in order.
    pub modifiers: Vec<ModifierConfig>,
    /// Whether `text/event-stream` responses are masked as they flow.
    ///
    /// Unset: streams are masked when every modifier can be applied to a
    /// stream, and refused (502) otherwise. `true`: a modifier that cannot
    /// be applied to a stream is a config error. `false`: streams are always
    /// refused (502). A stream never passes unmasked.
    #[serde(default)]
    pub streaming: Option<bool>,
    /// What to do with a body that is not JSON (by its `Content-Type`):
    /// `"reject"` (default, 502) or `"pass"` (forward it unmasked).
    #[serde(default)]
    pub non_json: NonJsonPolicy,
    /// The largest JSON body buffered for masking, in bytes (default
    /// 10 MiB). A larger one answers 502.
    #[serde(default)]
    pub max_body_size: Option<usize>,
    /// The largest single server-sent event, in bytes (default 1 MiB). A
    /// larger one ends the stream with an error event.
    #[serde(default)]
    pub max_event_size: Option<usize>,
}

/// What to do with a response body that is not JSON.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NonJsonPolicy {
    /// Answer 502 "response could not be masked".
    #[default]
    Reject,
    /// Forward the body unmasked, on purpose.
    Pass,
}

/// One modifier: exactly one of its kinds.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ModifierConfig {
    /// Regular-expression replacement (`$1`, `${name}` expand groups).
    Regexp(ReplaceConfig),
    /// Literal, case-sensitive replacement of every occurrence.
    Literal(ReplaceConfig),
    /// Upper-case the string.
    Upper(FieldConfig),
    /// Lower-case the string.
    Lower(FieldConfig),
    /// Remove the characters of `find` from both ends of the string.
    Trim(TrimConfig),
}

/// The fields of `regexp` and `literal`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReplaceConfig {
    /// Dot path of the field (`data.*.card`, `items.0.name`).
    pub field: String,
    /// The pattern or literal text to find.
    pub find: String,
    /// The replacement.
    pub replace: String,
}

/// The fields of `upper` and `lower`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FieldConfig {
    /// Dot path of the field.
    pub field: String,
}

/// The fields of `trim`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TrimConfig {
    /// Dot path of the field.
    pub field: String,
    /// The set of characters to remove from both ends.
    pub find: String,
}
