//! Process supervision behind one interface: systemd units on the image,
//! plain child processes where there is no systemd (tier-1 tests, dev boxes).
//!
//! Services outlive the agent either way: killing or restarting the agent
//! must not take etcd down, so the agent finds a running service again by
//! its pid file (child) or unit (systemd) instead of owning it.

pub mod boot_state;
pub mod child;
pub mod systemd;

use std::path::PathBuf;

/// Which supervisor runs Muster's services.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SupervisorKind {
    /// systemd over D-Bus (the image).
    Systemd,
    /// Child processes with pid files under the state directory.
    Child,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unit-like name, e.g. `muster-etcd`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service {name}: cannot start {program}: {source}")]
    Spawn {
        name: String,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("service {name}: {path}: {source}")]
    Io {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("service {name}: cannot signal pid {pid}: {source}")]
    Signal {
        name: String,
        pid: i32,
        source: nix::Error,
    },
    #[error(transparent)]
    Systemd(#[from] systemd::SystemdError),
}

/// The supervisor in use.
#[derive(Debug, Clone)]
pub enum Supervisor {
    Child(child::ChildSupervisor),
    /// Transient units of the systemd on the system bus.
    Systemd(systemd::SystemdSupervisor),
}

impl Supervisor {
    /// Starts the service unless it already runs. Returns true if it started it.
    pub async fn ensure_running(&self, spec: &ServiceSpec) -> Result<bool, ServiceError> {
        match self {
            Supervisor::Child(c) => c.ensure_running(spec).await,
            Supervisor::Systemd(s) => s.ensure_running(spec).await,
        }
    }

    /// Stops the service if it runs.
    pub async fn stop(&self, name: &str) -> Result<(), ServiceError> {
        match self {
            Supervisor::Child(c) => c.stop(name).await,
            Supervisor::Systemd(s) => s.stop(name).await,
        }
    }

    /// Whether the service runs (for systemd: active, activating or
    /// reloading). Async and fallible because systemd is asked over D-Bus; an
    /// unreachable bus is an error, never taken for "not running".
    pub async fn is_running(&self, name: &str) -> Result<bool, ServiceError> {
        match self {
            Supervisor::Child(c) => Ok(c.is_running(name)),
            Supervisor::Systemd(s) => s.is_running(name).await,
        }
    }
}
