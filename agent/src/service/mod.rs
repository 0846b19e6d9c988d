//! Process supervision behind one interface: systemd units on the image,
//! plain child processes where there is no systemd (tier-1 tests, dev boxes).
//!
//! Services outlive the agent either way: killing or restarting the agent
//! must not take etcd down, so the agent finds a running service again by
//! its pid file (child) or unit (systemd) instead of owning it.

pub mod boot_state;
pub mod child;
pub mod footprint;
pub mod hostname;
pub mod systemd;

use std::path::{Path, PathBuf};

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
    /// Its share of a busy CPU (systemd only; child processes all get the
    /// same).
    pub cpu: CpuShare,
}

/// How much of a busy CPU a service gets, as systemd's `CPUWeight=`
/// relative to the other units (default 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuShare {
    /// etcd: when its heartbeats or fsyncs wait behind the apiserver or
    /// the kubelet, members lose the leader and the VIP lease (stored in
    /// etcd) cannot be renewed. Seen on three TCG VMs on two cores.
    Critical,
    #[default]
    Normal,
}

impl CpuShare {
    /// The `CPUWeight=` value (1..10000; systemd's default is 100).
    pub fn weight(self) -> u64 {
        match self {
            CpuShare::Critical => 1000,
            CpuShare::Normal => 100,
        }
    }
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

/// What [`Supervisor::ensure_current`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// It ran as wanted already.
    Running,
    Started,
    /// It ran with other arguments and was restarted.
    Restarted,
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

    /// Makes the service run exactly as `spec` says: started if it does
    /// not run, restarted if it runs with another program or arguments
    /// than the ones recorded (in `record_dir/NAME.spec`) when it was
    /// started. A service started without a record is left alone, as
    /// [`Supervisor::ensure_running`] would.
    pub async fn ensure_current(
        &self,
        spec: &ServiceSpec,
        record_dir: &Path,
    ) -> Result<Ensured, ServiceError> {
        let record = record_dir.join(format!("{}.spec", spec.name));
        let wanted = format!("{}\n{}\n", spec.program.display(), spec.args.join("\n"));
        let io = |path: &Path| {
            let (name, path) = (spec.name.clone(), path.to_path_buf());
            move |source| ServiceError::Io { name, path, source }
        };
        let recorded = std::fs::read_to_string(&record).ok();
        let mut outcome = Ensured::Started;
        if self.is_running(&spec.name).await? {
            match recorded {
                Some(r) if r != wanted => {
                    tracing::info!(service = %spec.name, "arguments changed: restarting");
                    self.stop(&spec.name).await?;
                    outcome = Ensured::Restarted;
                }
                _ => return Ok(Ensured::Running),
            }
        }
        std::fs::create_dir_all(record_dir).map_err(io(record_dir))?;
        std::fs::write(&record, &wanted).map_err(io(&record))?;
        if !self.ensure_running(spec).await? && outcome == Ensured::Started {
            return Ok(Ensured::Running);
        }
        Ok(outcome)
    }

    /// Restarts a unit the image ships (`containerd.service`). Without
    /// systemd there are no such units: nothing to do.
    pub async fn restart_system_unit(&self, unit: &str) -> Result<(), ServiceError> {
        match self {
            Supervisor::Child(_) => Ok(()),
            Supervisor::Systemd(s) => s.restart_unit(unit).await,
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
