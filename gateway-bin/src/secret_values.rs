//! Collects the secret values a config holds, for the one scrubber
//! (`switchboard_core::secrets`): every `{{ env "NAME" }}` substitution,
//! every string under a secret-named field (`key`, `secret`, `password`,
//! …), the value a modifier sets on a secret-named header or query
//! parameter (`{"name": "X-Goog-Api-Key", "value": …}`), and secret-named
//! query values written into a `url_pattern`.

use serde_json::Value;
use switchboard_core::secrets::{Secrets, is_secret_name};

use crate::config::RootConfig;

/// The secrets of a config.
pub(crate) fn collect(root: &RootConfig) -> Secrets {
    let mut values = Vec::new();
    let mut extras = vec![&root.extra_config];
    for endpoint in &root.endpoints {
        extras.push(&endpoint.extra_config);
        for backend in &endpoint.backend {
            extras.push(&backend.extra_config);
            if let Some((_, query)) = backend.url_pattern.split_once('?') {
                for pair in query.split('&') {
                    if let Some((name, value)) = pair.split_once('=')
                        && is_secret_name(name)
                        && !value.starts_with('{')
                    {
                        values.push(value.to_owned());
                    }
                }
            }
        }
    }
    for extra in extras {
        for value in extra.values() {
            walk(value, false, &mut values);
        }
    }
    values.extend(root.env_secrets.values().iter().cloned());
    Secrets::new(values)
}

fn walk(value: &Value, secret: bool, out: &mut Vec<String>) {
    match value {
        Value::String(text) if secret => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| walk(item, secret, out)),
        Value::Object(map) => {
            let named_secret = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(is_secret_name);
            for (key, item) in map {
                let here = secret || is_secret_name(key) || (named_secret && key == "value");
                walk(item, here, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_secrets_are_found() {
        let text = r#"{"version":3,"extra_config":{"auth/api-keys":{"keys":[{"key":"client-key-0001"}]}},
          "endpoints":[{"endpoint":"/a","backend":[{"url_pattern":"/v1?key=AIza-literal-1&alt=sse&q={input_query_strings.q}",
            "extra_config":{"modifier/martian":{"header.Modifier":{"scope":["request"],"name":"X-Goog-Api-Key","value":"{{ env "G" }}"}}}}]}]}"#;
        let env = |name: &str| (name == "G").then(|| "AIza-from-env-1".to_owned());
        let root = crate::config::parse_str(text, &env).unwrap();
        let secrets = collect(&root);
        let scrubbed = secrets.scrub("client-key-0001 AIza-literal-1 AIza-from-env-1 sse request");
        assert_eq!(scrubbed, "[redacted] [redacted] [redacted] sse request");
    }
}
