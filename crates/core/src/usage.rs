//! Token usage of an LLM call, reported by the layer that speaks to the
//! vendor and read by the layers around it (quotas, metrics, usage logs).
//!
//! A streamed answer only knows its usage when the stream ends, or when the
//! client goes away, so usage travels as a shared [`UsageReport`] placed in
//! the request extensions on the way in: the LLM layer records into it as
//! events arrive and finishes it exactly once; outer layers register a
//! callback with [`UsageReport::on_finish`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Tokens used by one call, with the provider and model that served it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Completion tokens, reasoning ones included.
    pub output_tokens: u64,
    /// Prompt tokens served from the vendor's cache.
    pub cached_tokens: u64,
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: u64,
    /// The inventory name (or vendor) of the provider that answered.
    pub provider: Option<Arc<str>>,
    /// The model that answered, as the vendor names it.
    pub model: Option<Arc<str>>,
    /// What the call cost, in millionths of the currency of the price table
    /// set on the report ([`UsageReport::set_prices`]); `None` without a
    /// table or a price for the model.
    pub cost_micros: Option<u64>,
    /// The caller's tier, when a layer resolved one (kept by
    /// [`UsageReport::record`] when the new usage names none).
    pub tier: Option<Arc<str>>,
}

impl Usage {
    /// Usage with input and output token counts.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            ..Self::default()
        }
    }

    /// Sets the provider and model.
    pub fn with_source(
        mut self,
        provider: impl Into<Arc<str>>,
        model: impl Into<Arc<str>>,
    ) -> Self {
        self.provider = Some(provider.into());
        self.model = Some(model.into());
        self
    }

    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The price of one model, per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Price {
    /// Per million prompt tokens not served from the cache.
    #[serde(default)]
    pub input: f64,
    /// Per million completion tokens.
    #[serde(default)]
    pub output: f64,
    /// Per million cached prompt tokens (the input price when unset).
    #[serde(default)]
    pub cached: Option<f64>,
}

impl Price {
    /// A price per million input and output tokens.
    pub fn new(input: f64, output: f64) -> Self {
        Self {
            input,
            output,
            cached: None,
        }
    }

    /// What `usage` costs at this price, in millionths of the currency
    /// (rounded up: a budget never loses a fraction).
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        // Prices are per million tokens, so tokens × price is in millionths.
        let micros = fresh as f64 * self.input
            + cached as f64 * self.cached.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output;
        micros.max(0.0).ceil() as u64
    }
}

/// A price table: by `provider/model`, then by `model`, then `*`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct Prices {
    by_name: std::collections::BTreeMap<String, Price>,
}

impl Prices {
    /// Adds a price under `provider/model`, `model` or `*`.
    pub fn insert(&mut self, name: impl Into<String>, price: Price) {
        self.by_name.insert(name.into(), price);
    }

    /// The price that applies to a provider and model.
    pub fn lookup(&self, provider: Option<&str>, model: Option<&str>) -> Option<&Price> {
        let qualified = provider
            .zip(model)
            .and_then(|(p, m)| self.by_name.get(&format!("{p}/{m}")));
        qualified
            .or_else(|| model.and_then(|m| self.by_name.get(m)))
            .or_else(|| self.by_name.get("*"))
    }

    /// The highest price per token in the table: an upper bound on a call
    /// whose model is not known yet.
    pub fn highest(&self) -> Option<Price> {
        self.by_name.values().copied().reduce(|a, b| Price {
            input: a.input.max(b.input),
            output: a.output.max(b.output),
            cached: None,
        })
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// How the answer whose usage was reported ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The answer was delivered whole.
    Complete,
    /// The client went away before the end; usage covers what was streamed.
    Cancelled,
    /// The call failed; usage covers what the vendor reported, if anything.
    Failed,
}

type Watcher = Box<dyn FnOnce(&Usage, Outcome) + Send>;

#[derive(Default)]
struct State {
    usage: Usage,
    recorded: bool,
    finished: Option<Outcome>,
    watchers: Vec<Watcher>,
    prices: Option<Arc<Prices>>,
}

impl State {
    /// Prices the usage, when a table applies, before watchers see it.
    fn price(&mut self) {
        if let Some(prices) = &self.prices
            && let Some(price) =
                prices.lookup(self.usage.provider.as_deref(), self.usage.model.as_deref())
        {
            self.usage.cost_micros = Some(price.cost_micros(&self.usage));
        }
    }
}

/// A shared slot for the usage of the call that serves this request.
///
/// Clones share the slot. The first [`finish`](Self::finish) (or the drop of
/// the last clone, as [`Outcome::Cancelled`]) runs every watcher once.
#[derive(Clone, Default)]
pub struct UsageReport {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.finished.is_none() {
            state.price();
            let usage = std::mem::take(&mut state.usage);
            for watcher in state.watchers.drain(..) {
                watcher(&usage, Outcome::Cancelled);
            }
        }
    }
}

impl fmt::Debug for UsageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("UsageReport")
            .field("usage", &state.usage)
            .field("finished", &state.finished)
            .finish_non_exhaustive()
    }
}

impl UsageReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// The report in `extensions`, inserting a new one if there is none.
    pub fn get_or_insert(extensions: &mut http::Extensions) -> Self {
        extensions.get_or_insert_with(Self::new).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the usage known so far (vendors report running totals).
    pub fn record(&self, mut usage: Usage) {
        let mut state = self.lock();
        if state.finished.is_none() {
            if usage.tier.is_none() {
                usage.tier = state.usage.tier.take();
            }
            state.usage = usage;
            state.recorded = true;
        }
    }

    /// Changes the usage known so far in place.
    pub fn update(&self, change: impl FnOnce(&mut Usage)) {
        let mut state = self.lock();
        if state.finished.is_none() {
            change(&mut state.usage);
            state.recorded = true;
        }
    }

    /// Notes the caller's tier without counting as recorded usage.
    pub fn set_tier(&self, tier: impl Into<Arc<str>>) {
        let mut state = self.lock();
        if state.finished.is_none() {
            state.usage.tier = Some(tier.into());
        }
    }

    /// The usage known so far, if any was recorded.
    pub fn usage(&self) -> Option<Usage> {
        let state = self.lock();
        state.recorded.then(|| state.usage.clone())
    }

    /// How the answer ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.lock().finished
    }

    /// Ends the report and runs every watcher; later calls do nothing.
    pub fn finish(&self, outcome: Outcome) {
        let (usage, watchers) = {
            let mut state = self.lock();
            if state.finished.is_some() {
                return;
            }
            state.finished = Some(outcome);
            state.price();
            (state.usage.clone(), std::mem::take(&mut state.watchers))
        };
        for watcher in watchers {
            watcher(&usage, outcome);
        }
    }

    /// Sets the price table the cost is computed with when the report
    /// finishes (the first table set wins).
    pub fn set_prices(&self, prices: Arc<Prices>) {
        let mut state = self.lock();
        if state.prices.is_none() {
            state.prices = Some(prices);
        }
    }

    /// Runs `watcher` when the report finishes (at once if it has).
    pub fn on_finish(&self, watcher: impl FnOnce(&Usage, Outcome) + Send + 'static) {
        let mut state = self.lock();
        match state.finished {
            Some(outcome) => {
                let usage = state.usage.clone();
                drop(state);
                watcher(&usage, outcome);
            }
            None => state.watchers.push(Box::new(watcher)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn watchers_run_once_with_the_last_usage() {
        let report = UsageReport::new();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        report.on_finish(move |usage, outcome| {
            assert_eq!(outcome, Outcome::Complete);
            counter.fetch_add(usage.total_tokens(), Ordering::SeqCst);
        });
        report.set_tier("gold");
        report.record(Usage::new(3, 4));
        assert_eq!(report.usage().and_then(|u| u.tier).as_deref(), Some("gold"));
        report.update(|u| u.output_tokens += 1);
        report.finish(Outcome::Complete);
        report.finish(Outcome::Failed);
        report.record(Usage::new(100, 100));
        assert_eq!(seen.load(Ordering::SeqCst), 8);
        assert_eq!(report.usage().map(|u| u.total_tokens()), Some(8));
    }

    #[test]
    fn dropping_every_clone_unfinished_reports_cancelled() {
        let seen = Arc::new(Mutex::new(None));
        let slot = seen.clone();
        {
            let report = UsageReport::new();
            let writer = report.clone();
            report.on_finish(move |usage, outcome| {
                *slot.lock().unwrap() = Some((usage.output_tokens, outcome));
            });
            writer.record(Usage::new(1, 7));
        }
        assert_eq!(*seen.lock().unwrap(), Some((7, Outcome::Cancelled)));
    }

    #[test]
    fn late_watchers_run_at_once() {
        let report = UsageReport::new();
        report.record(Usage::new(2, 2));
        report.finish(Outcome::Failed);
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        report.on_finish(move |usage, _| {
            counter.store(usage.input_tokens, Ordering::SeqCst);
        });
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert!(report.usage().is_some());
    }

    #[test]
    fn finished_usage_is_priced() {
        let report = UsageReport::new();
        let mut prices = Prices::default();
        prices.insert("openai/gpt-x", Price::new(2.0, 8.0));
        prices.insert("*", Price::new(1.0, 1.0));
        report.set_prices(Arc::new(prices));
        let seen = Arc::new(Mutex::new(None));
        let slot = seen.clone();
        report.on_finish(move |usage, _| *slot.lock().unwrap() = usage.cost_micros);
        let mut usage = Usage::new(1_000_000, 500_000).with_source("openai", "gpt-x");
        usage.cached_tokens = 500_000;
        report.record(usage);
        report.finish(Outcome::Complete);
        // 0.5M fresh at 2 + 0.5M cached at 2 + 0.5M out at 8.
        assert_eq!(*seen.lock().unwrap(), Some(6_000_000));
    }

    #[test]
    fn get_or_insert_shares_one_report() {
        let mut extensions = http::Extensions::new();
        let a = UsageReport::get_or_insert(&mut extensions);
        let b = UsageReport::get_or_insert(&mut extensions);
        a.record(Usage::new(5, 0));
        assert_eq!(b.usage().map(|u| u.input_tokens), Some(5));
    }
}
