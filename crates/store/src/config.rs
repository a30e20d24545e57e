//! The root `redis` namespace (connection pools by name) and the registry of
//! stores built from it.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::{from_value, parse_duration};

use crate::redis_store::DEFAULT_TIMEOUT;
use crate::{RedisStore, SharedStore};

/// KrakenD's root `redis` object.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Single-server pools.
    #[serde(default)]
    pub connection_pools: Vec<RedisPoolConfig>,
    /// Redis Cluster deployments (refused: not supported yet).
    #[serde(default)]
    pub clusters: Vec<Value>,
}

/// One connection pool. KrakenD's pool-sizing and retry fields are
/// accepted; one multiplexed, self-reconnecting connection replaces the
/// pool.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct RedisPoolConfig {
    pub name: String,
    /// `host:port`.
    pub address: String,
    #[serde(default)]
    pub db: i64,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub pool_size: Option<u32>,
    #[serde(default)]
    pub min_idle_conns: Option<u32>,
    #[serde(default)]
    pub max_idle_conns: Option<u32>,
    #[serde(default)]
    pub max_active_conns: Option<u32>,
    #[serde(default)]
    pub conn_max_idle_time: Option<String>,
    #[serde(default)]
    pub conn_max_life_time: Option<String>,
    #[serde(default)]
    pub dial_timeout: Option<String>,
    #[serde(default)]
    pub pool_timeout: Option<String>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub min_retry_backoff: Option<String>,
    #[serde(default)]
    pub max_retry_backoff: Option<String>,
    #[serde(default)]
    pub tls: Option<Value>,
    #[serde(default)]
    pub opentelemetry: Option<Value>,
    /// Switchboard: the bound on one command (default `100ms`). A call that
    /// gets no answer in time counts as a Redis failure.
    #[serde(default)]
    pub timeout: Option<String>,
}

impl std::fmt::Debug for RedisPoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPoolConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("db", &self.db)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// The stores a config names, by connection name. Built once per gateway
/// and shared by every layer, so that two endpoints naming one pool count
/// in one place.
#[derive(Clone, Debug, Default)]
pub struct Stores {
    by_name: BTreeMap<String, SharedStore>,
    memory: Option<SharedStore>,
}

fn duration(field: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|m| ConfigError::new(field, m)),
    }
}

impl Stores {
    /// Builds the stores of a root `redis` object. Connections open lazily,
    /// on first use; must be called inside a Tokio runtime when the config
    /// names a pool.
    pub fn try_from_config(value: &Value) -> Result<Self, ConfigError> {
        let config: RedisConfig = from_value(value)?;
        Self::from_config(&config)
    }

    /// Builds the stores of a typed config.
    pub fn from_config(config: &RedisConfig) -> Result<Self, ConfigError> {
        if !config.clusters.is_empty() {
            return Err(ConfigError::new(
                "clusters",
                "Redis Cluster is not supported yet; use a connection pool",
            ));
        }
        let mut stores = Self::default();
        for (i, pool) in config.connection_pools.iter().enumerate() {
            let at = |field: &str| format!("connection_pools[{i}].{field}");
            if pool.name.is_empty() {
                return Err(ConfigError::new(at("name"), "empty name"));
            }
            if stores.by_name.contains_key(&pool.name) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("pool {:?} is declared twice", pool.name),
                ));
            }
            if pool.tls.is_some() {
                return Err(ConfigError::new(
                    at("tls"),
                    "TLS to Redis is not supported yet",
                ));
            }
            let timeout = duration(&at("timeout"), pool.timeout.as_deref(), DEFAULT_TIMEOUT)?;
            if timeout.is_zero() {
                return Err(ConfigError::new(at("timeout"), "must be more than zero"));
            }
            duration(&at("dial_timeout"), pool.dial_timeout.as_deref(), timeout)?;
            let (host, port) =
                split_address(&pool.address).map_err(|m| ConfigError::new(at("address"), m))?;
            let mut redis = RedisConnectionInfo::default().set_db(pool.db);
            if let Some(user) = &pool.user_name {
                redis = redis.set_username(user);
            }
            if let Some(password) = &pool.password {
                redis = redis.set_password(password);
            }
            let info = ConnectionAddr::Tcp(host, port)
                .into_connection_info()
                .map(|info| info.set_redis_settings(redis))
                .map_err(|e| ConfigError::new(at("address"), e.to_string()))?;
            let client = redis::Client::open(info)
                .map_err(|e| ConfigError::new(at("address"), e.to_string()))?;
            let store = RedisStore::with_client(client, timeout)
                .map_err(|e| ConfigError::new(at("address"), e.to_string()))?;
            stores
                .by_name
                .insert(pool.name.clone(), SharedStore::new(store));
        }
        Ok(stores)
    }

    /// The store of a connection name.
    pub fn get(&self, name: &str) -> Option<&SharedStore> {
        self.by_name.get(name)
    }

    /// The names of the pools.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The gateway's one in-memory store (shared by every layer of this
    /// registry that needs no Redis).
    pub fn memory(&mut self) -> SharedStore {
        self.memory.get_or_insert_with(SharedStore::memory).clone()
    }

    /// Makes `store` the in-memory store every layer built from this
    /// registry counts in: a gateway hands the same one to every config it
    /// builds, so that a reload keeps counters and buckets.
    pub fn set_memory(&mut self, store: SharedStore) {
        self.memory = Some(store);
    }

    /// Adds a store under a name (embedders, tests).
    pub fn insert(&mut self, name: impl Into<String>, store: SharedStore) {
        self.by_name.insert(name.into(), store);
    }
}

fn split_address(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{address:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{address:?} has no host"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn pools_by_name() {
        let stores = Stores::try_from_config(&json!({
            "connection_pools": [{"name": "shared", "address": "127.0.0.1:6390", "password": "pw", "pool_size": 10}]
        }))
        .unwrap();
        let store = stores.get("shared").unwrap();
        assert_eq!(store.describe(), "redis 127.0.0.1:6390");
        assert!(!format!("{stores:?}").contains("pw"));
    }

    #[tokio::test]
    async fn mistakes_name_their_field() {
        let err = Stores::try_from_config(
            &json!({"connection_pools": [{"name": "a", "address": "nohost"}]}),
        )
        .unwrap_err();
        assert_eq!(err.path, "connection_pools[0].address");
        let err = Stores::try_from_config(&json!({"connection_pools": [
            {"name": "a", "address": "h:1"}, {"name": "a", "address": "h:2"}]}))
        .unwrap_err();
        assert_eq!(err.path, "connection_pools[1].name");
        let err =
            Stores::try_from_config(&json!({"clusters": [{"name": "c", "addresses": ["h:1"]}]}))
                .unwrap_err();
        assert_eq!(err.path, "clusters");
        let err = Stores::try_from_config(
            &json!({"connection_pools": [{"name": "a", "address": "h:1", "timeout": "soon"}]}),
        )
        .unwrap_err();
        assert_eq!(err.path, "connection_pools[0].timeout");
    }
}
