//! What Switchboard adds to CEL's standard library: a `matches` with cached
//! regexes, and KrakenD's advanced macros (`between`, `isEmpty`,
//! `hasHeader`, the string extension, time and IP helpers).
//!
//! Functions are plain `fn`s registered as overloads on the shared `Env`, so
//! a request registers nothing. Macros rewrite calls at compile time into
//! calls of those functions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, RwLock};

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::{
    CelBool, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelString, CelTimestamp, CelUInt,
    DYN_TYPE, Kind, STRING_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::{Env, ExecutionError};
use chrono::{DateTime, FixedOffset, Utc};
use regex::Regex;

use crate::headers::canonical_header_name;

type Outcome<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

const MATCHES: &str = "matches_cached";
const IS_EMPTY: &str = "isEmpty_value";
const IS_EMPTY_AT: &str = "isEmpty_at";
const HAS_HEADER: &str = "hasHeader_in";
const GET_HEADER: &str = "getHeader_in";

/// Builds the environment: the standard library, `matches` with a regex
/// cache, and, when `advanced`, KrakenD's advanced macros.
pub(super) fn build_env(advanced: bool) -> Result<Env, String> {
    let mut env = Env::stdlib();
    declare(&mut env, advanced).map_err(|e| e.to_string())?;
    Ok(env)
}

fn declare(env: &mut Env, advanced: bool) -> Result<(), cel::DeclarationError> {
    env.add_macro(Macro::receiver("matches", 1, |helper, target, args| {
        let text = target.take();
        let pattern = args.pop();
        match (text, pattern) {
            (Some(text), Some(pattern)) => expand_matches(helper, text, pattern).map(Some),
            _ => Ok(None),
        }
    }))?;
    env.add_macro(Macro::global("matches", 2, |helper, _target, args| {
        let pattern = args.pop();
        let text = args.pop();
        match (text, pattern) {
            (Some(text), Some(pattern)) => expand_matches(helper, text, pattern).map(Some),
            _ => Ok(None),
        }
    }))?;
    env.add_overload(
        MATCHES,
        "matches_cached_string_string",
        vec![STRING_TYPE, STRING_TYPE],
        matches_cached,
    )?;
    if !advanced {
        return Ok(());
    }

    env.add_extension(cel::extensions::strings)?;

    env.add_macro(Macro::global("isEmpty", 1, |helper, _target, args| {
        Ok(args.pop().map(|arg| expand_is_empty(helper, arg)))
    }))?;
    env.add_overload(
        IS_EMPTY,
        "isEmpty_value_dyn",
        vec![DYN_TYPE],
        is_empty_value,
    )?;
    env.add_overload(
        IS_EMPTY_AT,
        "isEmpty_at_dyn_dyn",
        vec![DYN_TYPE, DYN_TYPE],
        is_empty_at,
    )?;

    env.add_macro(Macro::global("hasHeader", 1, |helper, _target, args| {
        Ok(args.pop().map(|name| {
            let headers = helper.next_expr(Expr::Ident("req_headers".to_owned()));
            call(helper, HAS_HEADER, vec![headers, name])
        }))
    }))?;
    env.add_overload(
        HAS_HEADER,
        "hasHeader_in_dyn_string",
        vec![DYN_TYPE, STRING_TYPE],
        has_header,
    )?;
    env.add_macro(Macro::global("getHeader", 1, |helper, _target, args| {
        Ok(args.pop().map(|name| {
            let headers = helper.next_expr(Expr::Ident("req_headers".to_owned()));
            call(helper, GET_HEADER, vec![headers, name])
        }))
    }))?;
    env.add_overload(
        GET_HEADER,
        "getHeader_in_dyn_string",
        vec![DYN_TYPE, STRING_TYPE],
        get_header,
    )?;

    let dyn3 = || vec![DYN_TYPE, DYN_TYPE, DYN_TYPE];
    env.add_overload("between", "between_dyn_dyn_dyn", dyn3(), between)?;
    env.add_member_overload(
        "between",
        "dyn_between_dyn_dyn",
        DYN_TYPE,
        vec![DYN_TYPE, DYN_TYPE],
        between,
    )?;

    env.add_overload("timeNow", "timeNow", vec![], time_now)?;
    env.add_overload("timeAgo", "timeAgo_dyn", vec![DYN_TYPE], time_ago)?;
    env.add_member_overload("timeAgo", "dyn_timeAgo", DYN_TYPE, vec![], time_ago)?;
    env.add_overload(
        "inTimeRange",
        "inTimeRange_dyn_dyn_dyn",
        dyn3(),
        in_time_range,
    )?;
    env.add_member_overload(
        "inTimeRange",
        "dyn_inTimeRange_dyn_dyn",
        DYN_TYPE,
        vec![DYN_TYPE, DYN_TYPE],
        in_time_range,
    )?;

    env.add_overload(
        "inCIDR",
        "inCIDR_string_dyn",
        vec![STRING_TYPE, DYN_TYPE],
        in_cidr,
    )?;
    env.add_member_overload(
        "inCIDR",
        "string_inCIDR_dyn",
        STRING_TYPE,
        vec![DYN_TYPE],
        in_cidr,
    )?;
    for (name, check) in [
        ("isIPv4", is_ipv4 as cel::common::functions::Function),
        ("isIPv6", is_ipv6),
        ("isIP", is_ip),
    ] {
        env.add_overload(name, &format!("{name}_string"), vec![STRING_TYPE], check)?;
        env.add_member_overload(name, &format!("string_{name}"), STRING_TYPE, vec![], check)?;
    }
    Ok(())
}

fn call(helper: &mut MacroExprHelper<'_>, name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    helper.next_expr(Expr::Call(CallExpr {
        func_name: name.to_owned(),
        target: None,
        args,
    }))
}

/// `s.matches(p)` / `matches(s, p)` → `matches_cached(s, p)`. A literal
/// pattern is compiled now: an invalid one fails the load.
fn expand_matches(
    helper: &mut MacroExprHelper<'_>,
    text: IdedExpr,
    pattern: IdedExpr,
) -> Result<IdedExpr, ParseError> {
    if let Expr::Literal(LiteralValue::String(literal)) = &pattern.expr {
        cached_regex(literal.inner()).map_err(|e| helper.new_error(pattern.id, e))?;
    }
    Ok(call(helper, MATCHES, vec![text, pattern]))
}

/// `isEmpty(a.b)` and `isEmpty(a['b'])` test the key without failing when
/// it is missing; `isEmpty(x)` tests a value.
fn expand_is_empty(helper: &mut MacroExprHelper<'_>, arg: IdedExpr) -> IdedExpr {
    match arg.expr {
        Expr::Select(select) if !select.test => {
            let key = helper.next_expr(Expr::Literal(LiteralValue::String(CelString::from(
                select.field,
            ))));
            call(helper, IS_EMPTY_AT, vec![*select.operand, key])
        }
        Expr::Call(index)
            if index.func_name == operators::INDEX
                && index.target.is_none()
                && index.args.len() == 2 =>
        {
            call(helper, IS_EMPTY_AT, index.args)
        }
        expr => {
            let arg = IdedExpr { id: arg.id, expr };
            call(helper, IS_EMPTY, vec![arg])
        }
    }
}

/// Regexes compiled once per pattern. Patterns computed from request data
/// could grow it without end: past the cap they are compiled per call.
static REGEXES: LazyLock<RwLock<HashMap<String, Arc<Regex>>>> = LazyLock::new(Default::default);
const REGEX_CACHE_CAP: usize = 1024;

pub(super) fn cached_regex(pattern: &str) -> Result<Arc<Regex>, String> {
    if let Some(found) = REGEXES
        .read()
        .ok()
        .and_then(|cache| cache.get(pattern).cloned())
    {
        return Ok(found);
    }
    let compiled = Arc::new(
        Regex::new(pattern).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))?,
    );
    if let Ok(mut cache) = REGEXES.write()
        && cache.len() < REGEX_CACHE_CAP
    {
        cache.insert(pattern.to_owned(), Arc::clone(&compiled));
    }
    Ok(compiled)
}

fn bool_val<'b, 'v>(value: bool) -> CowVal<'b, 'v> {
    CowVal::owned(CelBool::from(value))
}

fn arg<'a, 'b, 'v>(
    function: &str,
    args: &'a [CowVal<'b, 'v>],
    index: usize,
) -> Result<&'a (dyn Val + 'v), ExecutionError> {
    args.get(index)
        .map(|v| &**v)
        .ok_or_else(|| ExecutionError::function_error(function, "missing argument"))
}

fn string_arg<'a>(
    function: &str,
    args: &'a [CowVal<'_, '_>],
    index: usize,
) -> Result<&'a str, ExecutionError> {
    let value = arg(function, args, index)?;
    value
        .downcast_ref::<CelString<'_>>()
        .map(|s| s.inner())
        .ok_or_else(|| {
            ExecutionError::function_error(
                function,
                format!("expected a string, got {}", value.get_type().name()),
            )
        })
}

fn matches_cached<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let text = string_arg("matches", &args, 0)?;
    let pattern = string_arg("matches", &args, 1)?;
    let regex = cached_regex(pattern).map_err(|e| ExecutionError::function_error("matches", e))?;
    Ok(bool_val(regex.is_match(text)))
}

/// Empty: `null`, `""`, `b""`, `[]`, `{}`.
fn value_is_empty(value: &dyn Val) -> bool {
    match value.get_type().kind() {
        Kind::NullType => true,
        Kind::String => value
            .downcast_ref::<CelString<'_>>()
            .is_some_and(|s| s.inner().is_empty()),
        Kind::Bytes => value
            .downcast_ref::<cel::common::types::CelBytes<'_>>()
            .is_some_and(|b| b.inner().is_empty()),
        Kind::List => value
            .downcast_ref::<CelList<'_>>()
            .is_some_and(|l| l.inner().is_empty()),
        Kind::Map => value
            .downcast_ref::<CelMap<'_>>()
            .is_some_and(|m| m.inner().is_empty()),
        _ => false,
    }
}

fn is_empty_value<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    Ok(bool_val(value_is_empty(arg("isEmpty", &args, 0)?)))
}

/// Whether `container[key]` is missing or empty. A missing container
/// level above it still fails (and so denies).
fn entry_is_empty(container: &dyn Val, key: &dyn Val) -> Result<bool, ExecutionError> {
    match container.get_type().kind() {
        Kind::NullType => Ok(true),
        Kind::Map => {
            let map = container
                .downcast_ref::<CelMap<'_>>()
                .ok_or_else(|| ExecutionError::function_error("isEmpty", "unsupported map"))?;
            let key = map_key(key)?;
            Ok(map
                .inner()
                .get(&key)
                .is_none_or(|v| value_is_empty(v.as_ref())))
        }
        Kind::List => {
            let list = container
                .downcast_ref::<CelList<'_>>()
                .ok_or_else(|| ExecutionError::function_error("isEmpty", "unsupported list"))?;
            let index = match key.get_type().kind() {
                Kind::Int => key
                    .downcast_ref::<CelInt>()
                    .map(|i| *i.inner())
                    .and_then(|i| usize::try_from(i).ok()),
                Kind::UInt => key
                    .downcast_ref::<CelUInt>()
                    .and_then(|u| usize::try_from(*u.inner()).ok()),
                _ => None,
            };
            Ok(index
                .and_then(|i| list.inner().get(i))
                .is_none_or(|v| value_is_empty(v.as_ref())))
        }
        _ => Err(ExecutionError::function_error(
            "isEmpty",
            format!("cannot index a {}", container.get_type().name()),
        )),
    }
}

fn map_key(key: &dyn Val) -> Result<CelMapKey<'static>, ExecutionError> {
    match key.get_type().kind() {
        Kind::String => key
            .downcast_ref::<CelString<'_>>()
            .map(|s| CelMapKey::from(s.inner().to_owned())),
        Kind::Int => key
            .downcast_ref::<CelInt>()
            .map(|i| CelMapKey::from(*i.inner())),
        Kind::UInt => key
            .downcast_ref::<CelUInt>()
            .map(|u| CelMapKey::from(*u.inner())),
        Kind::Boolean => key
            .downcast_ref::<CelBool>()
            .map(|b| CelMapKey::from(*b.inner())),
        _ => None,
    }
    .ok_or_else(|| {
        ExecutionError::function_error(
            "isEmpty",
            format!("a {} is not a map key", key.get_type().name()),
        )
    })
}

fn is_empty_at<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let container = arg("isEmpty", &args, 0)?;
    let key = arg("isEmpty", &args, 1)?;
    Ok(bool_val(entry_is_empty(container, key)?))
}

fn has_header<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let headers = arg("hasHeader", &args, 0)?;
    let name = canonical_header_name(string_arg("hasHeader", &args, 1)?);
    let key = CelString::from(name);
    Ok(bool_val(!entry_is_empty(headers, &key)?))
}

/// The first value of a header, `""` when it is absent (as KrakenD's
/// `getHeader`).
fn get_header<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let headers = arg("getHeader", &args, 0)?;
    let name = canonical_header_name(string_arg("getHeader", &args, 1)?);
    let first = headers
        .downcast_ref::<CelMap<'_>>()
        .and_then(|map| map.inner().get(&CelMapKey::from(name)))
        .and_then(|values| values.downcast_ref::<CelList<'_>>())
        .and_then(|list| list.inner().first())
        .and_then(|value| value.downcast_ref::<CelString<'_>>())
        .map(|s| s.inner().to_owned())
        .unwrap_or_default();
    Ok(CowVal::owned(CelString::from(first)))
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    UInt(u64),
    Double(f64),
}

impl Number {
    fn of(value: &dyn Val) -> Option<Number> {
        match value.get_type().kind() {
            Kind::Int => value
                .downcast_ref::<CelInt>()
                .map(|i| Number::Int(*i.inner())),
            Kind::UInt => value
                .downcast_ref::<CelUInt>()
                .map(|u| Number::UInt(*u.inner())),
            Kind::Double => value
                .downcast_ref::<cel::common::types::CelDouble>()
                .map(|d| Number::Double(*d.inner())),
            _ => None,
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::UInt(u) => u as f64,
            Number::Double(d) => d,
        }
    }
}

/// `between(x, min, max)` and `x.between(min, max)`: `min <= x <= max`.
fn between<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let mut numbers = [Number::Int(0); 3];
    for (i, slot) in numbers.iter_mut().enumerate() {
        let value = arg("between", &args, i)?;
        *slot = Number::of(value).ok_or_else(|| {
            ExecutionError::function_error(
                "between",
                format!("expected a number, got {}", value.get_type().name()),
            )
        })?;
    }
    let inside = match numbers {
        [Number::Int(x), Number::Int(lo), Number::Int(hi)] => lo <= x && x <= hi,
        [Number::UInt(x), Number::UInt(lo), Number::UInt(hi)] => lo <= x && x <= hi,
        [x, lo, hi] => {
            let (x, lo, hi) = (x.as_f64(), lo.as_f64(), hi.as_f64());
            lo <= x && x <= hi
        }
    };
    Ok(bool_val(inside))
}

/// A timestamp, or an RFC 3339 string.
fn time_arg(
    function: &str,
    args: &[CowVal<'_, '_>],
    index: usize,
) -> Result<DateTime<FixedOffset>, ExecutionError> {
    let value = arg(function, args, index)?;
    if let Some(ts) = value.downcast_ref::<CelTimestamp>() {
        return Ok(*ts.inner());
    }
    if let Some(text) = value.downcast_ref::<CelString<'_>>() {
        return DateTime::parse_from_rfc3339(text.inner()).map_err(|e| {
            ExecutionError::function_error(
                function,
                format!("{:?} is not RFC 3339: {e}", text.inner()),
            )
        });
    }
    Err(ExecutionError::function_error(
        function,
        format!("expected a timestamp, got {}", value.get_type().name()),
    ))
}

fn time_now<'b, 'v>(_args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    Ok(CowVal::owned(CelTimestamp::from(Utc::now().fixed_offset())))
}

/// `timeAgo(t)`: the duration from `t` to now.
fn time_ago<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let at = time_arg("timeAgo", &args, 0)?;
    let elapsed = Utc::now().fixed_offset().signed_duration_since(at);
    Ok(CowVal::owned(CelDuration::from(elapsed)))
}

/// `inTimeRange(t, from, to)`: `from <= t <= to`.
fn in_time_range<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let at = time_arg("inTimeRange", &args, 0)?;
    let from = time_arg("inTimeRange", &args, 1)?;
    let to = time_arg("inTimeRange", &args, 2)?;
    Ok(bool_val(from <= at && at <= to))
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// A network in CIDR notation; a bare address is a single-host network.
fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, prefix) = match text.trim().split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text.trim(), None),
    };
    let address = address
        .parse::<IpAddr>()
        .map_err(|_| format!("invalid CIDR {text:?}"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid CIDR {text:?}"))?,
        None => max,
    };
    Ok((address, prefix))
}

fn cidr_contains((network, prefix): (IpAddr, u8), ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// `inCIDR(ip, cidr)`, `inCIDR(ip, [cidr, ...])` and `ip.inCIDR(...)`. An
/// address that does not parse is in no network; a bad CIDR is an error.
fn in_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let ip = string_arg("inCIDR", &args, 0)?;
    let networks = arg("inCIDR", &args, 1)?;
    let mut cidrs: Vec<&str> = Vec::new();
    if let Some(one) = networks.downcast_ref::<CelString<'_>>() {
        cidrs.push(one.inner());
    } else if let Some(list) = networks.downcast_ref::<CelList<'_>>() {
        for item in list.inner() {
            let cidr = item.downcast_ref::<CelString<'_>>().ok_or_else(|| {
                ExecutionError::function_error("inCIDR", "CIDR lists hold strings")
            })?;
            cidrs.push(cidr.inner());
        }
    } else {
        return Err(ExecutionError::function_error(
            "inCIDR",
            format!(
                "expected a CIDR or a list of them, got {}",
                networks.get_type().name()
            ),
        ));
    }
    let networks = cidrs
        .iter()
        .map(|c| parse_cidr(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExecutionError::function_error("inCIDR", e))?;
    let inside = parse_ip(ip).is_some_and(|ip| networks.iter().any(|n| cidr_contains(*n, ip)));
    Ok(bool_val(inside))
}

fn is_ipv4<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let text = string_arg("isIPv4", &args, 0)?;
    Ok(bool_val(text.parse::<std::net::Ipv4Addr>().is_ok()))
}

fn is_ipv6<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let text = string_arg("isIPv6", &args, 0)?;
    Ok(bool_val(text.parse::<std::net::Ipv6Addr>().is_ok()))
}

fn is_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Outcome<'b, 'v> {
    let text = string_arg("isIP", &args, 0)?;
    Ok(bool_val(text.parse::<IpAddr>().is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(cidr_contains(net, "10.255.0.1".parse().unwrap()));
        assert!(!cidr_contains(net, "11.0.0.1".parse().unwrap()));
        assert!(cidr_contains(
            parse_cidr("0.0.0.0/0").unwrap(),
            "1.2.3.4".parse().unwrap()
        ));
        assert!(cidr_contains(
            parse_cidr("1.2.3.4").unwrap(),
            "1.2.3.4".parse().unwrap()
        ));
        assert!(parse_cidr("1.2.3.4/33").is_err());
        assert!(parse_ip("::ffff:10.0.0.1").is_some_and(|ip| cidr_contains(net, ip)));
    }

    #[test]
    fn regex_cache_reuses() {
        let a = cached_regex("^x+$").unwrap();
        let b = cached_regex("^x+$").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(cached_regex("(").is_err());
    }
}
