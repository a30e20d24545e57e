//! The Lua side: a pool of prepared states (the sources run, `pre` and
//! `post` compiled), the objects KrakenD gives scripts, and how a script's
//! failure becomes an answer.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mlua::{
    Function, HookTriggers, Lua, LuaOptions, StdLib, Table, UserData, UserDataMethods,
    Value as LuaValue, VmState,
};
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::{join_path, key_segment};

use crate::config::{LuaConfig, Scope, Source, locate};
use crate::value::{Item, ListRef, LuaNil, TableRef};

/// How long one script may run before it is stopped.
pub(crate) const SCRIPT_TIME: Duration = Duration::from_secs(1);
/// How much memory one state may hold.
const MEMORY_LIMIT: usize = 64 << 20;
/// States kept ready per script.
const POOL_SIZE: usize = 8;

/// A script's compiled config, shared by every service of a layer.
pub(crate) struct Script {
    pub(crate) scope: Scope,
    pub(crate) config: LuaConfig,
    sources: Vec<Source>,
    pool: Mutex<Vec<Prepared>>,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("scope", &self.scope)
            .field(
                "sources",
                &self.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("live", &self.config.live)
            .field("allow_open_libs", &self.config.allow_open_libs)
            .finish_non_exhaustive()
    }
}

/// A state ready to run: the sources loaded (unless `live`), the code
/// compiled.
pub(crate) struct Prepared {
    lua: Lua,
    pre: Option<Function>,
    post: Option<Function>,
}

/// The deadline of the script running in a state.
struct Deadline(Instant);

/// What remains of the running script's time.
fn time_left(lua: &Lua) -> Duration {
    lua.app_data_ref::<Deadline>().map_or(SCRIPT_TIME, |d| {
        d.0.saturating_duration_since(Instant::now())
    })
}

/// The `User-Agent` of a script's calls.
const USER_AGENT: &str = concat!("Switchboard/", env!("CARGO_PKG_VERSION"));

/// What `custom_error(msg[, status[, content_type]])` raised.
#[derive(Clone, Debug)]
pub(crate) struct CustomError {
    pub(crate) message: String,
    /// `None`: no status given (KrakenD answers 500).
    pub(crate) status: Option<i64>,
    pub(crate) content_type: Option<String>,
}

impl fmt::Display for CustomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CustomError {}

/// Why a script did not finish.
#[derive(Debug)]
pub(crate) enum Failure {
    /// `custom_error(...)`.
    Custom(CustomError),
    /// Any other error: the message, without the traceback.
    Script(String),
}

impl Failure {
    fn of(error: &mlua::Error) -> Self {
        if let Some(custom) = error.downcast_ref::<CustomError>() {
            return Failure::Custom(custom.clone());
        }
        Failure::Script(message(error))
    }
}

/// The innermost message of an error.
fn message(error: &mlua::Error) -> String {
    let mut error = error;
    loop {
        match error {
            mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
                error = cause;
            }
            mlua::Error::RuntimeError(m) => return m.clone(),
            mlua::Error::SyntaxError { message, .. } => return message.clone(),
            other => return other.to_string(),
        }
    }
}

impl Script {
    pub(crate) fn new(
        config: LuaConfig,
        scope: Scope,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        config.check(scope)?;
        let mut sources = Vec::with_capacity(config.sources.len());
        for (i, name) in config.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            let Some(path) = locate(name, base_dir) else {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "cannot read the Lua source {name:?} (looked in the working directory and in {})",
                        base_dir.display()
                    ),
                ));
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(at.clone(), format!("cannot read {}: {e}", path.display()))
            })?;
            // Checked at load even when `live`.
            check_syntax(&text, name).map_err(|m| ConfigError::new(at, m))?;
            if let Some(want) = config.md5.get(name) {
                use md5::Digest as _;
                let have: String = md5::Md5::digest(text.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if !have.eq_ignore_ascii_case(want.trim()) {
                    return Err(ConfigError::new(
                        join_path("md5", &key_segment(name)),
                        format!("the checksum of {name:?} is {have}, not {want}"),
                    ));
                }
            }
            sources.push(Source {
                name: name.clone(),
                path,
                text: (!config.live).then_some(text),
            });
        }
        if let Some(name) = config.md5.keys().find(|k| !config.sources.contains(k)) {
            return Err(ConfigError::new(
                join_path("md5", &key_segment(name)),
                format!("{name:?} is not one of the sources"),
            ));
        }
        for (field, code) in [("pre", &config.pre), ("post", &config.post)] {
            if let Some(code) = code {
                check_syntax(code, field).map_err(|m| ConfigError::new(field, m))?;
            }
        }
        let script = Self {
            scope,
            config,
            sources,
            pool: Mutex::new(Vec::new()),
        };
        // One state now: a source that fails when it runs fails the load.
        let first = script.prepare().map_err(|e| {
            ConfigError::new("sources", format!("the sources fail: {}", message(&e)))
        })?;
        script.put(first);
        Ok(script)
    }

    pub(crate) fn has_pre(&self) -> bool {
        self.config.pre.is_some()
    }

    pub(crate) fn has_post(&self) -> bool {
        self.config.post.is_some()
    }

    fn take(&self) -> mlua::Result<Prepared> {
        let ready = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match ready {
            Some(state) => Ok(state),
            None => self.prepare(),
        }
    }

    fn put(&self, state: Prepared) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_SIZE {
            pool.push(state);
        }
    }

    /// A new state with the libraries, the API and the sources.
    fn prepare(&self) -> mlua::Result<Prepared> {
        let libs = if self.config.allow_open_libs {
            StdLib::ALL_SAFE
        } else {
            StdLib::STRING | StdLib::TABLE | StdLib::MATH
        };
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        lua.set_memory_limit(MEMORY_LIMIT)?;
        let globals = lua.globals();
        if !self.config.allow_open_libs {
            // The base library's file access.
            globals.set("dofile", LuaValue::Nil)?;
            globals.set("loadfile", LuaValue::Nil)?;
        }
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(10_000),
            |lua, _| {
                if lua
                    .app_data_ref::<Deadline>()
                    .is_some_and(|d| Instant::now() > d.0)
                {
                    return Err(mlua::Error::runtime(format!(
                        "the script ran longer than {} ms",
                        SCRIPT_TIME.as_millis()
                    )));
                }
                Ok(VmState::Continue)
            },
        )?;
        register_api(&lua)?;
        if !self.config.live {
            lua.set_app_data(Deadline(Instant::now() + SCRIPT_TIME));
            for source in &self.sources {
                if let Some(text) = &source.text {
                    lua.load(text.as_str())
                        .set_name(format!("@{}", source.name))
                        .exec()?;
                }
            }
        }
        let compile = |name: &str, code: &Option<String>| -> mlua::Result<Option<Function>> {
            code.as_deref()
                .map(|code| lua.load(code).set_name(format!("={name}")).into_function())
                .transpose()
        };
        let pre = compile("pre", &self.config.pre)?;
        let post = compile("post", &self.config.post)?;
        drop(globals);
        Ok(Prepared { lua, pre, post })
    }

    /// Runs `pre` (or `post`) on a state from the pool, with `objects`
    /// installed. Blocking: call it off the async workers.
    pub(crate) fn run(&self, post: bool, objects: &Objects) -> Result<(), Failure> {
        let state = self.take().map_err(|e| Failure::of(&e))?;
        let result = self.run_on(&state, post, objects);
        // A state whose script failed may hold anything half-done: a fresh
        // one replaces it. `custom_error` is an answer, not a failure.
        if matches!(result, Ok(()) | Err(Failure::Custom(_))) {
            self.put(state);
        }
        result
    }

    fn run_on(&self, state: &Prepared, post: bool, objects: &Objects) -> Result<(), Failure> {
        let lua = &state.lua;
        lua.set_app_data(Deadline(Instant::now() + SCRIPT_TIME));
        lua.set_app_data(crate::http::InRequest);
        let run = || -> mlua::Result<()> {
            if self.config.live {
                for source in &self.sources {
                    let text = std::fs::read_to_string(&source.path).map_err(|e| {
                        mlua::Error::runtime(format!(
                            "cannot read the Lua source {}: {e}",
                            source.name
                        ))
                    })?;
                    lua.load(text)
                        .set_name(format!("@{}", source.name))
                        .exec()?;
                }
            }
            objects.install(lua)?;
            let code = if post { &state.post } else { &state.pre };
            if let Some(code) = code {
                code.call::<()>(())?;
            }
            Ok(())
        };
        let result = run();
        // Nothing of this request stays reachable from the state.
        let _ = Objects::default().install(lua);
        lua.remove_app_data::<Deadline>();
        lua.remove_app_data::<crate::http::InRequest>();
        result.map_err(|e| Failure::of(&e))
    }
}

fn check_syntax(code: &str, name: &str) -> Result<(), String> {
    // A throwaway state: compiling runs nothing.
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::new()).map_err(|e| e.to_string())?;
    lua.load(code)
        .set_name(format!("={name}"))
        .into_function()
        .map(drop)
        .map_err(|e| format!("Lua syntax error: {}", message(&e)))
}

/// The globals every state has: `custom_error`, `luaTable`, `luaList`,
/// and the `request`, `response` and `ctx` tables whose `load()` the
/// request's objects fill.
fn register_api(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    globals.set(
        "custom_error",
        lua.create_function(|_, args: mlua::Variadic<LuaValue>| -> mlua::Result<()> {
            let Some(first) = args.first() else {
                return Err(mlua::Error::runtime("custom_error needs a message"));
            };
            let text = |v: &LuaValue| -> String {
                match v {
                    LuaValue::String(s) => s.to_string_lossy(),
                    other => other.to_string().unwrap_or_default(),
                }
            };
            #[allow(clippy::cast_possible_truncation)]
            let status = args.get(1).map(|v| match v {
                LuaValue::Integer(i) => *i,
                LuaValue::Number(n) => *n as i64,
                LuaValue::String(s) => s.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(500),
                _ => 500,
            });
            Err(mlua::Error::external(CustomError {
                message: text(first),
                status,
                content_type: args.get(2).map(text),
            }))
        })?,
    )?;
    let table = lua.create_table()?;
    table.set("new", lua.create_function(|_, ()| Ok(TableRef::default()))?)?;
    globals.set("luaTable", table)?;
    let list = lua.create_table()?;
    list.set("new", lua.create_function(|_, ()| Ok(ListRef::default()))?)?;
    globals.set("luaList", list)?;
    let null = lua.create_table()?;
    null.set("new", lua.create_function(|_, ()| Ok(LuaNil))?)?;
    globals.set("luaNil", null)?;
    let http = lua.create_table()?;
    crate::http::register(lua, &http, time_left, USER_AGENT)?;
    globals.set("http_response", http)?;
    for name in ["request", "response", "ctx"] {
        let holder: Table = lua.create_table()?;
        holder.set("load", LuaValue::Nil)?;
        globals.set(name, holder)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The request and response objects.
// ---------------------------------------------------------------------------

/// Headers as Go holds them: canonical names, several values each.
pub(crate) type Headers = BTreeMap<String, Vec<String>>;

/// A request as a script sees it (`request.load()` or `ctx.load()`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestData {
    pub(crate) method: String,
    /// `request:url()`: the backend's whole URL (lua-backend), empty in
    /// lua-proxy (KrakenD has none there yet), the client's URL in
    /// lua-endpoint.
    pub(crate) url: String,
    pub(crate) path: String,
    /// The query string, encoded.
    pub(crate) query: String,
    /// The route parameters, named as KrakenD names them (`Id`, `Resp0`).
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) headers: Headers,
    pub(crate) body: String,
    /// lua-endpoint's `ctx` (`query(name)` reads one parameter).
    pub(crate) ctx: bool,
    /// What the script changed.
    pub(crate) changed: Changed,
}

/// Which parts of a request or response a script set.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Changed {
    pub(crate) method: bool,
    pub(crate) url: bool,
    pub(crate) path: bool,
    pub(crate) query: bool,
    pub(crate) params: bool,
    pub(crate) headers: bool,
    pub(crate) body: bool,
    pub(crate) status: bool,
    pub(crate) complete: bool,
}

/// A response as a script sees it (`response.load()`).
#[derive(Debug, Default)]
pub(crate) struct ResponseData {
    pub(crate) status: u16,
    pub(crate) complete: bool,
    pub(crate) headers: Headers,
    /// The answer decoded, until `data()` makes a table of it.
    pub(crate) value: Option<Value>,
    /// The table `data()` returned (changes go through it).
    pub(crate) table: Option<TableRef>,
    pub(crate) body: String,
    pub(crate) changed: Changed,
}

/// A shared handle, so the objects can be read back after the script.
#[derive(Debug, Default)]
pub(crate) struct Shared<T>(pub(crate) Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Shared<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(Arc::new(Mutex::new(value)))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn take(self) -> T
    where
        T: Default,
    {
        self.with(std::mem::take)
    }
}

/// The objects of one run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Objects {
    pub(crate) request: Option<Shared<RequestData>>,
    pub(crate) response: Option<Shared<ResponseData>>,
    /// `ctx.load()` (lua-endpoint) rather than `request.load()`.
    pub(crate) as_ctx: bool,
}

impl Objects {
    fn install(&self, lua: &Lua) -> mlua::Result<()> {
        let globals = lua.globals();
        let set = |name: &str, load: LuaValue| -> mlua::Result<()> {
            let holder: Table = globals.get(name)?;
            holder.set("load", load)
        };
        let request = match &self.request {
            Some(request) => {
                let request = request.clone();
                LuaValue::Function(lua.create_function(move |_, ()| Ok(request.clone()))?)
            }
            None => LuaValue::Nil,
        };
        if self.as_ctx {
            set("ctx", request)?;
            set("request", LuaValue::Nil)?;
        } else {
            set("request", request)?;
            set("ctx", LuaValue::Nil)?;
        }
        let response = match &self.response {
            Some(response) => {
                let response = response.clone();
                LuaValue::Function(lua.create_function(move |_, ()| Ok(response.clone()))?)
            }
            None => LuaValue::Nil,
        };
        set("response", response)
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey`.
pub(crate) fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

fn string_arg(value: &LuaValue) -> String {
    match value {
        LuaValue::String(s) => s.to_string_lossy(),
        LuaValue::Nil => String::new(),
        other => other.to_string().unwrap_or_default(),
    }
}

fn headers_table(headers: &Headers) -> TableRef {
    let table = TableRef::default();
    for (name, values) in headers {
        table.insert(
            name.clone(),
            Item::List(ListRef::from_items(
                values.iter().cloned().map(Item::String).collect(),
            )),
        );
    }
    table
}

/// `headers(name, value)`: sets one value; nil deletes.
fn headers_set(headers: &mut Headers, changed: &mut bool, args: &[LuaValue]) {
    match args {
        [name, LuaValue::Nil, ..] => {
            headers.remove(&canonical(&string_arg(name)));
        }
        [name, value, ..] => {
            headers.insert(canonical(&string_arg(name)), vec![string_arg(value)]);
        }
        _ => return,
    }
    *changed = true;
}

fn header_get(headers: &Headers, name: &LuaValue) -> String {
    headers
        .get(&canonical(&string_arg(name)))
        .and_then(|v| v.first().cloned())
        .unwrap_or_default()
}

fn header_list(
    headers: &mut Headers,
    changed: &mut bool,
    args: &[LuaValue],
) -> mlua::Result<Option<ListRef>> {
    match args {
        [] => Err(mlua::Error::runtime("headerList needs a header name")),
        [name] => Ok(Some(ListRef::from_items(
            headers
                .get(&canonical(&string_arg(name)))
                .into_iter()
                .flatten()
                .cloned()
                .map(Item::String)
                .collect(),
        ))),
        [name, LuaValue::UserData(list), ..] => {
            let list = list
                .borrow::<ListRef>()
                .map_err(|_| mlua::Error::runtime("invalid header value, must be a luaList"))?;
            let values = list.strings();
            headers.insert(canonical(&string_arg(name)), values);
            *changed = true;
            Ok(None)
        }
        _ => Err(mlua::Error::runtime(
            "invalid header value, must be a luaList",
        )),
    }
}

impl UserData for Shared<RequestData> {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("method", |_, this, value: Option<LuaValue>| {
            Ok(this.with(|r| match value {
                None => Some(r.method.clone()),
                Some(v) => {
                    r.method = string_arg(&v).to_ascii_uppercase();
                    r.changed.method = true;
                    None
                }
            }))
        });
        methods.add_method("url", |_, this, value: Option<LuaValue>| {
            Ok(this.with(|r| match value {
                None => Some(r.url.clone()),
                Some(v) => {
                    r.url = string_arg(&v);
                    r.changed.url = true;
                    None
                }
            }))
        });
        methods.add_method("path", |_, this, value: Option<LuaValue>| {
            Ok(this.with(|r| match value {
                None => Some(r.path.clone()),
                Some(v) => {
                    r.path = string_arg(&v);
                    r.changed.path = true;
                    None
                }
            }))
        });
        // `request:query()` is the encoded query (lua-proxy, lua-backend);
        // `ctx:query(name[, value])` one parameter (lua-endpoint).
        methods.add_method("query", |_, this, args: mlua::Variadic<LuaValue>| {
            Ok(this.with(|r| match args.as_slice() {
                [] => Some(r.query.clone()),
                [name] if is_ctx(r) => {
                    let name = string_arg(name);
                    Some(
                        form_urlencoded::parse(r.query.as_bytes())
                            .find(|(k, _)| *k == name)
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default(),
                    )
                }
                [query] => {
                    r.query = string_arg(query);
                    r.changed.query = true;
                    None
                }
                [name, value, ..] => {
                    let name = string_arg(name);
                    let value = string_arg(value);
                    let mut pairs: Vec<(String, String)> =
                        form_urlencoded::parse(r.query.as_bytes())
                            .filter(|(k, _)| *k != name)
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect();
                    pairs.push((name, value));
                    pairs.sort();
                    r.query = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs)
                        .finish();
                    r.changed.query = true;
                    None
                }
            }))
        });
        methods.add_method("params", |lua, this, args: mlua::Variadic<LuaValue>| {
            this.with(|r| -> mlua::Result<LuaValue> {
                match args.as_slice() {
                    [] => Ok(LuaValue::UserData(lua.create_userdata(
                        TableRef::from_strings(
                            r.params.iter().map(|(k, v)| (k.clone(), v.as_str())),
                        ),
                    )?)),
                    [name] => Ok(LuaValue::String(
                        lua.create_string(
                            r.params
                                .get(&string_arg(name))
                                .map(String::as_str)
                                .unwrap_or_default(),
                        )?,
                    )),
                    [name, value, ..] => {
                        r.params.insert(string_arg(name), string_arg(value));
                        r.changed.params = true;
                        Ok(LuaValue::Nil)
                    }
                }
            })
        });
        methods.add_method("headers", |lua, this, args: mlua::Variadic<LuaValue>| {
            this.with(|r| headers_method(lua, &mut r.headers, &mut r.changed.headers, &args))
        });
        methods.add_method("headerList", |_, this, args: mlua::Variadic<LuaValue>| {
            this.with(|r| header_list(&mut r.headers, &mut r.changed.headers, &args))
        });
        methods.add_method("body", |_, this, value: Option<LuaValue>| {
            Ok(this.with(|r| match value {
                None => Some(r.body.clone()),
                Some(v) => {
                    r.body = string_arg(&v);
                    r.changed.body = true;
                    None
                }
            }))
        });
    }
}

/// `headers()` (all, as a table), `headers(name)` (the first value) and
/// `headers(name, value…)` (set), for requests and responses alike.
fn headers_method(
    lua: &Lua,
    headers: &mut Headers,
    changed: &mut bool,
    args: &[LuaValue],
) -> mlua::Result<LuaValue> {
    match args {
        [] => Ok(LuaValue::UserData(
            lua.create_userdata(headers_table(headers))?,
        )),
        [name] => Ok(LuaValue::String(
            lua.create_string(header_get(headers, name))?,
        )),
        rest => {
            headers_set(headers, changed, rest);
            Ok(LuaValue::Nil)
        }
    }
}

fn is_ctx(r: &RequestData) -> bool {
    r.ctx
}

impl UserData for Shared<ResponseData> {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("statusCode", |_, this, value: Option<f64>| {
            Ok(this.with(|r| match value {
                None => Some(f64::from(r.status)),
                Some(v) => {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let status = v.clamp(0.0, 999.0) as u16;
                    r.status = status;
                    r.changed.status = true;
                    None
                }
            }))
        });
        methods.add_method("isComplete", |_, this, value: Option<bool>| {
            Ok(this.with(|r| match value {
                None => Some(r.complete),
                Some(v) => {
                    r.complete = v;
                    r.changed.complete = true;
                    None
                }
            }))
        });
        methods.add_method("data", |_, this, ()| {
            Ok(this.with(|r| {
                if let Some(table) = &r.table {
                    return table.clone();
                }
                let table = match r.value.take() {
                    Some(Value::Object(map)) => TableRef::from_map(map),
                    Some(Value::Null) | None => TableRef::default(),
                    Some(other) => {
                        // KrakenD's collections: `{"collection": [...]}`.
                        let table = TableRef::default();
                        table.insert("collection".to_owned(), Item::from_json(other));
                        table
                    }
                };
                r.table = Some(table.clone());
                table
            }))
        });
        methods.add_method("headers", |lua, this, args: mlua::Variadic<LuaValue>| {
            this.with(|r| headers_method(lua, &mut r.headers, &mut r.changed.headers, &args))
        });
        methods.add_method("headerList", |_, this, args: mlua::Variadic<LuaValue>| {
            this.with(|r| header_list(&mut r.headers, &mut r.changed.headers, &args))
        });
        methods.add_method("body", |_, this, value: Option<LuaValue>| {
            Ok(this.with(|r| match value {
                None => Some(r.body.clone()),
                Some(v) => {
                    r.body = string_arg(&v);
                    r.changed.body = true;
                    None
                }
            }))
        });
    }
}
