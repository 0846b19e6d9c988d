//! The agent's state directory (`/var/lib/muster` on a node) and its live
//! status.
//!
//! Everything the agent must remember across reboots lives here, so every
//! phase can resume from disk. `status.json` is what `muster status` reads; it
//! is written atomically (temp file + rename) and never holds a secret (S5).
//! [`StatusBoard`] is the one live copy of the status: the status endpoint
//! serves it, and once the config is valid every change is written through
//! to `status.json`, so both always say the same.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::image::ImageFacts;
use crate::metadata::ProviderKind;

/// The image's default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/muster";

/// The file `muster status` reads.
pub const STATUS_FILE: &str = "status.json";

/// Where in the boot pipeline (docs/design.md) the agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Starting,
    Identify,
    Configure,
    Discover,
    AssignRoles,
    Pki,
    Etcd,
    ApiEndpoint,
    Kubernetes,
    Network,
    Dns,
    SteadyState,
    /// Stopped after printing the plan (nothing past `configure` is built yet).
    Planned,
    /// Stopped on an error; `message` says why.
    Failed,
}

impl Phase {
    /// Every phase, in pipeline order (the `muster_phase` metric lists all).
    pub const ALL: [Phase; 14] = [
        Phase::Starting,
        Phase::Identify,
        Phase::Configure,
        Phase::Discover,
        Phase::AssignRoles,
        Phase::Pki,
        Phase::Etcd,
        Phase::ApiEndpoint,
        Phase::Kubernetes,
        Phase::Network,
        Phase::Dns,
        Phase::SteadyState,
        Phase::Planned,
        Phase::Failed,
    ];
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{self:?}"));
        f.write_str(&s)
    }
}

/// What the local agent is doing, as shown by `muster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub provider: Option<ProviderKind>,
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
    pub cluster: Option<String>,
    /// The role this node has taken, or `None` until roles are assigned.
    pub role: Option<String>,
    /// A short human-readable note: the plan summary or the failure.
    pub message: Option<String>,
    /// The local etcd member and the cluster it sees, once etcd runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdStatus>,
    /// This node's part in the election of the API VIP, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<VipStatus>,
    /// Kubernetes on this node, once its phase runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesStatus>,
    /// DNS publishing (boot phase 10), when `dns.provider` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsStatus>,
    /// etcd backups (`topology.etcd.backup`) as this node saw them, and the
    /// snapshot its member was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// What the node image is (read once at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageFacts>,
    /// Memory (MiB, systemd's cgroup accounting) of each part of the node
    /// that runs here: agent, etcd, apiserver, kubelet, containerd, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memory_mib: BTreeMap<String, u64>,
    /// CPU time (milliseconds, systemd's cgroup accounting) each part has
    /// used since it started: two readings a minute apart give its share
    /// of a core.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_ms: BTreeMap<String, u64>,
    /// When `memory_mib` and `cpu_ms` were read (Unix milliseconds).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub footprint_at_ms: u64,
    /// Seconds since the Unix epoch when this status was written.
    pub updated_at: u64,
    pub pid: u32,
}

/// The etcd part of `muster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdStatus {
    /// Cluster id in hex, as `etcdctl` prints it.
    pub cluster_id: String,
    pub member_id: String,
    pub leader_id: String,
    pub members: Vec<MemberStatus>,
}

/// The backup part of `muster status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    /// Where the cluster's snapshots are (`s3://…`, `file://…`).
    pub target: String,
    /// The last snapshot this node took and stored, when it took one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<SnapshotStatus>,
    /// Why the last attempt failed, until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attempts that failed since the agent started.
    #[serde(default)]
    pub failures: u64,
    /// The snapshot this node's etcd member was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
}

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub taken_at: u64,
    pub revision: i64,
    pub keys: u64,
    pub size_bytes: u64,
    /// Snapshot, check and upload.
    pub took_ms: u64,
}

/// The DNS part of `muster status`: this node's view of the publishing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    pub provider: String,
    /// `publishing` (this node writes the zone), `standby` (another node
    /// does), `failing` (the last attempt failed: see `message`).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The address of the node that publishes, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// The names this node last published (publisher only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<String>,
    /// Wanted names left alone because someone else owns them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// Record changes written since the agent started.
    #[serde(default)]
    pub writes: u64,
    /// The hand-over to ExternalDNS (DNSEndpoint objects), once the API
    /// answers: `described`, `adopted by ExternalDNS`, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<String>,
}

/// The API VIP part of `muster status`: this node's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStatus {
    pub address: Ipv4Addr,
    /// How the VIP moves: `arp`, `bgp`, `aws`, `gce`.
    pub mode: String,
    /// `holder` (the VIP answers here), `candidate` (ready to take over) or
    /// `standby` (not campaigning: local etcd unhealthy or unreachable).
    pub role: String,
    /// `role == "holder"`, for readers that want a boolean.
    pub holder: bool,
    /// When this node took its current role, seconds since the Unix epoch
    /// (for a holder: since when the VIP has answered here).
    #[serde(default)]
    pub since: u64,
    /// How often this node has taken the VIP since its agent started.
    #[serde(default)]
    pub takeovers: u32,
    /// How long this node's renewal rounds took while it held the VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewals: Option<crate::vip::RenewalSummary>,
    /// The manager thread's scheduling: `real-time`, or `normal (why)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// The Kubernetes part of `muster status`: this node's view.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KubernetesStatus {
    /// The release the binaries report, `v1.28.7`.
    pub version: String,
    /// Components the agent runs here (`kube-apiserver`, ...).
    pub components: Vec<String>,
    /// The local kube-apiserver answered `/readyz` in the last round.
    pub apiserver_ready: bool,
    /// Nodes holding the controller-manager's and the scheduler's leader
    /// leases, as the API reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager_leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_leader: Option<String>,
    /// Fingerprint of the cluster objects (bootstrap token, RBAC,
    /// cluster-info) known applied; `None` until they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<String>,
    /// What the phase is waiting for or what failed last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// This machine as a Kubernetes node (kubelet, pod network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeStatus>,
}

/// This machine as a Kubernetes node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The Node's name.
    pub name: String,
    /// The Node object exists (the kubelet registered it).
    pub registered: bool,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// The pod range the controller-manager gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// Routes to other nodes' pods the agent keeps (bridge pod network).
    pub routes: usize,
    /// What the node part waits for or what failed last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: String,
    pub name: String,
    pub peer_url: String,
    pub is_learner: bool,
    pub healthy: bool,
    /// A learner that does not serve yet but answers on its peer URL: it
    /// is applying the log (etcd serves clients only once it has).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catching_up: bool,
}

impl Status {
    pub fn new(phase: Phase) -> Self {
        Status {
            phase,
            provider: None,
            instance_id: None,
            hostname: None,
            cluster: None,
            role: None,
            message: None,
            etcd: None,
            vip: None,
            kubernetes: None,
            dns: None,
            backup: None,
            image: None,
            memory_mib: BTreeMap::new(),
            cpu_ms: BTreeMap::new(),
            footprint_at_ms: 0,
            updated_at: 0,
            pid: std::process::id(),
        }
    }
}

/// Errors reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid status file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: no status yet — is the agent running with --state-dir {dir}?")]
    NoStatus { path: PathBuf, dir: PathBuf },
}

/// A handle on the state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Names the directory; nothing is created until the first write, so an
    /// invalid config leaves the disk untouched (S6).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn status_path(&self) -> PathBuf {
        self.root.join(STATUS_FILE)
    }

    /// Writes the status atomically: readers see the old or the new file,
    /// never half of one.
    pub fn write_status(&self, status: &Status) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.root).map_err(|source| StateError::Dir {
            dir: self.root.clone(),
            source,
        })?;
        let mut status = status.clone();
        status.updated_at = now_secs();
        let path = self.status_path();
        let tmp = self
            .root
            .join(format!(".{STATUS_FILE}.{}", std::process::id()));
        let io = |source| StateError::Io {
            path: tmp.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(&status).map_err(|e| io(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })
    }

    /// Reads the last status the agent wrote.
    pub fn read_status(&self) -> Result<Status, StateError> {
        let path = self.status_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NoStatus {
                    path,
                    dir: self.root.clone(),
                });
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The live status, shared by everything that reports into it (the boot
/// pipeline, the etcd loop, the VIP manager) and the status endpoint that
/// serves it. Cheap to clone.
///
/// Before the config is valid nothing may be written to disk (S6), so the
/// board starts in memory only; [`StatusBoard::persist_to`] turns on the
/// write-through to `status.json`.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    inner: Arc<Mutex<Board>>,
}

#[derive(Debug)]
struct Board {
    status: Status,
    dir: Option<StateDir>,
}

impl StatusBoard {
    pub fn new(status: Status) -> Self {
        let mut status = status;
        status.updated_at = now_secs();
        StatusBoard {
            inner: Arc::new(Mutex::new(Board { status, dir: None })),
        }
    }

    /// A poisoned lock still holds a whole status (updates are plain field
    /// writes), so it is used as is.
    fn lock(&self) -> MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the status now.
    pub fn get(&self) -> Status {
        self.lock().status.clone()
    }

    /// From now on every update is also written to `dir`'s `status.json`;
    /// writes the current status at once.
    pub fn persist_to(&self, dir: StateDir) -> Result<(), StateError> {
        let mut board = self.lock();
        dir.write_status(&board.status)?;
        board.dir = Some(dir);
        Ok(())
    }

    /// Changes the status and, once persisting, writes it. The lock is held
    /// across the write so concurrent updates reach the file in order.
    pub fn update(&self, change: impl FnOnce(&mut Status)) -> Result<(), StateError> {
        let mut board = self.lock();
        change(&mut board.status);
        board.status.updated_at = now_secs();
        match &board.dir {
            Some(dir) => dir.write_status(&board.status),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_the_dir_is_created_lazily() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(tmp.path().join("state"));
        assert!(
            !dir.root().exists(),
            "naming a state dir must not create it"
        );
        assert!(matches!(
            dir.read_status(),
            Err(StateError::NoStatus { .. })
        ));

        let mut s = Status::new(Phase::Planned);
        s.role = Some("control-plane".into());
        dir.write_status(&s).expect("write");
        let back = dir.read_status().expect("read");
        assert_eq!(back.phase, Phase::Planned);
        assert_eq!(back.role.as_deref(), Some("control-plane"));
        assert!(back.updated_at > 0);
        let leftovers: Vec<_> = std::fs::read_dir(dir.root()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temp file may be left behind");
    }

    #[test]
    fn a_corrupt_status_names_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(STATUS_FILE), b"{not json").expect("write");
        let err = StateDir::new(tmp.path())
            .read_status()
            .expect_err("corrupt");
        assert!(err.to_string().contains("status.json"), "{err}");
    }

    #[test]
    fn the_board_writes_through_only_once_persisting() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(tmp.path().join("state"));
        let board = StatusBoard::new(Status::new(Phase::Identify));
        board
            .update(|s| s.message = Some("identifying".into()))
            .expect("in memory");
        assert!(
            !dir.root().exists(),
            "nothing on disk before persist_to (S6)"
        );
        assert_eq!(board.get().message.as_deref(), Some("identifying"));

        board.persist_to(dir.clone()).expect("persist");
        assert_eq!(dir.read_status().expect("written").phase, Phase::Identify);
        let other = board.clone();
        other.update(|s| s.phase = Phase::Etcd).expect("write");
        assert_eq!(dir.read_status().expect("read").phase, Phase::Etcd);
        assert_eq!(board.get().phase, Phase::Etcd);
    }

    #[test]
    fn every_phase_is_listed_once() {
        let names: std::collections::BTreeSet<String> =
            Phase::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names.len(), Phase::ALL.len());
    }

    #[test]
    fn phases_print_in_kebab_case() {
        assert_eq!(Phase::AssignRoles.to_string(), "assign-roles");
        assert_eq!(Phase::SteadyState.to_string(), "steady-state");
    }
}
