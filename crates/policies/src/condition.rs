//! CEL conditions for other layers (quota and rate-limit tiers, prompt
//! guards) that need a yes/no on a request without a policy's error
//! handling. Compiled once; an evaluation error or a non-boolean is `false`.

use std::fmt;

use http::Request;
use switchboard_core::JsonBody;

use crate::engine::{Compiled, Engine, Verdict};
use crate::service::bind_request;

/// A CEL expression over the request variables `security/policies` knows
/// (`req_headers`, `req_params`, `req_querystring`, `req_method`,
/// `req_path`, `req_body` when a layer before parsed it, `JWT`, `now`).
pub struct RequestCondition {
    engine: Engine,
    compiled: Compiled,
    source: String,
}

impl fmt::Debug for RequestCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestCondition")
            .field(&self.source)
            .finish()
    }
}

impl RequestCondition {
    /// Compiles an expression (advanced macros on, as in KrakenD).
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

    /// Whether the request matches; errors (a missing key included) do not.
    pub fn matches<B>(&self, request: &Request<B>) -> bool {
        let mut activation = self.engine.activation();
        let body = request.extensions().get::<JsonBody>();
        bind_request(&mut activation, self.compiled.vars(), request, body);
        self.compiled.evaluate(&activation) == Verdict::Allow
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

    #[test]
    fn request_conditions_read_headers_and_claims() {
        let condition =
            RequestCondition::compile("req_headers['X-Plan'][0] == 'gold' || JWT.plan == 'gold'")
                .unwrap();
        let by_header = Request::builder()
            .header("x-plan", "gold")
            .body(())
            .unwrap();
        assert!(condition.matches(&by_header));
        let mut by_claim = Request::new(());
        by_claim
            .extensions_mut()
            .insert(Claims::new(json!({"plan": "gold"})));
        assert!(condition.matches(&by_claim));
        assert!(!condition.matches(&Request::new(())));
        assert!(RequestCondition::compile("resp_status == 200").is_err());
        assert!(RequestCondition::compile("(((").is_err());
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
