//! The etcd phase and the steady-state loop: observe, decide, act, repeat.
//!
//! Each round lists the group, probes the peers' etcd, and asks the pure
//! `formation::decide` / `membership::plan` what to do; this module only
//! carries decisions out. Everything it needs to resume lives on disk, so a
//! killed or restarted agent picks up where it was. Joining an existing
//! cluster is in `join.rs`, the steady-state round in `steady.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::client::{self, EtcdTls};
use super::flags::{Bootstrap, ClusterState, MemberConfig, TlsFiles};
use super::pacing;
use crate::discovery::aws_asg::Freshness;
use crate::discovery::source::PeerSource;
use crate::discovery::{Lifecycle, Peer};
use crate::formation::{self, Decision, FoundCluster, FoundMember, Observed};
use crate::roles::{self, Role, Topology};
use crate::service::{CpuShare, ServiceSpec, Supervisor};
mod join;
mod leave;
mod paced;
mod pool;
mod restore;
mod steady;

pub use restore::RestoreSetup;

use crate::state::{Phase, StateDir, Status, StatusBoard};

/// How long a running local etcd may stay silent before the agent asks
/// the peers whether it was removed.
const SILENT_MEMBER: Duration = Duration::from_secs(10);

/// How long a local etcd that has not written its log yet may stay silent
/// before it counts as stuck in its start: long, because a slow machine
/// (TCG, a starved VM) may take a while to join, and a stuck start waits
/// for ever anyway.
const STUCK_START: Duration = Duration::from_secs(30);

/// The supervised etcd service.
pub const SERVICE: &str = "muster-etcd";

/// Fixed settings of the loop.
pub struct RunnerConfig {
    pub cluster_name: String,
    pub topology: Topology,
    pub ip: Ipv4Addr,
    pub state: StateDir,
    pub supervisor: Supervisor,
    pub etcd_bin: PathBuf,
    pub tls_files: TlsFiles,
    pub tls: EtcdTls,
    /// A member unreachable this long is replaced (S3 permitting).
    pub replace_after: Duration,
    pub heartbeat_ms: u32,
    pub election_ms: u32,
    pub tick: Duration,
    /// The live status (identify and configure filled in theirs); every
    /// report goes there and through it to `status.json`.
    pub status: StatusBoard,
    /// `etcd.restore`: form a new cluster from a snapshot.
    pub restore: Option<RestoreSetup>,
}

pub struct Runner {
    cfg: RunnerConfig,
    source: PeerSource,
    view_ids: BTreeSet<String>,
    view_stable_since_ms: u64,
    unhealthy_since: HashMap<u64, Instant>,
    /// Since when each learner has not served (`membership::learner_alive`).
    learner_not_serving_since: HashMap<u64, Instant>,
    /// Members whose machine this agent has seen in the group listing.
    seen_in_group: HashSet<u64>,
    /// Since when the local etcd, though running, has not answered.
    silent_since: Option<Instant>,
    /// No etcd start before then (after stopping a stuck one).
    paused_until: Option<Instant>,
    role: Option<Role>,
    /// The role, for the phases that depend on it (Kubernetes).
    role_tx: tokio::sync::watch::Sender<Option<Role>>,
    /// The group as last listed, for the phases that need it.
    view_tx: tokio::sync::watch::Sender<Vec<Peer>>,
    /// Whether the group lists this machine as leaving on purpose (the VIP
    /// hands itself on at once).
    leaving_tx: tokio::sync::watch::Sender<bool>,
    /// Pacing of an agent without a seat (issue 18, `etcd::pacing`).
    pace: paced::Pace,
    /// The restore source as last resolved, and when.
    restore_resolved: Option<(Instant, formation::RestoreSource)>,
    /// A live cluster was found while a restore is configured (said once).
    restore_refused: bool,
    /// This machine is leaving on purpose and etcd no longer counts on it.
    left: bool,
    /// The group was told it may terminate this machine.
    let_go: bool,
    /// Whether this machine's Node is drained (the Kubernetes phase says),
    /// and since when this machine is leaving (`leave::DRAIN_LIMIT`).
    drained: Option<tokio::sync::watch::Receiver<bool>>,
    leaving_since: Option<Instant>,
    /// This node's part in the VIP election: a leaving holder's member
    /// stays until the VIP has moved (`leave::VIP_RELEASE_LIMIT`).
    vip_role: Option<tokio::sync::watch::Receiver<crate::vip::VipRole>>,
    /// Connections to the local member and the members, kept across rounds.
    pool: pool::Pool,
    /// The last member round found the cluster calm: the next one waits
    /// until then (`pacing::CALM_ROUND_EVERY`).
    calm_until: Option<Instant>,
}

/// What the local member says of its cluster, and each member's health.
pub(super) struct LocalView {
    /// The connection to the local member (kept in the pool).
    pub etcd: client::Etcd,
    pub cluster_id: u64,
    pub member_id: u64,
    /// 0: the local member knows no leader.
    pub leader: u64,
    pub members: Vec<FoundMember>,
    pub health: Vec<bool>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Runner {
    pub fn new(cfg: RunnerConfig, source: PeerSource) -> Runner {
        let role = read_role(&cfg.state);
        let cfg_tls = cfg.tls.clone();
        let (role_tx, _) = tokio::sync::watch::channel(role);
        let (view_tx, _) = tokio::sync::watch::channel(Vec::new());
        let (leaving_tx, _) = tokio::sync::watch::channel(false);
        Runner {
            cfg,
            source,
            view_ids: BTreeSet::new(),
            view_stable_since_ms: now_ms(),
            unhealthy_since: HashMap::new(),
            learner_not_serving_since: HashMap::new(),
            seen_in_group: HashSet::new(),
            silent_since: None,
            paused_until: None,
            role,
            role_tx,
            view_tx,
            leaving_tx,
            pace: paced::Pace::default(),
            restore_resolved: None,
            restore_refused: false,
            left: false,
            let_go: false,
            drained: None,
            leaving_since: None,
            vip_role: None,
            pool: pool::Pool::new(cfg_tls, client::PROBE_TIMEOUT),
            calm_until: None,
        }
    }

    /// Asks the local member for its cluster, its members and their health
    /// (over the kept connections). `context` starts each error message.
    pub(super) async fn local_view(&mut self, context: &str) -> Result<LocalView, String> {
        let local = pool::Pool::local_endpoint();
        let mut etcd = self
            .pool
            .connection(&local)
            .await
            .map_err(|e| format!("{context}: local member not answering yet: {e}"))?;
        let status = etcd.status().await;
        let (cluster_id, member_id, leader) = self
            .pool
            .checked(&local, status)
            .map_err(|e| format!("{context}: local member: {e}"))?;
        let members = etcd.members().await;
        let members = self
            .pool
            .checked(&local, members)
            .map_err(|e| format!("{context}: member list: {e}"))?;
        let health = self.pool.health(&members).await;
        Ok(LocalView {
            etcd,
            cluster_id,
            member_id,
            leader,
            members,
            health,
        })
    }

    /// Follows the group as each round lists it.
    /// Before leaving on purpose, wait (at most `leave::DRAIN_LIMIT`) until
    /// `drained` says this machine's Node has been drained.
    pub fn wait_for_drain(&mut self, drained: tokio::sync::watch::Receiver<bool>) {
        self.drained = Some(drained);
    }

    /// Before leaving on purpose, wait (at most `leave::VIP_RELEASE_LIMIT`)
    /// until `role` says this node no longer holds the VIP.
    pub fn wait_for_vip_release(
        &mut self,
        role: tokio::sync::watch::Receiver<crate::vip::VipRole>,
    ) {
        self.vip_role = Some(role);
    }

    pub fn views(&self) -> tokio::sync::watch::Receiver<Vec<Peer>> {
        self.view_tx.subscribe()
    }

    /// Follows whether the group is terminating this machine on purpose
    /// (`Lifecycle::Leaving`, as each round lists it).
    pub fn leaving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leaving_tx.subscribe()
    }

    /// Tells the phases that follow [`Self::leaving`] what this round's
    /// listing says of this machine (a cancelled scale-in turns it back).
    pub(super) fn note_lifecycle(&self, me: &Peer) {
        let leaving = me.lifecycle == Lifecycle::Leaving;
        self.leaving_tx
            .send_if_modified(|was| std::mem::replace(was, leaving) != leaving);
    }

    /// Follows this node's role: `None` until it is decided (or read back
    /// from disk after a restart).
    pub fn roles(&self) -> tokio::sync::watch::Receiver<Option<Role>> {
        self.role_tx.subscribe()
    }

    fn data_dir(&self) -> PathBuf {
        self.cfg.state.root().join("etcd")
    }

    /// Runs rounds until `shutdown` resolves. Errors of one round are logged
    /// and retried next round: faults in a cluster are normal weather.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(message) = self.round().await {
                warn!("{message}");
                self.report(|s| s.message = Some(message));
            }
            tokio::select! {
                _ = &mut shutdown => {
                    info!("stopping the agent; services keep running");
                    return;
                }
                _ = tokio::time::sleep(self.cfg.tick) => {}
            }
        }
    }

    /// Changes the live status (and `status.json`); a failed write is
    /// logged, the loop goes on.
    fn report(&self, change: impl FnOnce(&mut Status)) {
        if let Err(e) = self.cfg.status.update(change) {
            warn!("cannot write status: {e}");
        }
    }

    async fn round(&mut self) -> Result<(), String> {
        // Handed off and let go: the machine is on its way out; nothing more
        // to do (and its group no longer lists it).
        if self.let_go {
            return Ok(());
        }
        // A worker lists its group and asks the cluster at a paced rate.
        if let Some(role) = self.role.filter(|r| !self.cfg.topology.runs_etcd(*r)) {
            return self.worker_round(role).await;
        }
        if self.calm_until.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        self.calm_until = None;
        let (view, me) = self.view_for_round().await?;
        let running = self.etcd_running().await?;
        self.note_lifecycle(&me);
        if me.lifecycle == Lifecycle::Leaving {
            return self.leave(&me, running).await;
        }
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        if running {
            let result = self.steady(&view).await;
            if result.is_ok() {
                self.silent_since = None;
            } else {
                self.stop_if_removed(&view, &me).await;
            }
            return result;
        }
        self.silent_since = None;

        let local_data = has_wal(&self.data_dir());
        let everyone = local_data || pacing::probes_everyone(self.cfg.topology, &view, &me);
        if !everyone && !self.pace.probe_due(view.len(), self.cfg.ip) {
            return Ok(());
        }
        let clusters = if everyone {
            self.probe_peers(&view, &me).await
        } else {
            self.probe_bounded(&view, &me).await
        };
        let restore = if everyone {
            self.resolve_restore(local_data, &clusters).await
        } else {
            None
        };
        let set = roles::formation_set(self.cfg.topology, &view);
        let settle = self.source.settle_time().as_millis() as u64;
        let observed = Observed {
            cluster_name: &self.cfg.cluster_name,
            me: &me,
            topology: self.cfg.topology,
            sticky_role: self.role,
            view: &view,
            settled: formation::settled(now_ms(), self.view_stable_since_ms, &set, settle),
            local_data,
            clusters: &clusters,
            restore: restore.as_ref(),
        };
        let decision = formation::decide(&observed);
        if !everyone {
            let idle = matches!(decision, Decision::Wait { .. });
            self.pace.probed(idle, self.cfg.tick, self.cfg.ip);
        }
        self.report(|s| s.phase = Phase::Etcd);
        self.act(decision, &me, &clusters).await
    }

    /// Lists the group, publishes the view, and finds this node in it.
    async fn list_view(&mut self) -> Result<(Vec<Peer>, Peer), String> {
        self.list_view_with(Freshness::Full).await
    }

    /// [`Runner::list_view`] asking the cloud again only for what
    /// `freshness` says (a worker: members not yet seen settled).
    async fn list_view_with(&mut self, freshness: Freshness) -> Result<(Vec<Peer>, Peer), String> {
        let view = self
            .source
            .list_with(freshness)
            .await
            .map_err(|e| e.to_string())?;
        self.take_view(view.clone());
        let me = self.find_me(&view)?;
        Ok((view, me))
    }

    /// Publishes a fresh listing and notes when the group last changed.
    /// The pipeline hands in the listing it made at start, so a booting
    /// agent's first rounds use it instead of listing again
    /// (`pacing::LISTING_REUSE`).
    pub fn take_view(&mut self, view: Vec<Peer>) {
        self.pace.listed_at = Some(std::time::Instant::now());
        self.view_tx.send_if_modified(|v| {
            let changed = *v != view;
            if changed {
                v.clone_from(&view);
            }
            changed
        });
        let ids: BTreeSet<String> = view
            .iter()
            .map(|p| format!("{}/{:?}", p.id, p.lifecycle))
            .collect();
        if ids != self.view_ids {
            self.view_ids = ids;
            self.view_stable_since_ms = now_ms();
        }
    }

    /// This node in `view`, found by its address.
    fn find_me(&self, view: &[Peer]) -> Result<Peer, String> {
        view.iter()
            .find(|p| p.address == self.cfg.ip)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "discover: this node's address {} is not among its group's peers",
                    self.cfg.ip
                )
            })
    }

    /// A local etcd that has not served for `SILENT_MEMBER` (no answer, or
    /// no linearizable read): if the serving peers' cluster does not list
    /// it, it was removed, and runs on without serving (a learner removed
    /// while it started; or a member removed while away whose etcd 3.5
    /// process did not exit and answers from memory, seed 0xc0df001f); if
    /// it has no log yet after `STUCK_START`, it is stuck in its start.
    /// Nothing else would stop either. Stopped, a later round decides again.
    /// Both found by the fault campaign under load (a replacement, and two
    /// late first members, silent for good).
    async fn stop_if_removed(&mut self, view: &[Peer], me: &Peer) {
        let since = *self.silent_since.get_or_insert_with(Instant::now);
        if since.elapsed() < SILENT_MEMBER {
            return;
        }
        let clusters = self.probe_peers(view, me).await;
        let removed = formation::removed_from(&clusters, &formation::peer_url(me));
        // Never started (no log yet) and silent this long: stuck in its
        // start. Two late members of the first set, started at once, were
        // seen each waiting for the other's /version for good (etcd 3.5
        // asks every member before it serves; an accepted connection that
        // nobody answers has no timeout). Stopped, and started again after
        // a pause that differs per node, one of them finds the other not
        // listening, goes on, and then answers the other.
        let stuck = !has_wal(&self.data_dir()) && since.elapsed() >= STUCK_START;
        if removed.is_none() && !stuck {
            return;
        }
        match removed {
            Some(cluster_id) => {
                warn!(cluster = %format!("{cluster_id:x}"), "the local etcd member does not answer and the cluster no longer lists it: stopping it")
            }
            None => warn!(
                "the local etcd member has not answered for {STUCK_START:?} since it started: stopping it, to start again after a pause"
            ),
        }
        if let Err(e) = self.cfg.supervisor.stop(SERVICE).await {
            warn!("etcd: cannot stop the silent member: {e}");
        }
        self.silent_since = None;
        let pause = Duration::from_millis(500 * u64::from(self.cfg.ip.octets()[3] % 16));
        self.paused_until = Some(Instant::now() + pause);
    }

    /// Probes every other peer's etcd client port at once.
    async fn probe_peers(&self, view: &[Peer], me: &Peer) -> Vec<FoundCluster> {
        let addresses: Vec<Ipv4Addr> = view
            .iter()
            .filter(|p| p.id != me.id && p.lifecycle.is_up() && !p.address.is_unspecified())
            .map(|p| p.address)
            .collect();
        let probes = addresses.iter().map(|a| {
            let (url, tls) = (client::client_url(*a), self.cfg.tls.clone());
            async move { client::probe(url, &tls).await }
        });
        let answers: Vec<(Ipv4Addr, FoundCluster)> = addresses
            .iter()
            .zip(futures_join_all(probes).await)
            .filter_map(|(a, c)| c.map(|c| (*a, c)))
            .collect();
        formation::merge_answers(&answers)
    }

    async fn act(
        &mut self,
        decision: Decision,
        me: &Peer,
        clusters: &[FoundCluster],
    ) -> Result<(), String> {
        let etcd_role = if self.cfg.topology.dedicated_etcd_count.is_some() {
            Role::Etcd
        } else {
            Role::ControlPlane
        };
        match decision {
            Decision::Wait { reason } => {
                self.report(|s| s.message = Some(reason));
                Ok(())
            }
            Decision::Conflict { cluster_ids } => {
                let ids: Vec<String> = cluster_ids.iter().map(|id| format!("{id:x}")).collect();
                let message = format!(
                    "S1 ALARM: peers answer for {} clusters ({}); touching nothing",
                    ids.len(),
                    ids.join(", ")
                );
                self.report(|s| s.phase = Phase::Failed);
                Err(message)
            }
            Decision::NoEtcd { role } => {
                info!(%role, "no etcd member needed here");
                self.set_role(role);
                Ok(())
            }
            Decision::Restart => {
                info!("restarting the local etcd member from its data");
                self.start_etcd(me, None).await?;
                self.set_role(self.role.unwrap_or(etcd_role));
                Ok(())
            }
            Decision::Retire { cluster_id } => {
                let aside = self
                    .cfg
                    .state
                    .root()
                    .join(format!("etcd.removed-{}", now_ms() / 1000));
                warn!(cluster = %format!("{cluster_id:x}"), aside = %aside.display(), "this member was removed from the cluster while away; keeping its data aside and joining afresh");
                std::fs::rename(self.data_dir(), &aside).map_err(|e| {
                    format!("etcd: cannot move {} aside: {e}", self.data_dir().display())
                })
            }
            Decision::Form { initial, token } => {
                info!(members = initial.len(), %token, "forming a new etcd cluster");
                self.start_etcd(
                    me,
                    Some(Bootstrap {
                        initial,
                        state: ClusterState::New,
                        token,
                    }),
                )
                .await?;
                self.set_role(etcd_role);
                Ok(())
            }
            Decision::StartListed {
                cluster_id,
                initial,
                token,
                existing,
            } => {
                info!(cluster = %format!("{cluster_id:x}"), existing, "starting as a listed member");
                let state = if existing {
                    ClusterState::Existing
                } else {
                    ClusterState::New
                };
                self.start_etcd(
                    me,
                    Some(Bootstrap {
                        initial,
                        state,
                        token,
                    }),
                )
                .await?;
                self.set_role(etcd_role);
                Ok(())
            }
            Decision::Restore {
                snapshot,
                initial,
                token,
                into_cluster,
            } => {
                info!(%snapshot, members = initial.len(), %token, "forming the cluster from a snapshot");
                let step = restore::RestoreStep {
                    snapshot,
                    initial,
                    token,
                    into_cluster,
                };
                self.restore(me, step).await?;
                self.set_role(etcd_role);
                Ok(())
            }
            Decision::Join { cluster_id } => {
                let cluster = clusters
                    .iter()
                    .find(|c| c.cluster_id == cluster_id)
                    .ok_or("etcd: joined cluster vanished")?;
                match self.join(me, cluster).await? {
                    Some(bootstrap) => {
                        self.start_etcd(me, Some(bootstrap)).await?;
                        self.set_role(etcd_role);
                    }
                    // No room after all (another node got the seat, or a
                    // dead member still holds it): decide again next round,
                    // never settle as a worker on this (issue 14's bug).
                    None => self.report(|s| {
                        s.message = Some(
                            "no room in the cluster when it came to joining; deciding again".into(),
                        )
                    }),
                }
                Ok(())
            }
        }
    }

    fn set_role(&mut self, role: Role) {
        if self.role != Some(role) {
            self.role = Some(role);
            write_role(&self.cfg.state, role);
            self.role_tx.send_replace(Some(role));
        }
        self.report(|s| s.role = Some(role.to_string()));
    }

    /// Whether the local etcd service runs (an unreachable supervisor is an
    /// error, never "not running").
    async fn etcd_running(&self) -> Result<bool, String> {
        self.cfg
            .supervisor
            .is_running(SERVICE)
            .await
            .map_err(|e| e.to_string())
    }

    async fn start_etcd(&self, me: &Peer, bootstrap: Option<Bootstrap>) -> Result<(), String> {
        let member_dir = self.data_dir().join("member");
        // A running etcd may simply not have written its log yet (a start
        // under load): leave it alone; `ensure_running` keeps it.
        let running = self.etcd_running().await?;
        if !running && bootstrap.is_some() && member_dir.exists() && !has_wal(&self.data_dir()) {
            // Left by a start that never reached its cluster (no log, no
            // data): set aside, never deleted, and start clean.
            let aside = self
                .cfg
                .state
                .root()
                .join(format!("etcd.unstarted-{}", now_ms() / 1000));
            warn!(aside = %aside.display(), "an earlier etcd start left a member directory without a log; setting it aside");
            std::fs::rename(self.data_dir(), &aside).map_err(|e| {
                format!("etcd: cannot move {} aside: {e}", self.data_dir().display())
            })?;
        }
        let member = MemberConfig {
            name: me.id.clone(),
            ip: self.cfg.ip,
            data_dir: self.data_dir(),
            tls: self.cfg.tls_files.clone(),
            bootstrap,
            heartbeat_ms: self.cfg.heartbeat_ms,
            election_ms: self.cfg.election_ms,
        };
        let spec = ServiceSpec {
            name: SERVICE.into(),
            program: self.cfg.etcd_bin.clone(),
            args: member.args(),
            cpu: CpuShare::Critical,
        };
        self.cfg
            .supervisor
            .ensure_running(&spec)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Whether etcd has a write-ahead log in `data_dir`: a member that once
/// started. A `member` directory without one is what a first start that
/// never reached its cluster leaves (etcd writes `member/snap/db` before it
/// asks its peers); restarting from it would bootstrap a new cluster of one
/// (S1, found by the fault campaign: seed 0x5eed02c7).
fn has_wal(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir.join("member").join("wal")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "wal"))
    })
}

/// Whether each member answers on its client port and knows a leader,
/// probed at once (one probe timeout at most).
async fn member_health(members: &[FoundMember], tls: &EtcdTls) -> Vec<bool> {
    let checks = members.iter().map(|m| {
        let endpoint = m.address().map(client::client_url);
        let (tls, learner) = (tls.clone(), m.is_learner);
        async move {
            match endpoint {
                Some(e) => client::healthy(e, &tls, learner).await,
                None => false,
            }
        }
    });
    futures_join_all(checks).await
}

/// Sets each member's `healthy` from `member_health`.
async fn mark_health(members: &mut [FoundMember], tls: &EtcdTls) {
    let health = member_health(members, tls).await;
    for (m, healthy) in members.iter_mut().zip(health) {
        m.healthy = healthy;
    }
}

/// Waits for all futures (a tiny join_all, to avoid a dependency for it).
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

const ROLE_FILE: &str = "role";

fn read_role(state: &StateDir) -> Option<Role> {
    let text = std::fs::read_to_string(state.root().join(ROLE_FILE)).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn write_role(state: &StateDir, role: Role) {
    let path = state.root().join(ROLE_FILE);
    let body = serde_json::to_string(&role).unwrap_or_default();
    if let Err(e) = std::fs::write(&path, body) {
        warn!("cannot record role in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::has_wal;

    #[test]
    fn only_a_write_ahead_log_counts_as_local_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!has_wal(dir.path()), "nothing");
        // What a first start that never reached its peers leaves.
        std::fs::create_dir_all(dir.path().join("member/snap")).expect("snap");
        std::fs::write(dir.path().join("member/snap/db"), b"").expect("db");
        std::fs::create_dir_all(dir.path().join("member/wal")).expect("wal dir");
        assert!(!has_wal(dir.path()), "a member dir without a log");
        std::fs::write(
            dir.path()
                .join("member/wal/0000000000000000-0000000000000000.wal"),
            b"",
        )
        .expect("wal");
        assert!(has_wal(dir.path()));
    }
}
