//! Provider configuration: KrakenD's `ai/providers` inventory and the
//! backend `ai/llm` object, validated at load.

use serde_json::{Map, Value};
use switchboard_core::ConfigError;

/// Type-checks the variables every vendor shares: sampling numbers within
/// range, token limits as positive integers, stop lists as strings,
/// `extra_payload` as an object. Unknown variables pass (KrakenD accepts
/// them for custom templates), except where an adapter says otherwise.
pub fn check_common_variables(variables: &Map<String, Value>) -> Result<(), ConfigError> {
    for (key, value) in variables {
        let problem = match key.as_str() {
            "temperature" => range(value, 0.0, 2.0),
            "top_p" => range(value, 0.0, 1.0),
            "top_k" | "max_tokens" | "max_output_tokens" | "n" | "candidate_count" => {
                positive_integer(value)
            }
            "seed" | "random_seed" => value
                .as_i64()
                .is_none()
                .then(|| "must be an integer".to_owned()),
            "stop" | "stop_sequences" => string_or_list(value),
            "safe_prompt" => (!value.is_boolean()).then(|| "must be a boolean".to_owned()),
            "truncation" => match value.as_str() {
                Some("auto" | "disabled") => None,
                _ => Some("must be \"auto\" or \"disabled\"".to_owned()),
            },
            "extra_payload" => (!value.is_object()).then(|| "must be an object".to_owned()),
            "model" => (!value.is_string()).then(|| "must be a string".to_owned()),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(ConfigError::new(key.clone(), problem));
        }
    }
    Ok(())
}

fn range(value: &Value, min: f64, max: f64) -> Option<String> {
    match value.as_f64() {
        Some(v) if (min..=max).contains(&v) => None,
        _ => Some(format!("must be a number from {min} to {max}")),
    }
}

fn positive_integer(value: &Value) -> Option<String> {
    match value.as_u64() {
        Some(v) if v > 0 => None,
        _ => Some("must be a positive integer".to_owned()),
    }
}

fn string_or_list(value: &Value) -> Option<String> {
    match value {
        Value::String(_) => None,
        Value::Array(items) if items.iter().all(Value::is_string) => None,
        _ => Some("must be a string or a list of strings".to_owned()),
    }
}
