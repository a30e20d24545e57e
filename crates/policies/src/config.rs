//! The configuration of `security/policies` and `validation/cel`, as KrakenD
//! spells it.

use serde::Deserialize;

/// `security/policies`: CEL policies on the request, the response and the
/// JWT claims.
///
/// ```json
/// {
///   "auto_join_policies": true,
///   "req": { "policies": ["req_headers['X-Llm'][0] in ['gemini','openai']"] },
///   "resp": { "policies": ["resp_status == 200"], "error": { "status": 502 } },
///   "jwt": { "policies": ["JWT.role == 'admin'"] }
/// }
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoliciesConfig {
    /// Policies on the client request.
    #[serde(default)]
    pub req: Option<PolicySetConfig>,
    /// Policies on the upstream response.
    #[serde(default)]
    pub resp: Option<PolicySetConfig>,
    /// Policies on the validated JWT claims (`JWT`).
    #[serde(default)]
    pub jwt: Option<PolicySetConfig>,
    /// Joins each set's policies with `&&` into one program.
    #[serde(default)]
    pub auto_join_policies: bool,
    /// Logs every evaluation at debug level.
    #[serde(default)]
    pub debug: bool,
    /// Leaves out the advanced macros (`between`, `isEmpty`, `inCIDR`, ...).
    #[serde(default, alias = "disable_advanced_macros")]
    pub disable_macros: bool,
}

/// One set of policies (`req`, `resp` or `jwt`) and the error it answers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicySetConfig {
    /// CEL expressions that must all evaluate to `true`.
    #[serde(default)]
    pub policies: Vec<String>,
    /// The answer when one does not.
    #[serde(default)]
    pub error: PolicyErrorConfig,
}

/// The answer to a denied request.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyErrorConfig {
    /// HTTP status; 500 when unset, as in KrakenD (401 for `jwt` policies).
    #[serde(default)]
    pub status: Option<u16>,
    /// A body replacing the JSON error.
    #[serde(default)]
    pub body: Option<String>,
    /// The content type of `body` (default `text/plain; charset=utf-8`).
    #[serde(default)]
    pub content_type: Option<String>,
}

/// One entry of CE's `validation/cel` list.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CelCheck {
    /// A CEL expression that must evaluate to `true`.
    pub check_expr: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_core::config::from_value;

    #[test]
    fn accepts_krakend_shapes() {
        let config: PoliciesConfig = from_value(&json!({
            "auto_join_policies": true,
            "disable_advanced_macros": true,
            "req": {"@comment": "x", "policies": ["true"], "error": {"status": 403, "body": "no", "content_type": "text/plain"}}
        }))
        .unwrap();
        assert!(config.auto_join_policies && config.disable_macros);
        let req = config.req.unwrap();
        assert_eq!(req.error.status, Some(403));
    }

    #[test]
    fn unknown_fields_name_their_path() {
        let err = from_value::<PoliciesConfig>(&json!({"req": {"policy": []}})).unwrap_err();
        assert_eq!(err.path, "req.policy");
        assert!(err.message.contains("policy"), "{}", err.message);
    }
}
