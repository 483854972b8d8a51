//! What the integration tests and the benchmarks share: a fresh database, the broker binary as
//! a process, HTTP as a browser speaks it with the route paths of the test realm, and the fake
//! Entra.
//!
//! `tests/api/main.rs` and `benches/common/mod.rs` include it through `#[path]`, so nothing in
//! it may reach into either of them.

pub mod database;
pub mod fake_entra;
pub mod http;
pub mod private_postgres;
pub mod process;
