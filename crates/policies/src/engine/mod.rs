//! The one module that speaks to the `cel` crate, whose API changes between
//! minor versions: compiling, the evaluation context, and the functions
//! Switchboard adds.
//!
//! Environments are built once per process (two of them: with and without
//! the advanced macros); a request only clones an `Arc<Env>` into a fresh
//! `Context`, which is cheap, unlike `Context::default()` (it rebuilds the
//! standard library).

mod functions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt,
};
use cel::common::value::Val;
use cel::{Context, Env, Program, Value};

use crate::vars::{Var, VarSet};

/// A compiling and evaluating environment.
#[derive(Clone)]
pub(crate) struct Engine {
    env: Arc<Env>,
}

static ADVANCED: LazyLock<Result<Arc<Env>, String>> =
    LazyLock::new(|| functions::build_env(true).map(Arc::new));
static PLAIN: LazyLock<Result<Arc<Env>, String>> =
    LazyLock::new(|| functions::build_env(false).map(Arc::new));

impl Engine {
    /// The shared environment, with the advanced macros or without.
    pub(crate) fn new(advanced_macros: bool) -> Result<Self, String> {
        let env = if advanced_macros { &ADVANCED } else { &PLAIN };
        env.as_ref()
            .map(|env| Engine {
                env: Arc::clone(env),
            })
            .map_err(Clone::clone)
    }

    /// Compiles one expression. The message is the parser's.
    pub(crate) fn compile(&self, source: &str) -> Result<Compiled, String> {
        let program = self.env.compile(source).map_err(|e| e.to_string())?;
        let mut vars = VarSet::default();
        {
            let references = program.references();
            for var in Var::ALL {
                if references.has_variable(var.name()) {
                    vars.insert(var);
                }
            }
        }
        Ok(Compiled { program, vars })
    }

    /// An empty evaluation context.
    pub(crate) fn activation(&self) -> Activation {
        Activation {
            context: Context::with_env(Arc::clone(&self.env)),
        }
    }
}

/// A compiled expression and the variables it reads.
#[derive(Debug)]
pub(crate) struct Compiled {
    program: Program,
    vars: VarSet,
}

/// What an evaluation decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The expression evaluated to `true`.
    Allow,
    /// Anything else, and why.
    Deny(String),
}

impl Compiled {
    /// The variables the expression references.
    pub(crate) fn vars(&self) -> VarSet {
        self.vars
    }

    /// Evaluates against `activation`. Only `true` allows: `false`, another
    /// type or an error (a missing key included) denies.
    pub(crate) fn evaluate(&self, activation: &Activation) -> Verdict {
        match self.program.execute(&activation.context) {
            Ok(Value::Bool(true)) => Verdict::Allow,
            Ok(Value::Bool(false)) => Verdict::Deny("evaluated to false".to_owned()),
            Ok(other) => Verdict::Deny(format!(
                "evaluated to a {} instead of a boolean",
                other.type_of()
            )),
            Err(err) => Verdict::Deny(format!("evaluation failed: {err}")),
        }
    }
}

/// The variables of one evaluation.
pub(crate) struct Activation {
    context: Context<'static, 'static>,
}

impl Activation {
    fn set(&mut self, var: Var, value: Box<dyn Val>) {
        self.context.add_variable_as_val(var.name(), value);
    }

    /// Binds a JSON value under a name of the caller's (variables that are
    /// not request or response variables, such as `resp0_x`).
    pub(crate) fn set_json_named(&mut self, name: &str, value: &serde_json::Value) {
        self.context
            .add_variable_as_val(name.to_owned(), json_to_val(value));
    }

    /// Binds a string.
    pub(crate) fn set_string(&mut self, var: Var, value: impl Into<String>) {
        self.set(var, Box::new(CelString::from(value.into())));
    }

    /// Binds an integer.
    pub(crate) fn set_int(&mut self, var: Var, value: i64) {
        self.set(var, Box::new(CelInt::from(value)));
    }

    /// Binds a boolean.
    pub(crate) fn set_bool(&mut self, var: Var, value: bool) {
        self.set(var, Box::new(CelBool::from(value)));
    }

    /// Binds a JSON value.
    pub(crate) fn set_json(&mut self, var: Var, value: &serde_json::Value) {
        self.set(var, json_to_val(value));
    }

    /// Binds a map of strings.
    pub(crate) fn set_string_map<'a>(
        &mut self,
        var: Var,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let map: HashMap<CelMapKey<'static>, Box<dyn Val>> = entries
            .into_iter()
            .map(|(k, v)| {
                (
                    CelMapKey::from(k.to_owned()),
                    Box::new(CelString::from(v.to_owned())) as Box<dyn Val>,
                )
            })
            .collect();
        self.set(var, Box::new(CelMap::from(map)));
    }

    /// Binds a map of string lists (headers, query strings).
    pub(crate) fn set_string_lists(&mut self, var: Var, entries: &BTreeMap<String, Vec<String>>) {
        let map: HashMap<CelMapKey<'static>, Box<dyn Val>> = entries
            .iter()
            .map(|(k, values)| {
                let list: Vec<Box<dyn Val>> = values
                    .iter()
                    .map(|v| Box::new(CelString::from(v.clone())) as Box<dyn Val>)
                    .collect();
                (
                    CelMapKey::from(k.clone()),
                    Box::new(CelList::from(list)) as Box<dyn Val>,
                )
            })
            .collect();
        self.set(var, Box::new(CelMap::from(map)));
    }

    /// Binds a point in time as a CEL timestamp.
    pub(crate) fn set_timestamp(&mut self, var: Var, at: chrono::DateTime<chrono::Utc>) {
        self.set(var, Box::new(CelTimestamp::from(at.fixed_offset())));
    }
}

/// A JSON value as a CEL value: integral numbers become `int` (or `uint`
/// past `i64`), others `double`.
fn json_to_val(value: &serde_json::Value) -> Box<dyn Val> {
    use serde_json::Value as J;
    match value {
        J::Null => Box::new(CelNull),
        J::Bool(b) => Box::new(CelBool::from(*b)),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        J::String(s) => Box::new(CelString::from(s.clone())),
        J::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val).collect::<Vec<_>>(),
        )),
        J::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.clone()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(source: &str, setup: impl FnOnce(&mut Activation)) -> Verdict {
        let engine = Engine::new(true).unwrap();
        let compiled = engine.compile(source).unwrap();
        let mut activation = engine.activation();
        setup(&mut activation);
        compiled.evaluate(&activation)
    }

    fn allows(source: &str) -> bool {
        eval(source, |a| {
            a.set_json(
                Var::RespData,
                &json!({"n": 3, "f": 1.5, "s": "abc", "l": [], "m": {}, "nested": {"x": ""}}),
            );
            a.set_timestamp(Var::Now, chrono::Utc::now());
        }) == Verdict::Allow
    }

    #[test]
    fn references_are_collected() {
        let engine = Engine::new(true).unwrap();
        let compiled = engine
            .compile("req_headers['X'][0] == 'a' && has(JWT.sub)")
            .unwrap();
        assert!(compiled.vars().contains(Var::ReqHeaders));
        assert!(compiled.vars().contains(Var::Jwt));
        assert!(!compiled.vars().contains(Var::ReqBody));
        let hidden = engine.compile("hasHeader('X-Llm')").unwrap();
        assert!(hidden.vars().contains(Var::ReqHeaders));
    }

    #[test]
    fn json_numbers_and_access() {
        assert!(allows("resp_data.n == 3"));
        assert!(allows("resp_data.f > 1.0"));
        assert!(allows("resp_data.s.startsWith('a')"));
        assert!(!allows("resp_data.missing == 1"));
    }

    #[test]
    fn non_boolean_and_errors_deny() {
        assert!(
            matches!(eval("1 + 1", |_| {}), Verdict::Deny(m) if m.contains("instead of a boolean"))
        );
        assert!(
            matches!(eval("undeclared == 1", |_| {}), Verdict::Deny(m) if m.contains("evaluation failed"))
        );
    }

    #[test]
    fn compile_errors_carry_the_parser_message() {
        let engine = Engine::new(true).unwrap();
        let err = engine.compile("req_method ==").unwrap_err();
        assert!(err.contains("ERROR"), "{err}");
    }

    #[test]
    fn matches_uses_cached_regex() {
        assert!(allows("resp_data.s.matches('^a.c$')"));
        assert!(allows("matches(resp_data.s, 'b')"));
        assert!(!allows("resp_data.s.matches('^z')"));
        let engine = Engine::new(false).unwrap();
        assert!(engine.compile("'a'.matches('(')").is_err());
    }

    #[test]
    fn between() {
        assert!(allows("between(2, 2, 2)"));
        assert!(!allows("between(2, 5, 7)"));
        assert!(allows("resp_data.n.between(1, 3)"));
        assert!(allows("between(2.0, 1.9, 2.1)"));
        assert!(allows("between(resp_data.f, 1, 2)"));
    }

    #[test]
    fn is_empty() {
        assert!(allows("isEmpty('')"));
        assert!(allows("isEmpty(resp_data.l)"));
        assert!(allows("isEmpty(resp_data.m)"));
        assert!(allows("isEmpty(resp_data.missing)"));
        assert!(allows("isEmpty(resp_data['missing'])"));
        assert!(allows("isEmpty(resp_data.nested.x)"));
        assert!(allows("isEmpty(null)"));
        assert!(!allows("isEmpty(resp_data.s)"));
        assert!(!allows("isEmpty(resp_data.n)"));
    }

    #[test]
    fn strings() {
        assert!(allows("'TacoCat'.lowerAscii() == 'tacocat'"));
        assert!(allows("'a,b'.split(',') == ['a', 'b']"));
        assert!(allows("'  x '.trim() == 'x'"));
        assert!(allows("'abc'.contains('b') && 'abc'.endsWith('c')"));
    }

    #[test]
    fn time() {
        assert!(allows("timeNow() >= now"));
        assert!(allows(
            "timeAgo(timestamp('2020-01-01T00:00:00Z')) > duration('24h')"
        ));
        assert!(allows("timeAgo('2020-01-01T00:00:00Z') > duration('24h')"));
        assert!(allows(
            "inTimeRange(timestamp('2023-01-01T11:00:00Z'), '2023-01-01T10:00:00Z', '2023-01-01T12:00:00Z')"
        ));
        assert!(!allows(
            "inTimeRange(now, '2023-01-01T10:00:00Z', timestamp('2023-01-01T12:00:00Z'))"
        ));
        assert!(allows(
            "timestamp(now) > timestamp('2023-01-01T10:00:20.000-05:00')"
        ));
    }

    #[test]
    fn ip_helpers() {
        assert!(allows("inCIDR('10.1.2.3', '10.0.0.0/8')"));
        assert!(allows("'10.1.2.3'.inCIDR('10.0.0.0/8')"));
        assert!(!allows("inCIDR('11.1.2.3', '10.0.0.0/8')"));
        assert!(allows(
            "inCIDR('192.168.1.9', ['10.0.0.0/8', '192.168.1.0/24'])"
        ));
        assert!(allows("inCIDR('2001:db8::1', '2001:db8::/32')"));
        assert!(!allows("inCIDR('not-an-ip', '10.0.0.0/8')"));
        assert!(allows("isIPv4('10.1.2.3') && !isIPv4('::1')"));
        assert!(allows("isIPv6('::1') && !isIPv6('10.1.2.3')"));
        assert!(allows("isIP('::1') && !isIP('nope')"));
        assert!(!allows("inCIDR('10.1.2.3', '10.0.0.0/99')"));
    }

    #[test]
    fn macros_can_be_disabled() {
        let engine = Engine::new(false).unwrap();
        let compiled = engine.compile("between(2, 1, 3)").unwrap();
        assert!(matches!(
            compiled.evaluate(&engine.activation()),
            Verdict::Deny(_)
        ));
        let compiled = engine.compile("'abc'.matches('b')").unwrap();
        assert_eq!(compiled.evaluate(&engine.activation()), Verdict::Allow);
    }
}
