//! The etcd phase and the steady-state loop: observe, decide, act, repeat.
//!
//! Each round lists the group, probes the peers' etcd, and asks the pure
//! `formation::decide` / `membership::plan` what to do; this module only
//! carries decisions out. Everything it needs to resume lives on disk, so a
//! killed or restarted agent picks up where it was.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::client::{self, Etcd, EtcdTls};
use super::flags::{Bootstrap, ClusterState, MemberConfig, TlsFiles};
use super::membership::{self, MemberAction, MemberHealth};
use crate::discovery::source::PeerSource;
use crate::discovery::{Lifecycle, Peer};
use crate::formation::{self, Decision, FoundCluster, InitialMember, Observed};
use crate::roles::{self, Role, Topology};
use crate::service::{ServiceSpec, Supervisor};
use crate::state::{EtcdStatus, MemberStatus, Phase, StateDir, Status};

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
    /// The status fields identify and configure filled in.
    pub status: Status,
}

pub struct Runner {
    cfg: RunnerConfig,
    source: PeerSource,
    view_ids: BTreeSet<String>,
    view_stable_since_ms: u64,
    unhealthy_since: HashMap<u64, Instant>,
    role: Option<Role>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The host part of an `https://HOST:PORT` URL.
fn url_host(url: &str) -> Option<&str> {
    url.split("://")
        .nth(1)?
        .rsplit_once(':')
        .map(|(host, _)| host)
}

impl Runner {
    pub fn new(cfg: RunnerConfig, source: PeerSource) -> Runner {
        let role = read_role(&cfg.state);
        Runner {
            cfg,
            source,
            view_ids: BTreeSet::new(),
            view_stable_since_ms: now_ms(),
            unhealthy_since: HashMap::new(),
            role,
        }
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
                self.cfg.status.message = Some(message);
                self.write_status();
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

    fn write_status(&self) {
        if let Err(e) = self.cfg.state.write_status(&self.cfg.status) {
            warn!("cannot write status: {e}");
        }
    }

    async fn round(&mut self) -> Result<(), String> {
        let view = self.source.list().await.map_err(|e| e.to_string())?;
        let ids: BTreeSet<String> = view
            .iter()
            .map(|p| format!("{}/{:?}", p.id, p.lifecycle))
            .collect();
        if ids != self.view_ids {
            self.view_ids = ids;
            self.view_stable_since_ms = now_ms();
        }
        let me = view
            .iter()
            .find(|p| p.address == self.cfg.ip)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "discover: this node's address {} is not among its group's peers",
                    self.cfg.ip
                )
            })?;

        if let Some(role) = self.role.filter(|r| !self.cfg.topology.runs_etcd(*r)) {
            self.cfg.status.role = Some(role.to_string());
            self.cfg.status.phase = Phase::SteadyState;
            self.cfg.status.message = Some("no etcd member on this node".into());
            self.write_status();
            return Ok(());
        }
        if self.cfg.supervisor.is_running(SERVICE) {
            return self.steady(&view).await;
        }

        let clusters = self.probe_peers(&view, &me).await;
        let set = roles::formation_set(self.cfg.topology, &view);
        let settle = self.source.settle_time().as_millis() as u64;
        let observed = Observed {
            cluster_name: &self.cfg.cluster_name,
            me: &me,
            topology: self.cfg.topology,
            sticky_role: self.role,
            view: &view,
            settled: formation::settled(now_ms(), self.view_stable_since_ms, &set, settle),
            local_data: self.data_dir().join("member").exists(),
            clusters: &clusters,
        };
        let decision = formation::decide(&observed);
        self.cfg.status.phase = Phase::Etcd;
        self.act(decision, &me, &clusters).await
    }

    /// Probes every other peer's etcd client port at once.
    async fn probe_peers(&self, view: &[Peer], me: &Peer) -> Vec<FoundCluster> {
        let probes = view
            .iter()
            .filter(|p| {
                p.id != me.id && p.lifecycle != Lifecycle::Leaving && !p.address.is_unspecified()
            })
            .map(|p| {
                let (url, tls) = (client::client_url(p.address), self.cfg.tls.clone());
                async move { client::probe(url, &tls).await }
            });
        let answers: Vec<(Peer, FoundCluster)> = view
            .iter()
            .filter(|p| {
                p.id != me.id && p.lifecycle != Lifecycle::Leaving && !p.address.is_unspecified()
            })
            .cloned()
            .zip(futures_join_all(probes).await)
            .filter_map(|(p, c)| c.map(|c| (p, c)))
            .collect();
        let mut found: Vec<FoundCluster> = Vec::new();
        for (_, cluster) in &answers {
            let cluster = cluster.clone();
            // Several peers answer for the same cluster: keep the view of the
            // one that knows a leader.
            match found
                .iter_mut()
                .find(|c| c.cluster_id == cluster.cluster_id)
            {
                Some(existing) if !existing.has_leader && cluster.has_leader => *existing = cluster,
                Some(_) => {}
                None => found.push(cluster),
            }
        }
        // A member is healthy when its own machine answered for its cluster
        // and that cluster has a leader.
        for cluster in &mut found {
            for m in &mut cluster.members {
                let host = m
                    .peer_urls
                    .first()
                    .and_then(|u| url_host(u))
                    .and_then(|h| h.parse::<Ipv4Addr>().ok());
                m.healthy = answers.iter().any(|(p, c)| {
                    Some(p.address) == host && c.cluster_id == cluster.cluster_id && c.has_leader
                });
            }
        }
        found
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
                self.cfg.status.message = Some(reason);
                self.write_status();
                Ok(())
            }
            Decision::Conflict { cluster_ids } => {
                let ids: Vec<String> = cluster_ids.iter().map(|id| format!("{id:x}")).collect();
                let message = format!(
                    "S1 ALARM: peers answer for {} clusters ({}); touching nothing",
                    ids.len(),
                    ids.join(", ")
                );
                self.cfg.status.phase = Phase::Failed;
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
                    None => self.set_role(Role::Worker),
                }
                Ok(())
            }
        }
    }

    fn set_role(&mut self, role: Role) {
        if self.role != Some(role) {
            self.role = Some(role);
            write_role(&self.cfg.state, role);
        }
        self.cfg.status.role = Some(role.to_string());
        self.write_status();
    }

    /// Adds this node as a learner under the cluster-wide membership lock.
    /// `None` when the cluster filled up meanwhile.
    async fn join(&self, me: &Peer, cluster: &FoundCluster) -> Result<Option<Bootstrap>, String> {
        let endpoints: Vec<String> = cluster
            .members
            .iter()
            .filter_map(|m| {
                m.peer_urls
                    .first()
                    .and_then(|u| url_host(u))
                    .map(client::client_url)
            })
            .collect();
        let mut etcd = Etcd::connect(endpoints, &self.cfg.tls, Duration::from_secs(3))
            .await
            .map_err(|e| e.to_string())?;
        let (key, lease) = etcd
            .lock_membership(15)
            .await
            .map_err(|e| format!("etcd: membership lock: {e}"))?;
        let result = self.add_self(&mut etcd, me).await;
        etcd.unlock_membership(key, lease).await;
        let Some(members) = result? else {
            return Ok(None);
        };
        let my_url = formation::peer_url(me);
        let mut initial: Vec<InitialMember> = members
            .iter()
            .filter_map(|m| {
                let url = m.peer_urls.first()?.clone();
                let name = if url == my_url {
                    me.id.clone()
                } else if m.name.is_empty() {
                    format!("m-{:x}", m.id) // never started yet; etcd matches members by URL
                } else {
                    m.name.clone()
                };
                Some(InitialMember {
                    name,
                    peer_url: url,
                })
            })
            .collect();
        initial.sort();
        let token = formation::token(&self.cfg.cluster_name, &initial);
        Ok(Some(Bootstrap {
            initial,
            state: ClusterState::Existing,
            token,
        }))
    }

    async fn add_self(
        &self,
        etcd: &mut Etcd,
        me: &Peer,
    ) -> Result<Option<Vec<formation::FoundMember>>, String> {
        let my_url = formation::peer_url(me);
        let members = etcd.members().await.map_err(|e| e.to_string())?;
        if !members.iter().any(|m| m.peer_urls.contains(&my_url)) {
            if members.len() >= self.cfg.topology.etcd_members() {
                return Ok(None);
            }
            // etcd refuses reconfiguration for a few seconds after a start or
            // a membership change (strict reconfig check): retry with backoff.
            let policy = crate::retry::Backoff {
                initial: Duration::from_millis(250),
                max_delay: Duration::from_secs(2),
                total: Duration::from_secs(30),
            };
            let id = crate::retry::retry(
                policy,
                |_| true,
                |_| {
                    let url = my_url.clone();
                    let tls = self.cfg.tls.clone();
                    let endpoints: Vec<String> = members
                        .iter()
                        .filter_map(|m| {
                            m.peer_urls
                                .first()
                                .and_then(|u| url_host(u))
                                .map(client::client_url)
                        })
                        .collect();
                    async move {
                        let mut etcd =
                            Etcd::connect(endpoints, &tls, Duration::from_secs(3)).await?;
                        etcd.add_learner(&url).await
                    }
                },
            )
            .await
            .map_err(|g| {
                format!(
                    "etcd: cannot add this node as a learner after {} attempts: {}",
                    g.attempts, g.last
                )
            })?;
            info!(member = %format!("{id:x}"), "added as a learner");
        }
        etcd.members().await.map(Some).map_err(|e| e.to_string())
    }

    async fn start_etcd(&self, me: &Peer, bootstrap: Option<Bootstrap>) -> Result<(), String> {
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
        };
        self.cfg
            .supervisor
            .ensure_running(&spec)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// etcd runs here: report, and if this member leads, heal membership.
    async fn steady(&mut self, view: &[Peer]) -> Result<(), String> {
        let local = client::client_url(Ipv4Addr::LOCALHOST);
        let mut etcd = Etcd::connect(vec![local], &self.cfg.tls, client::PROBE_TIMEOUT)
            .await
            .map_err(|e| format!("etcd: local member not answering yet: {e}"))?;
        let (cluster_id, member_id, leader) = etcd
            .status()
            .await
            .map_err(|e| format!("etcd: local member: {e}"))?;
        let members = etcd
            .members()
            .await
            .map_err(|e| format!("etcd: member list: {e}"))?;

        let checks = members.iter().map(|m| {
            let endpoint = m
                .peer_urls
                .first()
                .and_then(|u| url_host(u))
                .map(client::client_url);
            let tls = self.cfg.tls.clone();
            async move {
                match endpoint {
                    Some(e) => client::healthy(e, &tls).await,
                    None => false,
                }
            }
        });
        let health = futures_join_all(checks).await;
        let now = Instant::now();
        let static_group = matches!(self.source, PeerSource::Static(_));
        let mut observed = Vec::with_capacity(members.len());
        for (m, healthy) in members.iter().zip(&health) {
            let since = *self.unhealthy_since.entry(m.id).or_insert(now);
            if *healthy {
                self.unhealthy_since.insert(m.id, now);
            }
            let address = m
                .peer_urls
                .first()
                .and_then(|u| url_host(u))
                .and_then(|h| h.parse::<Ipv4Addr>().ok());
            let listed = address.is_some_and(|a| {
                view.iter()
                    .any(|p| p.address == a && p.lifecycle != Lifecycle::Leaving)
            });
            observed.push(MemberHealth {
                id: m.id,
                name: m.name.clone(),
                is_learner: m.is_learner,
                healthy: *healthy,
                unhealthy_for_ms: if *healthy {
                    0
                } else {
                    now.duration_since(since).as_millis() as u64
                },
                // A static list cannot tell a dead machine from a slow one;
                // a cloud group can.
                in_group: if static_group && listed {
                    None
                } else {
                    Some(listed)
                },
            });
        }
        self.unhealthy_since
            .retain(|id, _| members.iter().any(|m| m.id == *id));

        let all_healthy = health.iter().all(|h| *h);
        self.cfg.status.phase = if leader != 0 && all_healthy {
            Phase::SteadyState
        } else {
            Phase::Etcd
        };
        self.cfg.status.message = Some(format!(
            "etcd: {} of {} members healthy{}",
            health.iter().filter(|h| **h).count(),
            members.len(),
            if leader == member_id {
                "; this member leads"
            } else {
                ""
            }
        ));
        self.cfg.status.etcd = Some(EtcdStatus {
            cluster_id: format!("{cluster_id:x}"),
            member_id: format!("{member_id:x}"),
            leader_id: format!("{leader:x}"),
            members: members
                .iter()
                .zip(&health)
                .map(|(m, h)| MemberStatus {
                    id: format!("{:x}", m.id),
                    name: m.name.clone(),
                    peer_url: m.peer_urls.first().cloned().unwrap_or_default(),
                    is_learner: m.is_learner,
                    healthy: *h,
                })
                .collect(),
        });
        self.write_status();

        // Only the leader's agent changes membership, so two agents never
        // race to remove members.
        if leader == 0 || leader != member_id {
            return Ok(());
        }
        for action in membership::plan(&observed, self.cfg.replace_after.as_millis() as u64) {
            let result = match &action {
                MemberAction::Remove { id, name, reason } => {
                    warn!(member = %format!("{id:x}"), %name, %reason, "removing a dead member");
                    etcd.remove(*id).await
                }
                MemberAction::Promote { id, name } => {
                    let r = etcd.promote(*id).await;
                    if r.is_ok() {
                        info!(member = %format!("{id:x}"), %name, "promoted learner to voting member");
                    }
                    r
                }
            };
            if let Err(e) = result {
                // A learner not yet caught up refuses promotion: next round.
                info!("membership change {action:?} not done yet: {e}");
            }
        }
        Ok(())
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
