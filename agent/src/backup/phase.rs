//! The backup loop: on the node whose etcd member leads, take a snapshot
//! when one is due, check it, store it, prune the oldest. Decisions come
//! from `plan`; this file only carries them out and reports.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info, info_span, warn};

use super::plan::{self, SnapshotName};
use super::{BackupSetup, etcdutl};
use crate::etcd::client::{Etcd, EtcdTls, client_url};
use crate::roles::{Role, Topology};
use crate::state::{BackupStatus, SnapshotStatus, StatusBoard, now_secs};

/// How long a snapshot may take to stream from etcd.
const SNAPSHOT_BUDGET: Duration = Duration::from_secs(120);

/// What the loop needs.
pub struct BackupInputs {
    pub cluster: String,
    pub ip: Ipv4Addr,
    pub tls: EtcdTls,
    pub topology: Topology,
    pub roles: tokio::sync::watch::Receiver<Option<Role>>,
    pub board: StatusBoard,
    /// Where snapshots are written before they are checked and stored.
    pub work_dir: std::path::PathBuf,
}

/// How often the loop looks: often enough to keep the schedule, rarely
/// enough to cost nothing (a status call on the local member).
fn check_every(schedule: Duration) -> Duration {
    (schedule / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Starts the loop when backups are configured; it ends with `shutdown`.
pub fn start(
    setup: Option<&BackupSetup>,
    inputs: BackupInputs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let setup = setup?;
    let looper = Looper {
        store: Arc::clone(&setup.store),
        schedule: setup.schedule,
        keep: setup.keep,
        etcdutl: setup.etcdutl.clone(),
        inputs,
        newest: None,
        etcd: None,
    };
    looper.report(|_| {});
    Some(tokio::spawn(
        async move {
            tokio::select! {
                () = looper.run() => {}
                () = shutdown => {}
            }
        }
        .instrument(info_span!("backup")),
    ))
}

struct Looper {
    store: Arc<super::store::Store>,
    schedule: Duration,
    keep: u16,
    etcdutl: std::path::PathBuf,
    inputs: BackupInputs,
    /// When the newest stored snapshot was taken, as last listed.
    newest: Option<u64>,
    etcd: Option<Etcd>,
}

impl Looper {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(check_every(self.schedule));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let runs_etcd =
                (*self.inputs.roles.borrow()).is_some_and(|r| self.inputs.topology.runs_etcd(r));
            if !runs_etcd || !self.leads().await {
                continue;
            }
            // Memory first: listing the store every check would cost a
            // cloud call a second; list again only when memory says due.
            if !plan::due(now_secs(), self.newest, self.schedule) {
                continue;
            }
            match self.store.list().await {
                Ok(names) => self.newest = plan::newest(&names).map(|n| n.taken_at),
                Err(e) => {
                    self.failed(format!("cannot list {}: {e}", self.store.place()));
                    continue;
                }
            }
            if !plan::due(now_secs(), self.newest, self.schedule) {
                continue;
            }
            match self.back_up().await {
                Ok(last) => {
                    info!(snapshot = %last.name, revision = last.revision, keys = last.keys, bytes = last.size_bytes, took_ms = last.took_ms, "etcd snapshot stored");
                    self.newest = Some(last.taken_at);
                    self.report(|b| {
                        b.last = Some(last);
                        b.error = None;
                    });
                    self.prune().await;
                }
                Err(e) => self.failed(e),
            }
        }
    }

    /// Whether the local member is the leader (only the leader backs up).
    async fn leads(&mut self) -> bool {
        if self.etcd.is_none() {
            let endpoint = vec![client_url(self.inputs.ip)];
            self.etcd = Etcd::connect(endpoint, &self.inputs.tls, SNAPSHOT_BUDGET)
                .await
                .ok();
        }
        let Some(etcd) = self.etcd.as_mut() else {
            return false;
        };
        match etcd.status().await {
            Ok((_, member, leader)) => member != 0 && member == leader,
            Err(_) => {
                self.etcd = None;
                false
            }
        }
    }

    async fn back_up(&mut self) -> Result<SnapshotStatus, String> {
        let started = Instant::now();
        let taken_at = now_secs();
        let etcd = self
            .etcd
            .as_mut()
            .ok_or("no connection to the local member")?;
        let db = etcd
            .snapshot(SNAPSHOT_BUDGET)
            .await
            .map_err(|e| format!("snapshot: {e}"))?;
        let dir = &self.inputs.work_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = dir.join("snapshot.db");
        tokio::fs::write(&file, &db)
            .await
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let checked = etcdutl::status(&self.etcdutl, &file).await;
        let _ = std::fs::remove_file(&file);
        let checked = checked.map_err(|e| format!("the snapshot fails its check: {e}"))?;
        let name = SnapshotName {
            taken_at,
            revision: checked.revision,
            cluster: self.inputs.cluster.clone(),
        };
        let size = db.len() as u64;
        self.store
            .put(&name.file_name(), bytes::Bytes::from(db))
            .await
            .map_err(|e| format!("cannot store {}: {e}", name.file_name()))?;
        Ok(SnapshotStatus {
            name: name.file_name(),
            taken_at,
            revision: checked.revision,
            keys: checked.total_key,
            size_bytes: size,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Deletes the oldest beyond `keep`; a failure here is only logged (the
    /// next backup prunes again).
    async fn prune(&self) {
        let names = match self.store.list().await {
            Ok(names) => names,
            Err(e) => return warn!("cannot list {} to prune: {e}", self.store.place()),
        };
        for old in plan::prune(&names, self.keep) {
            if let Err(e) = self.store.delete(&old.file_name()).await {
                warn!(snapshot = %old.file_name(), "cannot delete an old snapshot: {e}");
            }
        }
    }

    fn failed(&self, why: String) {
        warn!("etcd backup failed: {why}");
        self.report(|b| {
            b.error = Some(why);
            b.failures += 1;
        });
    }

    fn report(&self, change: impl FnOnce(&mut BackupStatus)) {
        let place = self.store.place();
        let _ = self.inputs.board.update(|s| {
            let backup = s.backup.get_or_insert_with(|| BackupStatus {
                target: place,
                ..Default::default()
            });
            change(backup);
        });
    }
}
