//! Cost control and governance namespaces: the state they share across
//! endpoints (Redis pools, quota processors, prompt-guard registry,
//! service-wide limits) is built once per gateway from the root, and each
//! endpoint or backend namespace builds its layer against it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value};
use switchboard_core::{ConfigError, SharedState};
use switchboard_quota::{EnforceQuotaLayer, Quotas};
use switchboard_rate_limit::{LimitRateLayer, Variant};
use switchboard_store::{SharedStore, Stores};
use switchboard_validation::PromptGuards;

/// Where the in-memory quota counters and rate-limit buckets are kept
/// across builds.
const MEMORY_STORE_SLOT: &str = "governance.memory-store";

/// The shared governance state of one gateway.
#[derive(Debug, Default)]
pub(crate) struct Governance {
    stores: Mutex<Stores>,
    quotas: Option<Result<Quotas, ()>>,
    guards: Option<Result<PromptGuards, ()>>,
    /// Root namespace → its error, reported once at the root.
    errors: BTreeMap<&'static str, ConfigError>,
    /// Service-wide layers every endpoint gets.
    service_rate_limit: Option<LimitRateLayer>,
    service_rate_limit_redis: Option<LimitRateLayer>,
    service_tiered: Option<LimitRateLayer>,
    service_quota: Option<EnforceQuotaLayer>,
    scopes: AtomicUsize,
}

impl Governance {
    /// Builds what the root declares. Errors are kept per namespace and
    /// reported by [`root_error`](Self::root_error). In-memory counters and
    /// buckets live in `state`, so that they outlive a reload.
    pub(crate) fn from_root(root: &Map<String, Value>, state: &SharedState) -> Self {
        let mut governance = Self::default();
        let mut stores = match root.get("redis").map(Stores::try_from_config) {
            None => Stores::default(),
            Some(Ok(stores)) => stores,
            Some(Err(err)) => {
                governance.errors.insert("redis", err);
                Stores::default()
            }
        };
        let memory = state.get_or_init(MEMORY_STORE_SLOT, SharedStore::memory);
        stores.set_memory(SharedStore::clone(&memory));
        if let Some(value) = root.get("governance/processors") {
            governance.quotas = Some(Quotas::try_from_config(value, &mut stores).map_err(|err| {
                governance.errors.insert("governance/processors", err);
            }));
        }
        if let Some(value) = root.get("ai/prompt-guard") {
            governance.guards = Some(PromptGuards::try_from_config(value).map_err(|err| {
                governance.errors.insert("ai/prompt-guard", err);
            }));
        }
        for (name, variant) in [
            ("qos/ratelimit/service", Variant::Memory),
            ("qos/ratelimit/service/redis", Variant::Redis),
        ] {
            if let Some(value) = root.get(name) {
                match LimitRateLayer::try_from_config(value, variant, name, &mut stores) {
                    Ok(layer) if variant == Variant::Memory => {
                        governance.service_rate_limit = Some(layer)
                    }
                    Ok(layer) => governance.service_rate_limit_redis = Some(layer),
                    Err(err) => {
                        governance.errors.insert(name, err);
                    }
                }
            }
        }
        if let Some(value) = root.get("qos/ratelimit/tiered") {
            match LimitRateLayer::try_from_tiered_config(value, "service-tiers", &mut stores) {
                Ok(layer) => governance.service_tiered = Some(layer),
                Err(err) => {
                    governance.errors.insert("qos/ratelimit/tiered", err);
                }
            }
        }
        governance.stores = Mutex::new(stores);
        if let Some(value) = root.get("governance/quota") {
            match governance.quota_layer(value) {
                Ok(layer) => governance.service_quota = Some(layer),
                Err(err) => {
                    governance.errors.insert("governance/quota", err);
                }
            }
        }
        governance
    }

    /// The error of a root namespace, if building it failed.
    pub(crate) fn root_error(&self, name: &str) -> Option<ConfigError> {
        self.errors.get(name).cloned()
    }

    fn stores(&self) -> std::sync::MutexGuard<'_, Stores> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A bucket scope unique per attachment and stable for one config, so
    /// that instances sharing Redis share their buckets.
    fn scope(&self, kind: &str) -> String {
        format!("{kind}{}", self.scopes.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn quota_layer(&self, value: &Value) -> Result<EnforceQuotaLayer, ConfigError> {
        match &self.quotas {
            Some(Ok(quotas)) => quotas.layer(value),
            Some(Err(())) => Err(ConfigError::new(
                "",
                "the root governance/processors config is invalid",
            )),
            None => Err(ConfigError::new(
                "",
                "needs the quotas in the root extra_config[\"governance/processors\"]",
            )),
        }
    }

    pub(crate) fn guard_layer(
        &self,
        value: &Value,
    ) -> Result<switchboard_validation::GuardPromptLayer, ConfigError> {
        match &self.guards {
            Some(Ok(guards)) => guards.layer(value),
            Some(Err(())) => Err(ConfigError::new(
                "",
                "the root ai/prompt-guard config is invalid",
            )),
            // Without service guards an endpoint may still name none.
            None => PromptGuards::default().layer(value),
        }
    }

    pub(crate) fn rate_limit(
        &self,
        value: &Value,
        variant: Variant,
    ) -> Result<LimitRateLayer, ConfigError> {
        let scope = self.scope("endpoint");
        LimitRateLayer::try_from_config(value, variant, &scope, &mut self.stores())
    }

    pub(crate) fn tiered(&self, value: &Value) -> Result<LimitRateLayer, ConfigError> {
        let scope = self.scope("tiers");
        LimitRateLayer::try_from_tiered_config(value, &scope, &mut self.stores())
    }

    pub(crate) fn proxy_rate_limit(&self, value: &Value) -> Result<LimitRateLayer, ConfigError> {
        let scope = self.scope("backend");
        LimitRateLayer::try_from_proxy_config(value, &scope, &mut self.stores())
    }

    /// Gives an endpoint the service-wide limits and quota.
    pub(crate) fn fill_service_layers(&self, set: &mut crate::namespaces::EndpointLayers) {
        set.service_rate_limit = self.service_rate_limit.clone();
        set.service_rate_limit_redis = self.service_rate_limit_redis.clone();
        set.service_tiered = self.service_tiered.clone();
        set.service_quota = self.service_quota.clone();
    }
}
