//! The data scripts see: KrakenD's `luaTable` (a JSON object) and
//! `luaList` (a JSON array), shared by reference as in KrakenD, so that
//! `data:get("a"):set("b", 1)` changes the answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mlua::{AnyUserData, Lua, UserData, UserDataMethods, Value as LuaValue};
use serde_json::{Map, Number, Value};

/// How deep a value may nest when it is written back to JSON (a table set
/// into itself would never end).
const MAX_DEPTH: usize = 128;

/// One value of a script's data.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Table(TableRef),
    List(ListRef),
}

/// KrakenD's `luaNil`: a JSON `null` as a script sees it (`get` of a null
/// gives it, `luaNil.new()` makes one to `set`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LuaNil;

impl UserData for LuaNil {}

/// A `luaTable`: a JSON object, shared.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableRef(Arc<Mutex<BTreeMap<String, Item>>>);

/// A `luaList`: a JSON array, shared; indexes start at 0.
#[derive(Clone, Debug, Default)]
pub(crate) struct ListRef(Arc<Mutex<Vec<Item>>>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TableRef {
    pub(crate) fn from_map(map: Map<String, Value>) -> Self {
        Self(Arc::new(Mutex::new(
            map.into_iter()
                .map(|(k, v)| (k, Item::from_json(v)))
                .collect(),
        )))
    }

    pub(crate) fn from_strings<'a>(pairs: impl IntoIterator<Item = (String, &'a str)>) -> Self {
        Self(Arc::new(Mutex::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Item::String(v.to_owned())))
                .collect(),
        )))
    }

    pub(crate) fn insert(&self, key: String, item: Item) {
        lock(&self.0).insert(key, item);
    }

    /// The object as JSON, its keys sorted (as KrakenD writes a map).
    pub(crate) fn to_json(&self) -> Result<Value, String> {
        Item::Table(self.clone()).to_json(0)
    }
}

impl ListRef {
    pub(crate) fn from_items(items: Vec<Item>) -> Self {
        Self(Arc::new(Mutex::new(items)))
    }

    /// The items as strings (header values).
    pub(crate) fn strings(&self) -> Vec<String> {
        lock(&self.0)
            .iter()
            .map(|item| match item {
                Item::String(s) => s.clone(),
                Item::Number(n) => n.to_string(),
                Item::Bool(b) => b.to_string(),
                Item::Null => String::new(),
                other => other.to_json(0).map(|v| v.to_string()).unwrap_or_default(),
            })
            .collect()
    }
}

impl Item {
    pub(crate) fn from_json(value: Value) -> Self {
        match value {
            Value::Null => Item::Null,
            Value::Bool(b) => Item::Bool(b),
            Value::Number(n) => Item::Number(n),
            Value::String(s) => Item::String(s),
            Value::Array(items) => Item::List(ListRef::from_items(
                items.into_iter().map(Item::from_json).collect(),
            )),
            Value::Object(map) => Item::Table(TableRef::from_map(map)),
        }
    }

    fn to_json(&self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "the data nests deeper than {MAX_DEPTH} levels (a table inside itself?)"
            ));
        }
        Ok(match self {
            Item::Null => Value::Null,
            Item::Bool(b) => Value::Bool(*b),
            Item::Number(n) => Value::Number(n.clone()),
            Item::String(s) => Value::String(s.clone()),
            Item::Table(table) => {
                let entries: Vec<(String, Item)> = lock(&table.0)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k, v.to_json(depth + 1)?);
                }
                Value::Object(map)
            }
            Item::List(list) => {
                let items: Vec<Item> = lock(&list.0).clone();
                Value::Array(
                    items
                        .iter()
                        .map(|item| item.to_json(depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
        })
    }

    /// The value a script gets: tables and lists by reference.
    pub(crate) fn into_lua(self, lua: &Lua) -> mlua::Result<LuaValue> {
        Ok(match self {
            Item::Null => LuaValue::UserData(lua.create_userdata(LuaNil)?),
            Item::Bool(b) => LuaValue::Boolean(b),
            Item::Number(n) => LuaValue::Number(n.as_f64().unwrap_or_default()),
            Item::String(s) => LuaValue::String(lua.create_string(&s)?),
            Item::Table(table) => LuaValue::UserData(lua.create_userdata(table)?),
            Item::List(list) => LuaValue::UserData(lua.create_userdata(list)?),
        })
    }

    /// What a script's value becomes when it is set into data. A plain Lua
    /// table set directly is an object keyed by its keys as strings (KrakenD
    /// writes `{1: "a"}` as `{"1": "a"}`); a table nested in it is an array
    /// when every key is an integer.
    pub(crate) fn from_lua(value: &LuaValue, nested: bool, depth: usize) -> mlua::Result<Self> {
        if depth > MAX_DEPTH {
            return Err(mlua::Error::runtime(format!(
                "the value nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(match value {
            LuaValue::Nil => Item::Null,
            LuaValue::Boolean(b) => Item::Bool(*b),
            LuaValue::Integer(i) => Item::Number(Number::from(*i)),
            LuaValue::Number(n) => Item::Number(number(*n)),
            LuaValue::String(s) => Item::String(s.to_string_lossy()),
            LuaValue::Table(table) => {
                let mut map = BTreeMap::new();
                let mut int_keys = Vec::new();
                let mut all_int = true;
                for pair in table.pairs::<LuaValue, LuaValue>() {
                    let (k, v) = pair?;
                    let key = match &k {
                        LuaValue::String(s) => {
                            all_int = false;
                            s.to_string_lossy()
                        }
                        LuaValue::Integer(i) => {
                            int_keys.push(*i);
                            i.to_string()
                        }
                        LuaValue::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                            #[allow(clippy::cast_possible_truncation)]
                            let i = *n as i64;
                            int_keys.push(i);
                            i.to_string()
                        }
                        LuaValue::Number(n) => {
                            all_int = false;
                            n.to_string()
                        }
                        LuaValue::Boolean(b) => {
                            all_int = false;
                            b.to_string()
                        }
                        _ => continue,
                    };
                    map.insert(key, Item::from_lua(&v, true, depth + 1)?);
                }
                if nested && all_int {
                    int_keys.sort_unstable();
                    let items = int_keys
                        .iter()
                        .filter_map(|i| map.remove(&i.to_string()))
                        .collect();
                    Item::List(ListRef::from_items(items))
                } else {
                    Item::Table(TableRef(Arc::new(Mutex::new(map))))
                }
            }
            LuaValue::UserData(data) => from_userdata(data),
            _ => Item::Null,
        })
    }
}

fn from_userdata(data: &AnyUserData) -> Item {
    if let Ok(table) = data.borrow::<TableRef>() {
        return Item::Table(table.clone());
    }
    if let Ok(list) = data.borrow::<ListRef>() {
        return Item::List(list.clone());
    }
    // `luaNil`, or any other object: null.
    Item::Null
}

/// A Lua number as JSON: an integer when it is one (`10`, not `10.0`).
fn number(n: f64) -> Number {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        return Number::from(n as i64);
    }
    Number::from_f64(n).unwrap_or_else(|| Number::from(0))
}

/// A key or index argument as a string (`1` is `"1"`).
fn key_string(key: &LuaValue) -> Option<String> {
    match key {
        LuaValue::String(s) => Some(s.to_string_lossy()),
        LuaValue::Integer(i) => Some(i.to_string()),
        LuaValue::Number(n) => Some(match number(*n).as_i64() {
            Some(i) => i.to_string(),
            None => n.to_string(),
        }),
        LuaValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn index(key: &LuaValue) -> Option<i64> {
    match key {
        LuaValue::Integer(i) => Some(*i),
        #[allow(clippy::cast_possible_truncation)]
        LuaValue::Number(n) if n.is_finite() => Some(n.trunc() as i64),
        LuaValue::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

impl UserData for TableRef {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, this, key: LuaValue| {
            let Some(key) = key_string(&key) else {
                return Ok(LuaValue::Nil);
            };
            let item = lock(&this.0).get(&key).cloned();
            item.map_or(Ok(LuaValue::Nil), |item| item.into_lua(lua))
        });
        methods.add_method("set", |_, this, (key, value): (LuaValue, LuaValue)| {
            let Some(key) = key_string(&key) else {
                return Err(mlua::Error::runtime("luaTable:set needs a key"));
            };
            if value.is_nil() {
                // As KrakenD: nothing is set (`luaNil.new()` sets a null).
                return Ok(());
            }
            let item = Item::from_lua(&value, false, 0)?;
            lock(&this.0).insert(key, item);
            Ok(())
        });
        methods.add_method("del", |_, this, key: LuaValue| {
            if let Some(key) = key_string(&key) {
                lock(&this.0).remove(&key);
            }
            Ok(())
        });
        methods.add_method("len", |_, this, ()| Ok(lock(&this.0).len()));
        methods.add_method("keys", |_, this, ()| {
            let keys = lock(&this.0)
                .keys()
                .map(|k| Item::String(k.clone()))
                .collect();
            Ok(ListRef::from_items(keys))
        });
        methods.add_method("keyExists", |_, this, key: LuaValue| {
            Ok(key_string(&key).is_some_and(|k| lock(&this.0).contains_key(&k)))
        });
    }
}

impl UserData for ListRef {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, this, key: LuaValue| {
            let item = index(&key)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| lock(&this.0).get(i).cloned());
            item.map_or(Ok(LuaValue::Nil), |item| item.into_lua(lua))
        });
        methods.add_method("set", |_, this, (key, value): (LuaValue, LuaValue)| {
            let Some(i) = index(&key).and_then(|i| usize::try_from(i).ok()) else {
                return Ok(());
            };
            if i > 1 << 20 {
                return Err(mlua::Error::runtime("luaList:set: the index is too large"));
            }
            if value.is_nil() {
                return Ok(());
            }
            let item = Item::from_lua(&value, false, 0)?;
            let mut items = lock(&this.0);
            if i >= items.len() {
                items.resize(i + 1, Item::Null);
            }
            items[i] = item;
            Ok(())
        });
        methods.add_method("del", |_, this, key: LuaValue| {
            let mut items = lock(&this.0);
            if let Some(i) = index(&key).and_then(|i| usize::try_from(i).ok())
                && i < items.len()
            {
                items.remove(i);
            }
            Ok(())
        });
        methods.add_method("len", |_, this, ()| Ok(lock(&this.0).len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_round_trip() {
        assert_eq!(number(10.0).to_string(), "10");
        assert_eq!(number(1.5).to_string(), "1.5");
        let value = serde_json::json!({"b": [1, {"c": null}], "a": "x"});
        let table = match Item::from_json(value.clone()) {
            Item::Table(t) => t,
            _ => unreachable!(),
        };
        assert_eq!(table.to_json().ok(), Some(value));
    }

    #[test]
    fn a_table_inside_itself_is_an_error_not_a_crash() {
        let table = TableRef::default();
        table.insert("self".to_owned(), Item::Table(table.clone()));
        assert!(table.to_json().is_err());
        // Break the cycle so that the test does not leak.
        lock(&table.0).clear();
    }
}
