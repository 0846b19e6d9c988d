//! Leaving on purpose: the group terminates this machine (an instance
//! refresh, a scale-in) and holds it in a termination lifecycle hook. Once
//! Kubernetes runs, the agent first waits until its Node is drained (the
//! control-plane agents cordon it and evict its pods: `kubernetes::drain`),
//! at most [`DRAIN_LIMIT`], and until its VIP manager has handed the VIP
//! on (at most [`VIP_RELEASE_LIMIT`]). Then it hands etcd leadership to a healthy
//! voter, removes its own member while the others keep quorum
//! (`membership::leave_plan`), stops etcd, and only then lets the group go
//! on. It refuses while leaving would break quorum, and says so in its
//! status; the hook's timeout is then the operator's decision.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Runner, SERVICE};
use crate::discovery::Peer;
use crate::etcd::client;
use crate::etcd::membership::{self, Leave, MemberHealth};

/// The longest a leaving machine waits for its Node to be drained before
/// it hands off anyway: a PodDisruptionBudget that never allows an
/// eviction must not hold a scale-in forever (the group's hook timeout
/// would end it less gracefully).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// The longest a leaving VIP holder waits for its VIP manager to hand the
/// VIP on (it does so as soon as the runner says the machine is leaving:
/// `VipManager::withdraw_when`) before it removes its member anyway: the
/// API behind the VIP must not lose its etcd member while it answers.
pub const VIP_RELEASE_LIMIT: Duration = Duration::from_secs(10);

/// Where a hand-off stands.
enum HandOff {
    /// etcd no longer counts on this member.
    Done,
    /// A step was taken (or refused); look again next round.
    NotYet,
}

impl Runner {
    /// One round of leaving: hand off while etcd runs here, then complete
    /// the group's lifecycle action (once).
    pub(super) async fn leave(&mut self, me: &Peer, running: bool) -> Result<(), String> {
        // The Node first: its pods move while etcd and the API still run
        // here (a stacked apiserver stops serving once its member is gone).
        let since = *self.leaving_since.get_or_insert_with(Instant::now);
        let drained = self.drained.as_ref().is_none_or(|rx| *rx.borrow());
        if !self.left && !drained {
            if since.elapsed() < DRAIN_LIMIT {
                self.report(|s| {
                    s.message = Some(format!(
                        "leaving: waiting for this machine's Node to be drained (at most {} s)",
                        DRAIN_LIMIT.as_secs()
                    ))
                });
                return Ok(());
            }
            warn!(
                limit_s = DRAIN_LIMIT.as_secs(),
                "leaving: the Node is not drained after the limit; handing off anyway"
            );
            self.drained = None;
        }
        let holds_vip = self
            .vip_role
            .as_ref()
            .is_some_and(|role| *role.borrow() == crate::vip::VipRole::Holder);
        if !self.left && running && holds_vip {
            if since.elapsed() < VIP_RELEASE_LIMIT {
                self.report(|s| s.message = Some("leaving: handing the API VIP on first".into()));
                return Ok(());
            }
            warn!(
                limit_s = VIP_RELEASE_LIMIT.as_secs(),
                "leaving: this node still holds the VIP after the limit; handing off etcd anyway"
            );
            self.vip_role = None;
        }
        if !self.left {
            if running {
                match self.hand_off().await? {
                    HandOff::Done => self.left = true,
                    HandOff::NotYet => return Ok(()),
                }
            } else {
                // No member runs here: the leader's plan removes it once
                // the machine is gone, as for any lost member.
                self.left = true;
            }
        }
        let hooks = self
            .source
            .let_go(&me.id)
            .await
            .map_err(|e| format!("leaving: cannot complete the termination hook: {e}"))?;
        self.let_go = true;
        info!(
            hooks,
            "handed off; the group may terminate this machine now"
        );
        self.report(|s| {
            s.message = Some(format!(
                "left the etcd cluster; completed {hooks} termination lifecycle hook(s): the group may terminate this machine"
            ))
        });
        Ok(())
    }

    async fn hand_off(&mut self) -> Result<HandOff, String> {
        let super::LocalView {
            mut etcd,
            member_id,
            leader,
            members,
            health,
            ..
        } = self.local_view("leaving").await?;
        let observed: Vec<MemberHealth> = members
            .iter()
            .zip(&health)
            .map(|(m, healthy)| MemberHealth {
                id: m.id,
                name: m.name.clone(),
                is_learner: m.is_learner,
                healthy: *healthy,
                unhealthy_for_ms: 0,
                in_group: None,
            })
            .collect();
        match membership::leave_plan(&observed, member_id, leader) {
            Leave::MoveLeader { to } => {
                info!(to = %format!("{to:x}"), "leaving: handing etcd leadership over first");
                etcd.move_leader(to)
                    .await
                    .map_err(|e| format!("leaving: move leader to {to:x}: {e}"))?;
                Ok(HandOff::NotYet)
            }
            Leave::Refuse { reason } => {
                warn!(%reason, "refusing to leave the etcd cluster");
                self.report(|s| s.message = Some(format!("refusing to leave: {reason}")));
                Ok(HandOff::NotYet)
            }
            Leave::RemoveSelf => {
                let (key, lease) = etcd
                    .lock(client::MEMBERSHIP_LOCK, 15)
                    .await
                    .map_err(|e| format!("leaving: membership lock: {e}"))?;
                let removed = etcd.remove(member_id).await;
                etcd.unlock(key, lease).await;
                removed.map_err(|e| format!("leaving: remove member {member_id:x}: {e}"))?;
                info!(member = %format!("{member_id:x}"), "leaving: removed this member from the etcd cluster");
                self.stop_local_etcd().await;
                Ok(HandOff::Done)
            }
            Leave::Gone => {
                self.stop_local_etcd().await;
                Ok(HandOff::Done)
            }
        }
    }

    async fn stop_local_etcd(&self) {
        if let Err(e) = self.cfg.supervisor.stop(SERVICE).await {
            warn!("leaving: cannot stop etcd: {e}");
        }
    }
}
