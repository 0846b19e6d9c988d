//! Muster's node agent.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library. Each boot phase
//! of `docs/design.md` is a module; inside a module, fetching and other side
//! effects are kept apart from pure parse/plan functions so the decisions are
//! testable without machines.

pub mod agent;
pub mod backup;
pub mod calls;
pub mod cloud;
pub mod cmdline;
pub mod config;
pub mod containerd;
pub mod discovery;
pub mod dns;
pub mod etcd;
pub mod formation;
pub mod http;
pub mod image;
pub mod kubernetes;
#[cfg(feature = "lab")]
pub mod lab;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod netlink;
pub mod network;
pub mod pki;
pub mod plan;
pub mod retry;
pub mod roles;
pub mod service;
pub mod state;
pub mod status_endpoint;
pub mod vip;

/// Reads a recorded response under `tests/fixtures/<dir>/` (unit tests).
#[cfg(test)]
pub(crate) fn test_fixture(dir: &str, name: &str) -> String {
    let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
