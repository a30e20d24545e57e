//! The Switchboard load harness: a mock LLM vendor, a bare hyper reverse
//! proxy (the baseline every figure is compared with), a small load
//! generator and the process plumbing the `harness` binary uses. See
//! `benches/README.md` and `docs/performance.md`.

pub mod bare;
pub mod load;
pub mod mock;
pub mod procs;
pub mod scenarios;
