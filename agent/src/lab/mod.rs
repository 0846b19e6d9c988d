//! The local QEMU lab (`muster lab`): N VMs of the real node image on a
//! private bridge in a network namespace, with a fake cloud (IMDSv2 and the
//! Auto Scaling group API, `cloud`) answering on the bridge as a real cloud
//! would. The VMs assemble their cluster on their own; the lab only boots,
//! powers off and watches them.
//!
//! - `spec`: the lab as data (addresses, user data, the cloud's view)
//! - `net`, `dhcp`, `vm`: namespace and bridge, DHCP, QEMU command lines
//! - `cpu`: a VM's share of the host's cores
//! - `pxe`: the PXE set served over HTTP for network-booted labs
//! - `progress`: each node's status and whether the cluster has assembled
//! - `ops`: the commands (`up`, `status`, `kill`, `stop`, `start`, `add`,
//!   `wait`, `down`, and the hidden `serve` that runs the fake cloud)

pub mod cli;
pub mod cloud;
pub mod cpu;
pub mod dhcp;
pub mod net;
pub mod ops;
pub mod progress;
pub mod pxe;
pub mod spec;
pub mod upgrade;
pub mod vm;

use std::path::PathBuf;

/// Everything that can go wrong in a lab command, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab: {what}: cannot run `{command}`: {source}")]
    Spawn {
        what: String,
        command: String,
        source: std::io::Error,
    },
    #[error("lab: {what}: `{command}` failed: {stderr}")]
    Command {
        what: String,
        command: String,
        stderr: String,
    },
    #[error("lab: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lab: {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("lab: {0}")]
    Usage(String),
    #[error("lab: missing on this machine: {0} (bash ci/install-deps.sh installs them)")]
    Missing(String),
    #[error("lab {name}: failover: {why}")]
    Failover { name: String, why: String },
    #[error("lab {name}: not assembled after {secs} s: {why}")]
    Timeout {
        name: String,
        secs: u64,
        why: String,
    },
}

impl LabError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { path, source }
    }
}
