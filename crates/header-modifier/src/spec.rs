//! The typed `modifier/martian` configuration: one serde enum, keyed by
//! modifier type as the JSON is (`{"header.Modifier": {...}}`), with groups
//! and filters nesting further modifiers.
//!
//! These types only carry what the document says; [`Modifiers::from_config`]
//! checks what serde cannot (header names, regexes, base64, scopes) and
//! compiles them.
//!
//! [`Modifiers::from_config`]: crate::Modifiers::from_config

use std::fmt;

use serde::Deserialize;

/// One `modifier/martian` modifier, as the document writes it: an object
/// whose single key is the modifier type.
///
/// ```
/// use switchboard_header_modifier::{MartianConfig, Scope};
///
/// let config: MartianConfig = serde_json::from_value(serde_json::json!({
///     "fifo.Group": {"modifiers": [
///         {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer sk-test"}},
///         {"header.Blacklist": {"scope": ["response"], "names": ["Set-Cookie"]}}
///     ]}
/// }))
/// .unwrap();
/// assert_eq!(config.kind(), "fifo.Group");
/// // The value is a credential: Debug never shows it.
/// assert!(!format!("{config:?}").contains("sk-test"));
///
/// // Built in code, the same modifier.
/// let built = MartianConfig::group(vec![
///     MartianConfig::set_header("Authorization", "Bearer sk-test").in_scope(&[Scope::Request]),
///     MartianConfig::remove_headers(["Set-Cookie"]).in_scope(&[Scope::Response]),
/// ]);
/// assert_eq!(built, config);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum MartianConfig {
    /// `header.Modifier`: replaces every value of a header.
    #[serde(rename = "header.Modifier")]
    HeaderModifier(HeaderValueConfig),
    /// `header.Append`: adds one more value to a header.
    #[serde(rename = "header.Append")]
    HeaderAppend(HeaderValueConfig),
    /// `header.Copy`: `to` gets the values of `from`.
    #[serde(rename = "header.Copy")]
    HeaderCopy(HeaderCopyConfig),
    /// `header.Blacklist`: removes headers.
    #[serde(rename = "header.Blacklist")]
    HeaderBlacklist(HeaderBlacklistConfig),
    /// `header.Filter`: a modifier run when a header is there (with a
    /// given value, when one is named).
    #[serde(rename = "header.Filter")]
    HeaderFilter(FilterConfig),
    /// `header.RegexFilter`: a modifier run when the first value of a
    /// request header matches a regex.
    #[serde(rename = "header.RegexFilter")]
    HeaderRegexFilter(RegexFilterConfig),
    /// `querystring.Modifier`: sets a query parameter (requests only).
    #[serde(rename = "querystring.Modifier")]
    QueryModifier(QueryModifierConfig),
    /// `querystring.Filter`: a modifier run when the request has a query
    /// parameter (with a given value, when one is named).
    #[serde(rename = "querystring.Filter")]
    QueryFilter(FilterConfig),
    /// `url.Modifier`: replaces parts of the request URL.
    #[serde(rename = "url.Modifier")]
    UrlModifier(UrlModifierConfig),
    /// `body.Modifier`: replaces the body.
    #[serde(rename = "body.Modifier")]
    BodyModifier(BodyModifierConfig),
    /// `fifo.Group`: modifiers run in order.
    #[serde(rename = "fifo.Group")]
    FifoGroup(FifoGroupConfig),
    /// `priority.Group`: modifiers run highest priority first.
    #[serde(rename = "priority.Group")]
    PriorityGroup(PriorityGroupConfig),
}

/// The modifier types, as the document names them.
pub(crate) const KINDS: &[&str] = &[
    "header.Modifier",
    "header.Append",
    "header.Copy",
    "header.Blacklist",
    "header.Filter",
    "header.RegexFilter",
    "querystring.Modifier",
    "querystring.Filter",
    "url.Modifier",
    "body.Modifier",
    "fifo.Group",
    "priority.Group",
];

impl MartianConfig {
    /// The modifier type, as the document names it (`"header.Modifier"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HeaderModifier(_) => "header.Modifier",
            Self::HeaderAppend(_) => "header.Append",
            Self::HeaderCopy(_) => "header.Copy",
            Self::HeaderBlacklist(_) => "header.Blacklist",
            Self::HeaderFilter(_) => "header.Filter",
            Self::HeaderRegexFilter(_) => "header.RegexFilter",
            Self::QueryModifier(_) => "querystring.Modifier",
            Self::QueryFilter(_) => "querystring.Filter",
            Self::UrlModifier(_) => "url.Modifier",
            Self::BodyModifier(_) => "body.Modifier",
            Self::FifoGroup(_) => "fifo.Group",
            Self::PriorityGroup(_) => "priority.Group",
        }
    }

    /// `header.Modifier` in every scope: `name` gets `value` alone.
    pub fn set_header(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::HeaderModifier(HeaderValueConfig {
            scope: None,
            name: name.into(),
            value: value.into(),
        })
    }

    /// `header.Append` in every scope: `name` gets one more `value`.
    pub fn append_header(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::HeaderAppend(HeaderValueConfig {
            scope: None,
            name: name.into(),
            value: value.into(),
        })
    }

    /// `header.Blacklist` in every scope.
    pub fn remove_headers<I, N>(names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        Self::HeaderBlacklist(HeaderBlacklistConfig {
            scope: None,
            names: names.into_iter().map(Into::into).collect(),
        })
    }

    /// `fifo.Group` in every scope: the modifiers, in order.
    pub fn group(modifiers: Vec<MartianConfig>) -> Self {
        Self::FifoGroup(FifoGroupConfig {
            scope: None,
            modifiers,
            aggregate_errors: None,
        })
    }

    /// The same modifier, restricted to the given scopes.
    #[must_use]
    pub fn in_scope(mut self, scopes: &[Scope]) -> Self {
        *self.scope_mut() = Some(scopes.to_vec());
        self
    }

    /// The `scope` field, whatever the type.
    pub fn scope(&self) -> Option<&[Scope]> {
        match self {
            Self::HeaderModifier(c) | Self::HeaderAppend(c) => c.scope.as_deref(),
            Self::HeaderCopy(c) => c.scope.as_deref(),
            Self::HeaderBlacklist(c) => c.scope.as_deref(),
            Self::HeaderFilter(c) | Self::QueryFilter(c) => c.scope.as_deref(),
            Self::HeaderRegexFilter(c) => c.scope.as_deref(),
            Self::QueryModifier(c) => c.scope.as_deref(),
            Self::UrlModifier(c) => c.scope.as_deref(),
            Self::BodyModifier(c) => c.scope.as_deref(),
            Self::FifoGroup(c) => c.scope.as_deref(),
            Self::PriorityGroup(c) => c.scope.as_deref(),
        }
    }

    fn scope_mut(&mut self) -> &mut Option<Vec<Scope>> {
        match self {
            Self::HeaderModifier(c) | Self::HeaderAppend(c) => &mut c.scope,
            Self::HeaderCopy(c) => &mut c.scope,
            Self::HeaderBlacklist(c) => &mut c.scope,
            Self::HeaderFilter(c) | Self::QueryFilter(c) => &mut c.scope,
            Self::HeaderRegexFilter(c) => &mut c.scope,
            Self::QueryModifier(c) => &mut c.scope,
            Self::UrlModifier(c) => &mut c.scope,
            Self::BodyModifier(c) => &mut c.scope,
            Self::FifoGroup(c) => &mut c.scope,
            Self::PriorityGroup(c) => &mut c.scope,
        }
    }
}

/// A direction a modifier applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The request a backend receives.
    Request,
    /// The response it sends back.
    Response,
}

/// `header.Modifier` and `header.Append`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The header written.
    pub name: String,
    /// The value written (often a credential: never shown).
    pub value: String,
}

impl fmt::Debug for HeaderValueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderValueConfig")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// `header.Copy`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderCopyConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The header read.
    pub from: String,
    /// The header written.
    pub to: String,
}

/// `header.Blacklist`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderBlacklistConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The headers removed.
    pub names: Vec<String>,
}

/// `header.Filter` and `querystring.Filter`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The header or query parameter checked.
    pub name: String,
    /// The value it must have; any value when absent.
    #[serde(default)]
    pub value: Option<String>,
    /// Run when the check holds.
    pub modifier: Box<MartianConfig>,
    /// Run when it does not.
    #[serde(default, rename = "else")]
    pub otherwise: Option<Box<MartianConfig>>,
}

impl fmt::Debug for FilterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterConfig")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("modifier", &self.modifier)
            .field("otherwise", &self.otherwise)
            .finish()
    }
}

/// `header.RegexFilter`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexFilterConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The request header checked.
    pub header: String,
    /// The pattern its first value must match.
    pub regex: String,
    /// Run when it matches.
    pub modifier: Box<MartianConfig>,
}

/// `querystring.Modifier`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryModifierConfig {
    /// The directions (requests only); requests when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The parameter set.
    pub name: String,
    /// Its value (never shown).
    pub value: String,
}

impl fmt::Debug for QueryModifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryModifierConfig")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// `url.Modifier`: each part replaces the request's when set and not empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlModifierConfig {
    /// The directions (requests only); requests when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// `host` or `host:port`.
    #[serde(default)]
    pub host: Option<String>,
    /// A path starting with `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// A query string, with or without its `?`.
    #[serde(default)]
    pub query: Option<String>,
}

/// `body.Modifier`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyModifierConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The `Content-Type` of the new body.
    #[serde(default, rename = "contentType")]
    pub content_type: Option<String>,
    /// The new body, in standard base64 (padding optional).
    pub body: String,
}

/// `fifo.Group`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FifoGroupConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The modifiers, run in order.
    pub modifiers: Vec<MartianConfig>,
    /// Accepted for compatibility: these modifiers cannot fail while
    /// running, so there is nothing to aggregate.
    #[serde(default, rename = "aggregateErrors")]
    pub aggregate_errors: Option<bool>,
}

/// `priority.Group`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityGroupConfig {
    /// The directions; every one when absent.
    #[serde(default)]
    pub scope: Option<Vec<Scope>>,
    /// The modifiers with their priorities.
    pub modifiers: Vec<PrioritizedConfig>,
}

/// One entry of a `priority.Group`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrioritizedConfig {
    /// Higher runs first; on a tie the later entry runs first. 0 when
    /// absent.
    #[serde(default)]
    pub priority: i64,
    /// The modifier.
    pub modifier: MartianConfig,
}
