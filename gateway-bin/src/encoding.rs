//! KrakenD's non-JSON encodings: backend bodies in XML, RSS, `safejson`
//! read into JSON values, and endpoint answers written as XML, YAML
//! (`negotiate` with `Accept: text/plain`) or a plain string.
//!
//! The XML mapping is the one KrakenD uses (mxj): an element with only
//! text is a string, attributes are `-name` keys, text beside attributes
//! or children is `#text`, repeated children become an array, and the root
//! element is the single key of the object. Writing goes the other way: an
//! object with one key is written with that key as the root element,
//! anything else inside `<doc>`; keys are written in sorted order.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use serde_json::{Map, Value};

use crate::config::Encoding;

/// Whether an encoding can be an endpoint's `output_encoding`.
pub(crate) fn check_output(encoding: Encoding) -> Result<(), String> {
    match encoding {
        Encoding::SafeJson | Encoding::Rss => Err(format!(
            "{:?} is a backend encoding; endpoints answer json, json-collection, xml, \
             negotiate, string, no-op or streaming",
            describe(encoding)
        )),
        _ => Ok(()),
    }
}

/// Whether an encoding can be a backend's `encoding`.
pub(crate) fn check_backend(encoding: Encoding) -> Result<(), String> {
    match encoding {
        Encoding::Negotiate | Encoding::Streaming => Err(format!(
            "{:?} is an endpoint output_encoding; backends read json, safejson, \
             json-collection, xml, rss, string or no-op",
            describe(encoding)
        )),
        _ => Ok(()),
    }
}

pub(crate) fn describe(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => "json",
        Encoding::SafeJson => "safejson",
        Encoding::Xml => "xml",
        Encoding::Rss => "rss",
        Encoding::Negotiate => "negotiate",
        Encoding::JsonCollection => "json-collection",
        Encoding::String => "string",
        Encoding::NoOp => "no-op",
        Encoding::Streaming => "streaming",
    }
}

/// The most nested XML elements read (deeper documents are refused).
const MAX_DEPTH: usize = 128;

/// Reads an XML document into KrakenD's JSON shape.
pub(crate) fn xml_to_json(bytes: &[u8]) -> Result<Value, String> {
    struct Frame {
        name: String,
        map: Map<String, Value>,
        text: String,
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("XML is not UTF-8: {e}"))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = Map::new();
    let open = |start: &quick_xml::events::BytesStart<'_>| -> Result<Frame, String> {
        let name = String::from(start.name().as_ref());
        let mut map = Map::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| format!("invalid XML attribute: {e}"))?;
            let key = format!("-{}", attr.key.as_ref());
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| format!("invalid XML attribute value: {e}"))?;
            map.insert(key, Value::String(value.into_owned()));
        }
        Ok(Frame {
            name,
            map,
            text: String::new(),
        })
    };
    let close = |frame: Frame| -> (String, Value) {
        let text = frame.text.trim().to_owned();
        let value = if frame.map.is_empty() {
            Value::String(text)
        } else {
            let mut map = frame.map;
            if !text.is_empty() {
                map.insert("#text".to_owned(), Value::String(text));
            }
            Value::Object(map)
        };
        (frame.name, value)
    };
    let attach = |stack: &mut Vec<Frame>, root: &mut Map<String, Value>, name, value| {
        let target = match stack.last_mut() {
            Some(parent) => &mut parent.map,
            None => root,
        };
        insert_repeated(target, name, value);
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                if stack.len() >= MAX_DEPTH {
                    return Err("XML nests too deep".to_owned());
                }
                stack.push(open(&start)?);
            }
            Ok(Event::Empty(start)) => {
                let (name, value) = close(open(&start)?);
                attach(&mut stack, &mut root, name, value);
            }
            Ok(Event::End(_)) => {
                let Some(frame) = stack.pop() else {
                    return Err("unbalanced XML end tag".to_owned());
                };
                let (name, value) = close(frame);
                attach(&mut stack, &mut root, name, value);
            }
            Ok(Event::Text(text)) => {
                if let Some(frame) = stack.last_mut() {
                    frame.text.push_str(&text.xml10_content());
                }
            }
            Ok(Event::GeneralRef(reference)) => {
                if let Some(frame) = stack.last_mut() {
                    match reference.resolve_char_ref() {
                        Ok(Some(c)) => frame.text.push(c),
                        Ok(None) => {
                            let name = reference.xml10_content();
                            let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| format!("unknown XML entity &{name};"))?;
                            frame.text.push_str(resolved);
                        }
                        Err(e) => return Err(format!("invalid XML reference: {e}")),
                    }
                }
            }
            Ok(Event::CData(data)) => {
                if let Some(frame) = stack.last_mut() {
                    frame.text.push_str(&data.xml10_content());
                }
            }
            Ok(Event::Eof) => break,
            // Declarations, comments, processing instructions, doctypes.
            Ok(_) => {}
            Err(e) => return Err(format!("invalid XML: {e}")),
        }
    }
    if !stack.is_empty() {
        return Err("XML ends inside an element".to_owned());
    }
    if root.is_empty() {
        return Err("XML without a root element".to_owned());
    }
    Ok(Value::Object(root))
}

fn insert_repeated(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            map.insert(name, value);
        }
    }
}

/// Reads an RSS 2.0 (or Atom) feed: the channel's fields at the top level,
/// its `item`s (Atom: `entry`s) as `items`.
pub(crate) fn rss_to_json(bytes: &[u8]) -> Result<Value, String> {
    let Value::Object(mut doc) = xml_to_json(bytes)? else {
        return Err("not a feed".to_owned());
    };
    let (channel, items_key) = if let Some(Value::Object(mut rss)) = doc.remove("rss") {
        match rss.remove("channel") {
            Some(Value::Object(channel)) => (channel, "item"),
            _ => return Err("an RSS feed without a channel".to_owned()),
        }
    } else if let Some(Value::Object(feed)) = doc.remove("feed") {
        (feed, "entry")
    } else {
        return Err("not an RSS or Atom feed".to_owned());
    };
    let mut out = Map::new();
    let mut items = Vec::new();
    for (key, value) in channel {
        if key == items_key {
            match value {
                Value::Array(list) => items.extend(list),
                other => items.push(other),
            }
        } else if !key.starts_with('-') {
            out.insert(key, value);
        }
    }
    out.insert("items".to_owned(), Value::Array(items));
    Ok(Value::Object(out))
}

/// KrakenD's `safejson`: any JSON document; an object as it is, an array as
/// `{"collection": [...]}`, anything else as `{"content": value}`.
pub(crate) fn safejson(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    Ok(match serde_json::from_slice::<Value>(bytes)? {
        object @ Value::Object(_) => object,
        array @ Value::Array(_) => wrap("collection", array),
        other => wrap("content", other),
    })
}

fn wrap(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

/// Writes a value as XML (see the module docs).
pub(crate) fn json_to_xml(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    match value {
        Value::Object(map) if map.len() == 1 => {
            if let Some((key, inner)) = map.iter().next()
                && !inner.is_array()
                && valid_name(key)
            {
                write_element(&mut out, key, inner);
                return out;
            }
            write_element(&mut out, "doc", value);
        }
        other => write_element(&mut out, "doc", other),
    }
    out
}

/// Whether `name` can be written as an element name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn write_element(out: &mut String, name: &str, value: &Value) {
    // A key that cannot be an element name is written under a safe one.
    let name = if valid_name(name) { name } else { "key" };
    match value {
        Value::Array(items) => {
            for item in items {
                write_element(out, name, item);
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('<');
            out.push_str(name);
            for key in keys.iter().filter(|k| k.starts_with('-')) {
                let attr = &key[1..];
                if !valid_name(attr) {
                    continue;
                }
                let text = scalar_text(&map[key.as_str()]);
                let _ = write!(out, " {attr}=\"{}\"", quick_xml::escape::escape(&text));
            }
            let children: Vec<&&String> = keys.iter().filter(|k| !k.starts_with('-')).collect();
            if children.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for key in children {
                let child = &map[key.as_str()];
                if key.as_str() == "#text" {
                    out.push_str(&quick_xml::escape::escape(scalar_text(child)));
                } else {
                    write_element(out, key, child);
                }
            }
            let _ = write!(out, "</{name}>");
        }
        Value::Null => {
            let _ = write!(out, "<{name}/>");
        }
        scalar => {
            let _ = write!(
                out,
                "<{name}>{}</{name}>",
                quick_xml::escape::escape(scalar_text(scalar))
            );
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Writes a value as YAML (block style, sorted keys, two-space indent).
pub(crate) fn json_to_yaml(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    match value {
        Value::Object(map) if map.is_empty() => out.push_str("{}\n"),
        Value::Array(items) if items.is_empty() => out.push_str("[]\n"),
        Value::Object(_) | Value::Array(_) => write_yaml(&mut out, value, 0),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_yaml(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                let child = &map[key.as_str()];
                let _ = write!(out, "{pad}{}:", yaml_string(key));
                write_yaml_child(out, child, indent, false);
            }
        }
        Value::Array(items) => {
            for item in items {
                let _ = write!(out, "{pad}-");
                write_yaml_child(out, item, indent, true);
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", yaml_scalar(scalar));
        }
    }
}

/// A value after `key:` or `-`.
fn write_yaml_child(out: &mut String, value: &Value, indent: usize, in_list: bool) {
    match value {
        Value::Object(map) if map.is_empty() => out.push_str(" {}\n"),
        Value::Array(items) if items.is_empty() => out.push_str(" []\n"),
        Value::Object(_) => {
            out.push('\n');
            write_yaml(out, value, indent + 2);
        }
        // As Go's yaml writes them: a list under a key is not indented.
        Value::Array(_) => {
            out.push('\n');
            write_yaml(out, value, if in_list { indent + 2 } else { indent });
        }
        scalar => {
            let _ = writeln!(out, " {}", yaml_scalar(scalar));
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => yaml_string(s),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// A string plain when YAML reads it back as the same string, otherwise
/// double-quoted (JSON escapes are valid YAML).
fn yaml_string(s: &str) -> String {
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "" | "~"
            | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".inf"
            | "-.inf"
            | ".nan"
    );
    let numeric = s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o");
    let first = s.chars().next().unwrap_or(' ');
    let bad_start = matches!(
        first,
        ' ' | '!'
            | '&'
            | '*'
            | '{'
            | '}'
            | '['
            | ']'
            | ','
            | '#'
            | '|'
            | '>'
            | '@'
            | '`'
            | '"'
            | '\''
            | '%'
            | '?'
            | ':'
    ) || (first == '-' && (s.len() == 1 || s[1..].starts_with(' ')));
    let bad_inside = s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.ends_with(' ')
        || s.chars().any(|c| c.is_control());
    if reserved || numeric || bad_start || bad_inside {
        Value::String(s.to_owned()).to_string()
    } else {
        s.to_owned()
    }
}

/// What a `negotiate` endpoint answers, chosen as KrakenD does from the
/// client's `Accept` (offers in order: JSON, plain text as YAML, XML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Negotiated {
    Json,
    Yaml,
    Xml,
}

/// Picks the format for an `Accept` header: the first listed type (in the
/// header's order) that matches an offer; JSON when nothing matches.
pub(crate) fn negotiate(accept: Option<&str>) -> Negotiated {
    const OFFERS: [(&str, Negotiated); 3] = [
        ("application/json", Negotiated::Json),
        ("text/plain", Negotiated::Yaml),
        ("application/xml", Negotiated::Xml),
    ];
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Negotiated::Json;
    };
    for wanted in accept.split(',') {
        let wanted = wanted.split(';').next().unwrap_or_default().trim();
        for (offer, format) in OFFERS {
            if wanted == "*/*" || wanted.eq_ignore_ascii_case(offer) {
                return format;
            }
            if let Some(prefix) = wanted.strip_suffix("/*")
                && offer.split('/').next() == Some(prefix)
            {
                return format;
            }
        }
        // Other XML and YAML names.
        match wanted {
            "text/xml" => return Negotiated::Xml,
            "application/yaml" | "application/x-yaml" | "text/yaml" => return Negotiated::Yaml,
            _ => {}
        }
    }
    Negotiated::Json
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: &str = r#"<?xml version="1.0"?>
<user type="admin">
  <name>Elliot</name>
  <social>
    <facebook>https://facebook.com</facebook>
    <twitter>https://twitter.com</twitter>
    <youtube>https://youtube.com</youtube>
  </social>
</user>"#;

    #[test]
    fn xml_reads_as_krakend_does() {
        let value = xml_to_json(USER.as_bytes()).unwrap();
        assert_eq!(
            value,
            json!({"user": {"-type": "admin", "name": "Elliot", "social": {
                "facebook": "https://facebook.com", "twitter": "https://twitter.com",
                "youtube": "https://youtube.com"}}})
        );
        let value = xml_to_json(b"<a><b>1</b><b>2</b><c x=\"y\">t &amp; u</c><d/></a>").unwrap();
        assert_eq!(
            value,
            json!({"a": {"b": ["1", "2"], "c": {"-x": "y", "#text": "t & u"}, "d": ""}})
        );
        assert!(xml_to_json(b"<a><b></a>").is_err());
        assert!(xml_to_json(b"").is_err());
        assert!(xml_to_json(b"not xml").is_err());
    }

    #[test]
    fn xml_round_trips_krakend_fixture() {
        let value = xml_to_json(USER.as_bytes()).unwrap();
        assert_eq!(
            json_to_xml(&value),
            "<user type=\"admin\"><name>Elliot</name><social><facebook>https://facebook.com</facebook>\
             <twitter>https://twitter.com</twitter><youtube>https://youtube.com</youtube></social></user>"
        );
        let value =
            json!({"path": "/p", "foo": 42, "query": {}, "headers": {"B": ["x"], "A": ["<y>"]}});
        assert_eq!(
            json_to_xml(&value),
            "<doc><foo>42</foo><headers><A>&lt;y&gt;</A><B>x</B></headers><path>/p</path><query/></doc>"
        );
        assert_eq!(json_to_xml(&json!([1, 2])), "<doc>1</doc><doc>2</doc>");
    }

    #[test]
    fn yaml_like_go() {
        let value = xml_to_json(USER.as_bytes()).unwrap();
        assert_eq!(
            json_to_yaml(&value),
            "user:\n  -type: admin\n  name: Elliot\n  social:\n    facebook: https://facebook.com\n    \
             twitter: https://twitter.com\n    youtube: https://youtube.com\n"
        );
        assert_eq!(
            json_to_yaml(&json!({"l": [1, {"a": "true"}], "e": {}, "s": "a: b", "n": null})),
            "e: {}\nl:\n- 1\n-\n  a: \"true\"\n\"n\": null\ns: \"a: b\"\n"
        );
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None), Negotiated::Json);
        assert_eq!(
            negotiate(Some("application/json; charset=utf-8")),
            Negotiated::Json
        );
        assert_eq!(negotiate(Some("text/plain")), Negotiated::Yaml);
        assert_eq!(negotiate(Some("application/xml")), Negotiated::Xml);
        assert_eq!(negotiate(Some("text/xml, */*")), Negotiated::Xml);
        assert_eq!(negotiate(Some("image/png")), Negotiated::Json);
        assert_eq!(negotiate(Some("*/*")), Negotiated::Json);
    }

    #[test]
    fn safejson_wraps() {
        assert_eq!(safejson(b"[1]").unwrap(), json!({"collection": [1]}));
        assert_eq!(safejson(b"\"x\"").unwrap(), json!({"content": "x"}));
        assert_eq!(safejson(b"{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(safejson(b"").unwrap(), json!({}));
        assert!(safejson(b"{").is_err());
    }

    #[test]
    fn rss_feeds() {
        let feed = br#"<rss version="2.0"><channel><title>T</title><item><title>a</title></item><item><title>b</title></item></channel></rss>"#;
        assert_eq!(
            rss_to_json(feed).unwrap(),
            json!({"title": "T", "items": [{"title": "a"}, {"title": "b"}]})
        );
        assert!(rss_to_json(b"<x/>").is_err());
    }
}
