//! CEL conditions for other crates that decide on a request without
//! answering it (routing gates, conditional backends, quota and rate-limit
//! tiers, prompt guards).

use std::fmt;

use http::Request;
use switchboard_core::JsonBody;

use crate::engine::{Compiled, Engine, Verdict};
use crate::service::bind_request;
use crate::vars::Var;

/// A compiled CEL condition over the request variables (`req_method`,
/// `req_path`, `req_params`, `req_headers`, `req_querystring`, `req_body`,
/// `JWT`, `now`) with the advanced macros (`hasHeader`, `getHeader`, ...).
///
/// Compiled once; evaluating it clones a shared environment, builds only
/// the variables the expression reads, and fails closed: only `true` is a
/// match.
///
/// ```
/// use switchboard_policies::RequestCondition;
///
/// let condition = RequestCondition::compile("getHeader('X-Plan') == 'pro'").unwrap();
/// let request = http::Request::builder().header("x-plan", "pro").body(()).unwrap();
/// assert!(condition.matches(&request, None));
/// let other = http::Request::builder().body(()).unwrap();
/// assert!(!condition.matches(&other, None));
/// ```
pub struct RequestCondition {
    engine: Engine,
    compiled: Compiled,
    source: String,
}

impl fmt::Debug for RequestCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestCondition")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl RequestCondition {
    /// Compiles `source`. The error is the parser's message.
    pub fn compile(source: &str) -> Result<Self, String> {
        let engine = Engine::new(true)?;
        let compiled = engine.compile(source)?;
        if compiled.vars().has_response_var() {
            return Err("a request condition cannot read the response".to_owned());
        }
        Ok(Self {
            engine,
            compiled,
            source: source.to_owned(),
        })
    }

    /// Whether the expression reads `req_body` (the caller then parses the
    /// body and passes it).
    pub fn reads_body(&self) -> bool {
        self.compiled.vars().contains(Var::ReqBody)
    }

    /// Whether the request matches: the expression evaluated to `true`.
    pub fn matches<B>(&self, request: &Request<B>, body: Option<&JsonBody>) -> bool {
        self.matches_with(request, body, &[])
    }

    /// As [`matches`](Self::matches), with extra JSON variables bound under
    /// their own names (a sequential proxy's `resp0_x`).
    pub fn matches_with<B>(
        &self,
        request: &Request<B>,
        body: Option<&JsonBody>,
        extra: &[(&str, &serde_json::Value)],
    ) -> bool {
        let mut activation = self.engine.activation();
        bind_request(&mut activation, self.compiled.vars(), request, body);
        for (name, value) in extra {
            activation.set_named_json(name, value);
        }
        match self.compiled.evaluate(&activation) {
            Verdict::Allow => true,
            Verdict::Deny(reason) => {
                tracing::trace!(condition = %self.source, %reason, "condition did not match");
                false
            }
        }
    }
}

/// A CEL expression over named JSON values (a prompt guard's `body` and
/// `meta`).
pub struct JsonCondition {
    engine: Engine,
    compiled: Compiled,
    source: String,
}

impl fmt::Debug for JsonCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonCondition").field(&self.source).finish()
    }
}

impl JsonCondition {
    /// Compiles an expression.
    pub fn compile(source: &str) -> Result<Self, String> {
        let engine = Engine::new(true)?;
        let compiled = engine.compile(source)?;
        Ok(Self {
            engine,
            compiled,
            source: source.to_owned(),
        })
    }

    /// Evaluates with the given variables: `Ok(true)` only for `true`;
    /// `Err` says why anything else happened.
    pub fn evaluate(&self, vars: &[(&str, &serde_json::Value)]) -> Result<bool, String> {
        let mut activation = self.engine.activation();
        for (name, value) in vars {
            activation.set_named_json(name, value);
        }
        match self.compiled.evaluate(&activation) {
            Verdict::Allow => Ok(true),
            Verdict::Deny(reason) if reason == "evaluated to false" => Ok(false),
            Verdict::Deny(reason) => Err(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_core::Claims;

    fn request() -> Request<()> {
        let mut request = Request::builder()
            .uri("/chat?tier=gold")
            .header("x-llm", "code")
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(Claims::new(json!({"plan": "pro", "sub": "u1"})));
        request
    }

    #[test]
    fn headers_claims_and_query() {
        let cond = |s: &str| RequestCondition::compile(s).unwrap();
        assert!(cond("hasHeader('X-Llm')").matches(&request(), None));
        assert!(cond("getHeader('x-llm') == 'code'").matches(&request(), None));
        assert!(cond("getHeader('X-Missing') == ''").matches(&request(), None));
        assert!(cond("JWT.plan == 'pro'").matches(&request(), None));
        assert!(!cond("JWT.plan == 'free'").matches(&request(), None));
        assert!(cond("req_querystring.tier[0] == 'gold'").matches(&request(), None));
        // A missing key fails closed.
        assert!(!cond("JWT.missing == 'x'").matches(&request(), None));
    }

    #[test]
    fn body_and_extra_variables() {
        let body = JsonBody::new(json!({"model": "fast"}));
        let c = RequestCondition::compile("req_body.model == 'fast'").unwrap();
        assert!(c.reads_body());
        assert!(c.matches(&request(), Some(&body)));
        assert!(!c.matches(&request(), None));
        let c = RequestCondition::compile("resp0_user.id == 7").unwrap();
        assert!(!c.reads_body());
        let user = json!({"id": 7});
        assert!(c.matches_with(&request(), None, &[("resp0_user", &user)]));
    }

    #[test]
    fn compile_errors_are_reported() {
        assert!(RequestCondition::compile("req_method ==").is_err());
        assert!(RequestCondition::compile("resp_status == 200").is_err());
    }

    #[test]
    fn json_conditions_bind_named_values() {
        let condition = JsonCondition::compile("body.messages.size() > 2").unwrap();
        let body = json!({"messages": [1, 2, 3]});
        assert_eq!(condition.evaluate(&[("body", &body)]), Ok(true));
        let small = json!({"messages": []});
        assert_eq!(condition.evaluate(&[("body", &small)]), Ok(false));
        assert!(condition.evaluate(&[]).is_err());
    }
}
