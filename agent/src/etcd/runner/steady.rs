//! The steady-state round: report the cluster in the status file and, on
//! the leader's agent only, carry out the membership plan (S3).

use std::time::Instant;

use tracing::{info, warn};

use super::Runner;
use crate::discovery::Peer;
use crate::discovery::source::PeerSource;
use crate::etcd::membership::{self, MemberAction, MemberHealth};
use crate::etcd::pacing;
use crate::state::{EtcdStatus, MemberStatus, Phase};

impl Runner {
    /// etcd runs here: report, and if this member leads, heal membership.
    pub(super) async fn steady(&mut self, view: &[Peer]) -> Result<(), String> {
        let super::LocalView {
            mut etcd,
            cluster_id,
            member_id,
            leader,
            members,
            health,
        } = self.local_view("etcd").await?;
        // Learners still catching up do not serve, but answer their peers.
        let answering = self.pool.learners_answering(&members, &health).await;
        let now = Instant::now();
        let static_group = matches!(self.source, PeerSource::Static(_));
        let mut observed = Vec::with_capacity(members.len());
        for ((m, healthy), answering) in members.iter().zip(&health).zip(&answering) {
            let catching_up = if m.is_learner && !healthy {
                let since = *self.learner_not_serving_since.entry(m.id).or_insert(now);
                let for_ms = now.duration_since(since).as_millis() as u64;
                membership::learner_alive(*answering, for_ms)
            } else {
                false
            };
            if *healthy || catching_up {
                self.unhealthy_since.insert(m.id, now);
            }
            let since = *self.unhealthy_since.entry(m.id).or_insert(now);
            let address = m.address();
            let listed = address.is_some_and(|a| in_group(view, a));
            let listed_before = self.seen_in_group.contains(&m.id);
            if listed {
                self.seen_in_group.insert(m.id);
            }
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
                in_group: membership::group_verdict(static_group, listed, listed_before),
            });
        }
        self.unhealthy_since
            .retain(|id, _| members.iter().any(|m| m.id == *id));
        self.learner_not_serving_since
            .retain(|id, _| members.iter().zip(&health).any(|(m, h)| m.id == *id && !h));
        self.seen_in_group
            .retain(|id| members.iter().any(|m| m.id == *id));

        let all_healthy = health.iter().all(|h| *h);
        let phase = if leader != 0 && all_healthy {
            Phase::SteadyState
        } else {
            Phase::Etcd
        };
        let message = format!(
            "etcd: {} of {} members healthy{}",
            health.iter().filter(|h| **h).count(),
            members.len(),
            if leader == member_id {
                "; this member leads"
            } else {
                ""
            }
        );
        let etcd_status = EtcdStatus {
            cluster_id: format!("{cluster_id:x}"),
            member_id: format!("{member_id:x}"),
            leader_id: format!("{leader:x}"),
            members: members
                .iter()
                .zip(&health)
                .zip(&answering)
                .map(|((m, h), answering)| MemberStatus {
                    id: format!("{:x}", m.id),
                    name: m.name.clone(),
                    peer_url: m.peer_urls.first().cloned().unwrap_or_default(),
                    is_learner: m.is_learner,
                    healthy: *h,
                    catching_up: *answering,
                })
                .collect(),
        };
        self.report(|s| {
            s.phase = phase;
            s.message = Some(message);
            s.etcd = Some(etcd_status);
        });

        // A member that does not serve is silent, even if it answers status
        // and lists members from memory (a removed member's process does):
        // the caller then checks whether the cluster still lists it.
        let serving = members
            .iter()
            .zip(&health)
            .any(|(m, healthy)| m.id == member_id && *healthy);
        if !serving {
            return Err(format!(
                "etcd: the local member {member_id:x} does not serve (no leader, or its server stopped)"
            ));
        }
        let wanted = self.cfg.topology.etcd_members();
        if pacing::calm(&observed, leader, wanted) {
            self.calm_until = Some(now + pacing::CALM_ROUND_EVERY);
        }
        // Only the leader's agent changes membership, so two agents never
        // race to remove members.
        if leader == 0 || leader != member_id {
            return Ok(());
        }
        for action in membership::plan(
            &observed,
            membership::Policy {
                wanted,
                grace_ms: self.cfg.replace_after.as_millis() as u64,
                leader,
            },
        ) {
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

/// Whether the group lists a machine at `address`, in any lifecycle state.
/// A machine leaving on purpose is still in the group: its own agent hands
/// its member off, after its Node is drained, and the drain needs the
/// member (a stacked apiserver reads through it). Counting it as gone had
/// the leader remove it in the middle of a drain (a `lab upgrade` run,
/// 2026-12-06). A leaving agent that died is removed once unreachable for
/// the grace, or once the group drops its machine. Pure.
pub fn in_group(view: &[Peer], address: std::net::Ipv4Addr) -> bool {
    view.iter().any(|p| p.address == address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Lifecycle;

    #[test]
    fn a_machine_leaving_on_purpose_is_still_in_the_group() {
        let peer = |ip: [u8; 4], lifecycle| Peer {
            id: format!("i-{}", ip[3]),
            address: ip.into(),
            launched_at_ms: None,
            lifecycle,
        };
        let view = [
            peer([10, 0, 0, 1], Lifecycle::InService),
            peer([10, 0, 0, 2], Lifecycle::Leaving),
        ];
        assert!(in_group(&view, [10, 0, 0, 1].into()));
        assert!(in_group(&view, [10, 0, 0, 2].into()));
        assert!(!in_group(&view, [10, 0, 0, 3].into()));
    }
}
