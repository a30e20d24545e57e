//! One attempt at a provider, as the layer that chooses providers (and
//! retries, and fails over) describes it to the layers and the HTTP client
//! below it.
//!
//! The LLM layer puts an [`UpstreamAttempt`] into the extensions of every
//! vendor request it sends; the client at the bottom of the pipeline reads
//! it to name the attempt's span after the provider, give it the GenAI
//! attributes, and count failures by provider. The attempt's own
//! [`UsageReport`] finishes when the attempt is over: with the answer's
//! usage when its answer is the one the client gets, as failed otherwise.

use std::sync::{Arc, Mutex, PoisonError};

use crate::usage::{Outcome, Usage, UsageReport};

/// Why an attempt is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptReason {
    /// The request's first call.
    First,
    /// The same provider again after it failed.
    Retry,
    /// Another provider after an earlier one failed or was skipped.
    Failover,
    /// One of several providers called at once (fan-out, hedging).
    FanOut,
}

impl AttemptReason {
    /// The span attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Retry => "retry",
            Self::Failover => "failover",
            Self::FanOut => "fan_out",
        }
    }
}

/// One call to one provider. Clones share the failure slot and the usage.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UpstreamAttempt {
    /// The provider's inventory name.
    pub provider: Arc<str>,
    /// The model asked of the vendor.
    pub model: Arc<str>,
    /// The GenAI operation (`chat`).
    pub operation: &'static str,
    /// 1 for the request's first attempt, then counting every attempt of
    /// the request, retries and failovers included.
    pub number: u32,
    /// Why this attempt is made.
    pub reason: AttemptReason,
    /// This attempt's usage, finished when the attempt is over.
    pub usage: UsageReport,
    failure: Arc<Mutex<Option<&'static str>>>,
}

impl UpstreamAttempt {
    /// An attempt of `operation` at `provider` asking for `model`.
    pub fn new(
        provider: impl Into<Arc<str>>,
        model: impl Into<Arc<str>>,
        operation: &'static str,
        number: u32,
        reason: AttemptReason,
    ) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            operation,
            number,
            reason,
            usage: UsageReport::new(),
            failure: Arc::default(),
        }
    }

    /// The attempt failed in a way the HTTP exchange does not show (a 200
    /// whose body is an error, a timeout, a stream cut before its answer):
    /// `kind` is a short fixed word (`error_body`, `timeout`, …). Finishes
    /// the attempt as failed.
    pub fn fail(&self, kind: &'static str) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(kind);
        self.usage.finish(Outcome::Failed);
    }

    /// The failure noted by [`fail`](Self::fail), if any.
    pub fn failure(&self) -> Option<&'static str> {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `watcher` when the attempt is over, with its usage, how it
    /// ended and the failure noted by [`fail`](Self::fail), if any.
    pub fn on_end(
        &self,
        watcher: impl FnOnce(&Usage, Outcome, Option<&'static str>) + Send + 'static,
    ) {
        // The watcher holds the failure slot, never the report itself.
        let failure = Arc::clone(&self.failure);
        self.usage.on_finish(move |usage, outcome| {
            let kind = *failure.lock().unwrap_or_else(PoisonError::into_inner);
            watcher(usage, outcome, kind);
        });
    }

    /// The attempt's answer is the one the client gets: its usage is what
    /// `answer` (the request's report) ends with.
    pub fn commit(&self, answer: &UsageReport) {
        let own = self.usage.clone();
        answer.on_finish(move |usage, outcome| {
            own.record(usage.clone());
            own.finish(outcome);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_attempt_ends_with_the_answer_usage() {
        let attempt = UpstreamAttempt::new("b", "model-b", "chat", 2, AttemptReason::Failover);
        let seen = Arc::new(Mutex::new(None));
        let slot = seen.clone();
        attempt.on_end(move |usage, outcome, failure| {
            assert_eq!(failure, None);
            *slot.lock().unwrap() = Some((usage.input_tokens, outcome));
        });
        let answer = UsageReport::new();
        attempt.commit(&answer);
        answer.record(Usage::new(7, 3));
        answer.finish(Outcome::Complete);
        assert_eq!(*seen.lock().unwrap(), Some((7, Outcome::Complete)));
        assert_eq!(attempt.failure(), None);
    }

    #[test]
    fn an_abandoned_attempt_ends_as_cancelled() {
        let seen = Arc::new(Mutex::new(None));
        let slot = seen.clone();
        {
            let attempt = UpstreamAttempt::new("a", "model-a", "chat", 1, AttemptReason::First);
            attempt.on_end(move |_, outcome, _| *slot.lock().unwrap() = Some(outcome));
        }
        assert_eq!(*seen.lock().unwrap(), Some(Outcome::Cancelled));
    }

    #[test]
    fn a_failed_attempt_names_its_failure() {
        let attempt = UpstreamAttempt::new("a", "model-a", "chat", 1, AttemptReason::First);
        let seen = Arc::new(Mutex::new(None));
        let slot = seen.clone();
        attempt.on_end(move |_, outcome, failure| *slot.lock().unwrap() = Some((outcome, failure)));
        let copy = attempt.clone();
        copy.fail("error_body");
        assert_eq!(
            *seen.lock().unwrap(),
            Some((Outcome::Failed, Some("error_body")))
        );
        assert_eq!(attempt.failure(), Some("error_body"));
        assert_eq!(attempt.usage.outcome(), Some(Outcome::Failed));
    }
}
