//! Member replacement — which dead members to remove, which learners to promote.
//!
//! Pure: `plan` takes the member list with health and group membership and
//! returns actions. It holds invariant S3: a removal is planned only if the
//! remaining healthy voting members still have quorum afterwards, and at most
//! one removal per round (the next round re-observes).

use serde::{Deserialize, Serialize};

/// One member as observed by the leader's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    pub id: u64,
    pub name: String,
    pub is_learner: bool,
    /// Answered a health probe this round.
    pub healthy: bool,
    /// How long it has been unhealthy without a break, in milliseconds.
    pub unhealthy_for_ms: u64,
    /// Its machine is still in the group (`None`: the source cannot tell,
    /// e.g. a static peer list).
    pub in_group: Option<bool>,
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum MemberAction {
    Remove {
        id: u64,
        name: String,
        reason: String,
    },
    Promote {
        id: u64,
        name: String,
    },
}

/// Smallest majority of `n` voters.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// Whether a member counts as gone: its machine left the group, or it has
/// been unreachable for at least `grace_ms`.
fn is_gone(m: &MemberHealth, grace_ms: u64) -> Option<String> {
    if m.healthy {
        return None;
    }
    if m.in_group == Some(false) {
        return Some("its machine left the group".into());
    }
    (m.unhealthy_for_ms >= grace_ms).then(|| {
        format!(
            "unreachable for {} s (grace {} s)",
            m.unhealthy_for_ms / 1000,
            grace_ms / 1000
        )
    })
}

/// Plans this round's changes.
pub fn plan(members: &[MemberHealth], grace_ms: u64) -> Vec<MemberAction> {
    let mut actions = Vec::new();
    let voters: Vec<&MemberHealth> = members.iter().filter(|m| !m.is_learner).collect();
    let healthy_voters = voters.iter().filter(|m| m.healthy).count();

    // Gone learners do not count towards quorum: removing them is always safe.
    for m in members.iter().filter(|m| m.is_learner) {
        if let Some(reason) = is_gone(m, grace_ms) {
            actions.push(MemberAction::Remove {
                id: m.id,
                name: m.name.clone(),
                reason,
            });
        }
    }
    // One voter at a time, and only if the healthy ones keep quorum after.
    // (Without quorum now, etcd could not commit a removal anyway.)
    if healthy_voters >= quorum(voters.len())
        && let Some((m, reason)) = voters
            .iter()
            .find_map(|m| is_gone(m, grace_ms).map(|r| (m, r)))
    {
        let remaining = voters.len() - 1;
        if remaining > 0 && healthy_voters >= quorum(remaining) {
            actions.push(MemberAction::Remove {
                id: m.id,
                name: m.name.clone(),
                reason,
            });
        }
    }
    for m in members.iter().filter(|m| m.is_learner && m.healthy) {
        actions.push(MemberAction::Promote {
            id: m.id,
            name: m.name.clone(),
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, healthy: bool, unhealthy_for_ms: u64) -> MemberHealth {
        MemberHealth {
            id,
            name: format!("m{id}"),
            is_learner: false,
            healthy,
            unhealthy_for_ms,
            in_group: None,
        }
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3]);
    }

    #[test]
    fn one_dead_of_three_is_removed_after_the_grace_period() {
        let members = [
            member(1, true, 0),
            member(2, true, 0),
            member(3, false, 5_000),
        ];
        assert!(
            plan(&members, 10_000).is_empty(),
            "inside the grace period nothing happens"
        );
        let members = [
            member(1, true, 0),
            member(2, true, 0),
            member(3, false, 10_000),
        ];
        assert!(matches!(
            plan(&members, 10_000)[..],
            [MemberAction::Remove { id: 3, .. }]
        ));
    }

    #[test]
    fn a_machine_that_left_the_group_is_removed_at_once() {
        let mut gone = member(3, false, 0);
        gone.in_group = Some(false);
        let members = [member(1, true, 0), member(2, true, 0), gone];
        assert!(matches!(
            plan(&members, 60_000)[..],
            [MemberAction::Remove { id: 3, .. }]
        ));
    }

    #[test]
    fn two_dead_of_three_removes_nothing() {
        let members = [
            member(1, true, 0),
            member(2, false, 99_000),
            member(3, false, 99_000),
        ];
        assert!(plan(&members, 1_000).is_empty());
    }

    #[test]
    fn only_one_voter_is_removed_per_round() {
        let members: Vec<_> = (1..=5).map(|i| member(i, i <= 3, 99_000)).collect();
        let removals = plan(&members, 1_000)
            .iter()
            .filter(|a| matches!(a, MemberAction::Remove { .. }))
            .count();
        assert_eq!(removals, 1);
    }

    #[test]
    fn healthy_learners_are_promoted_and_dead_learners_removed() {
        let mut learner = member(4, true, 0);
        learner.is_learner = true;
        let mut dead_learner = member(5, false, 99_000);
        dead_learner.is_learner = true;
        let members = [
            member(1, true, 0),
            member(2, true, 0),
            member(3, true, 0),
            learner,
            dead_learner,
        ];
        let actions = plan(&members, 1_000);
        assert!(actions.contains(&MemberAction::Promote {
            id: 4,
            name: "m4".into()
        }));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, MemberAction::Remove { id: 5, .. }))
        );
    }
}
