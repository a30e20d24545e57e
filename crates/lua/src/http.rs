//! `http_response.new(url[, method, body[, headers]])`: a script calls
//! another service, as KrakenD's Lua scripts can. The call blocks the
//! script (it runs on a blocking thread) within the script's time.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mlua::{Lua, Table, UserData, UserDataMethods, Value as LuaValue};

use crate::value::{Item, ListRef};

/// The largest body a script's call reads.
const BODY_LIMIT: usize = 16 << 20;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> Result<&'static HttpsClient, String> {
    static CLIENT: OnceLock<Result<HttpsClient, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            Ok(Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Set while a state runs a request's script on a blocking thread: calls
/// are refused otherwise (while the sources load at start, say).
pub(crate) struct InRequest;

/// What a call answered.
#[derive(Clone, Debug)]
pub(crate) struct HttpAnswer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl UserData for HttpAnswer {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("statusCode", |_, this, ()| Ok(f64::from(this.status)));
        methods.add_method("headers", |_, this, name: String| {
            Ok(this
                .headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default())
        });
        methods.add_method("headerList", |_, this, name: String| {
            Ok(ListRef::from_items(
                this.headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| Item::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
            ))
        });
        methods.add_method("body", |_, this, ()| Ok(this.body.clone()));
        methods.add_method("close", |_, _, ()| Ok(()));
    }
}

fn text(value: &LuaValue) -> String {
    match value {
        LuaValue::String(s) => s.to_string_lossy(),
        other => other.to_string().unwrap_or_default(),
    }
}

/// Registers `http_response.new`; `time_left` is what remains of the
/// running script's time.
pub(crate) fn register(
    lua: &Lua,
    table: &Table,
    time_left: fn(&Lua) -> Duration,
    user_agent: &'static str,
) -> mlua::Result<()> {
    let new = lua.create_function(move |lua, args: mlua::Variadic<LuaValue>| {
        if !matches!(args.len(), 1 | 3 | 4) {
            return Err(mlua::Error::runtime(
                "http_response.new needs 1, 3 or 4 arguments",
            ));
        }
        let url = text(&args[0]);
        let method = match args.get(1) {
            Some(m) => Method::from_bytes(text(m).to_ascii_uppercase().as_bytes())
                .map_err(|_| mlua::Error::runtime("http_response.new: invalid method"))?,
            None => Method::GET,
        };
        let body = args.get(2).map(text).unwrap_or_default();
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = method;
        *request.uri_mut() = url
            .parse()
            .map_err(|_| mlua::Error::runtime(format!("http_response.new: invalid URL {url:?}")))?;
        if let Some(LuaValue::Table(headers)) = args.get(3) {
            for pair in headers.pairs::<LuaValue, LuaValue>() {
                let (name, value) = pair?;
                let name = HeaderName::from_bytes(text(&name).as_bytes())
                    .map_err(|_| mlua::Error::runtime("http_response.new: invalid header name"))?;
                let values = match value {
                    LuaValue::Table(list) => list
                        .sequence_values::<LuaValue>()
                        .map(|v| v.map(|v| text(&v)))
                        .collect::<mlua::Result<Vec<_>>>()?,
                    other => vec![text(&other)],
                };
                for value in values {
                    let value = HeaderValue::from_str(&value).map_err(|_| {
                        mlua::Error::runtime("http_response.new: invalid header value")
                    })?;
                    request.headers_mut().append(name.clone(), value);
                }
            }
        }
        request.headers_mut().insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(user_agent),
        );
        if lua.app_data_ref::<InRequest>().is_none() {
            return Err(mlua::Error::runtime(
                "http_response.new can only run in pre and post",
            ));
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| mlua::Error::runtime("http_response.new needs the gateway's runtime"))?;
        let client = client().map_err(mlua::Error::runtime)?;
        let timeout = time_left(lua);
        let answer = handle.block_on(async move {
            let call = async {
                let response = client.request(request).await.map_err(|e| e.to_string())?;
                let (parts, body) = response.into_parts();
                let bytes = Limited::new(body, BODY_LIMIT)
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, String>(HttpAnswer {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                })
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(answer) => answer,
                Err(_) => Err("the call ran out of the script's time".to_owned()),
            }
        });
        answer.map_err(|e| mlua::Error::runtime(format!("http_response.new: {e}")))
    })?;
    table.set("new", new)
}
