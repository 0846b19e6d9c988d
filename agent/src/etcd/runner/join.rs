//! Joining a running cluster: add this node as a learner under the
//! cluster-wide membership lock, then start it with the full member list.

use std::time::Duration;

use tracing::info;

use super::Runner;
use crate::discovery::Peer;
use crate::etcd::client::{self, Etcd};
use crate::etcd::flags::{Bootstrap, ClusterState};
use crate::formation::{self, FoundCluster, InitialMember};

impl Runner {
    /// Adds this node as a learner under the cluster-wide membership lock.
    /// `None` when the cluster filled up meanwhile.
    pub(super) async fn join(
        &self,
        me: &Peer,
        cluster: &FoundCluster,
    ) -> Result<Option<Bootstrap>, String> {
        let endpoints: Vec<String> = cluster
            .members
            .iter()
            .filter_map(|m| m.address().map(client::client_url))
            .collect();
        let mut etcd = Etcd::connect(endpoints, &self.cfg.tls, Duration::from_secs(3))
            .await
            .map_err(|e| e.to_string())?;
        let (key, lease) = etcd
            .lock(client::MEMBERSHIP_LOCK, 15)
            .await
            .map_err(|e| format!("etcd: membership lock: {e}"))?;
        let result = self.add_self(&mut etcd, me).await;
        etcd.unlock(key, lease).await;
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
            // Again under the lock: another node may have taken the seat.
            let mut now = formation::FoundCluster {
                cluster_id: 0,
                members: members.clone(),
                has_leader: true,
            };
            super::mark_health(&mut now.members, &self.cfg.tls).await;
            if let Err(why) = formation::room_to_join(self.cfg.topology, &now) {
                info!("not joining after all: {why}");
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
                        .filter_map(|m| m.address().map(client::client_url))
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
}
