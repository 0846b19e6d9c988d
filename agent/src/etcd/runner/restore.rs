//! Forming a cluster from a snapshot (`etcd.restore`): which snapshot, and
//! whether now (`resolve`, from `backup::plan`), then the restore itself
//! (`restore`). The decision to restore is `formation::decide`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Runner, now_ms};
use crate::backup::etcdutl::{self, RestoreSpec};
use crate::backup::plan::{self, Wanted};
use crate::backup::store::Store;
use crate::discovery::Peer;
use crate::formation::{FoundCluster, InitialMember, RestoreSource, peer_url};
use crate::state::now_secs;

/// How long a resolved snapshot is trusted before the store is listed
/// again (rounds come every tick; a store listing is a cloud call).
const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// What the runner needs to restore.
pub struct RestoreSetup {
    pub store: Arc<Store>,
    pub wanted: Wanted,
    /// The backup schedule (a live cluster writes a snapshot this often).
    pub schedule: Duration,
    pub etcdutl: PathBuf,
}

/// A decision to restore, as `formation::decide` made it.
pub(super) struct RestoreStep {
    pub snapshot: String,
    pub initial: Vec<InitialMember>,
    pub token: String,
    pub into_cluster: Option<u64>,
}

impl Runner {
    /// The snapshot this node would form its cluster from, when a restore
    /// is configured and could apply: no local data and no live cluster.
    /// A live cluster is joined instead, and said so once.
    pub(super) async fn resolve_restore(
        &mut self,
        local_data: bool,
        clusters: &[FoundCluster],
    ) -> Option<RestoreSource> {
        let setup = self.cfg.restore.as_ref()?;
        if local_data {
            return None;
        }
        if let Some(live) = clusters.iter().find(|c| c.has_leader) {
            if !self.restore_refused {
                self.restore_refused = true;
                warn!(cluster = %format!("{:x}", live.cluster_id), "etcd.restore is set, but this cluster is live: refusing to restore over it; joining it instead");
            }
            return None;
        }
        if let Some((at, source)) = &self.restore_resolved
            && at.elapsed() < RESOLVE_EVERY
        {
            return Some(source.clone());
        }
        let place = setup.store.place();
        let source = match setup.store.list().await {
            Err(e) => RestoreSource::Blocked {
                reason: format!("cannot list the snapshots in {place}: {e}"),
            },
            Ok(names) => match plan::choose(&names, &setup.wanted, &place) {
                Err(reason) => RestoreSource::Blocked { reason },
                Ok(chosen) => {
                    let newest = plan::newest(&names).map_or(chosen.taken_at, |n| n.taken_at);
                    match plan::restore_gate(now_secs(), newest, setup.schedule, &setup.wanted) {
                        Err(reason) => RestoreSource::Blocked { reason },
                        Ok(()) => RestoreSource::Ready {
                            snapshot: chosen.file_name(),
                        },
                    }
                }
            },
        };
        self.restore_resolved = Some((Instant::now(), source.clone()));
        Some(source)
    }

    /// Downloads and checks the snapshot, restores it aside, and moves it
    /// into place only if it yields the cluster expected (a forming
    /// restored cluster this node is listed in). Then etcd starts on it.
    pub(super) async fn restore(&mut self, me: &Peer, step: RestoreStep) -> Result<(), String> {
        let setup = self
            .cfg
            .restore
            .as_ref()
            .ok_or("etcd: a restore was decided without etcd.restore")?;
        let root = self.cfg.state.root().to_path_buf();
        let work = root.join("restore");
        std::fs::create_dir_all(&work)
            .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
        let file = work.join(&step.snapshot);
        let started = Instant::now();
        let body = setup.store.get(&step.snapshot).await?;
        tokio::fs::write(&file, &body)
            .await
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let checked = etcdutl::status(&setup.etcdutl, &file)
            .await
            .map_err(|e| format!("snapshot {} fails its check: {e}", step.snapshot))?;
        let staging = root.join("etcd.restoring");
        // Left by an earlier attempt: only ever a copy of the snapshot.
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(|e| format!("cannot clear {}: {e}", staging.display()))?;
        }
        let my_url = peer_url(me);
        let cluster_id = etcdutl::restore(
            &setup.etcdutl,
            &RestoreSpec {
                snapshot: &file,
                name: &me.id,
                my_peer_url: &my_url,
                initial: &step.initial,
                token: &step.token,
                data_dir: &staging,
            },
        )
        .await?;
        if let Some(expected) = step.into_cluster.filter(|id| *id != cluster_id) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(format!(
                "etcd: restoring {} gives cluster {cluster_id:x}, not the forming cluster {expected:x} that lists this node; not starting it",
                step.snapshot
            ));
        }
        let data_dir = self.data_dir();
        if data_dir.exists() {
            // No log (decide restores only without local data): what a start
            // that never reached its cluster leaves. Kept aside.
            let aside = root.join(format!("etcd.unstarted-{}", now_ms() / 1000));
            std::fs::rename(&data_dir, &aside)
                .map_err(|e| format!("cannot move {} aside: {e}", data_dir.display()))?;
        }
        std::fs::rename(&staging, &data_dir)
            .map_err(|e| format!("cannot move {} into place: {e}", staging.display()))?;
        let _ = std::fs::remove_file(&file);
        info!(
            snapshot = %step.snapshot,
            revision = checked.revision,
            keys = checked.total_key,
            cluster = %format!("{cluster_id:x}"),
            took_ms = started.elapsed().as_millis() as u64,
            "restored this member from a snapshot; starting etcd on it"
        );
        let snapshot = step.snapshot.clone();
        let place = setup.store.place();
        let _ = self.cfg.status.update(|s| {
            let backup = s.backup.get_or_insert_with(|| crate::state::BackupStatus {
                target: place,
                ..Default::default()
            });
            backup.restored_from = Some(snapshot);
        });
        self.start_etcd(me, None).await
    }
}
