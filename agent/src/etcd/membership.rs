//! Member replacement — which dead members to remove, which learners to promote.
//!
//! Pure: `plan` takes the member list with health and group membership and
//! returns actions. It holds invariant S3: a removal is planned only if the
//! remaining healthy voting members still have quorum afterwards, and at most
//! one removal per round (the next round re-observes).
//!
//! Add before remove. A voter that is merely unreachable (a static list
//! cannot tell dead from slow, a stopped cloud instance may start again) is
//! removed only when the cluster still survives one more failure after the
//! removal — in practice once a replacement holds a seat. Removing it
//! earlier gains no failure tolerance (it is 0 either way: 3 voters with one
//! down, or 2 voters) and loses the chance that the machine comes back: the
//! fault campaign's seed 0xc0de0006 removed a powered-off voter of three,
//! then lost another for good, and the cluster never had quorum again.
//! A voter whose machine the group says is gone is removed as soon as S3
//! allows: it cannot come back.

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

/// What the plan is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Voting members the topology asks for.
    pub wanted: usize,
    /// How long a member may be unreachable before it counts as gone.
    pub grace_ms: u64,
    /// The member that leads (its agent runs the plan; it never removes
    /// itself).
    pub leader: u64,
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

/// How long a learner may take to answer before it counts as gone, at
/// least. A new member first reads the cluster from its peers and checks
/// every member's version before it serves; each dead member still listed
/// costs etcd's peer dial timeout (1 s plus the election timeout). Tier 1
/// measured 5 s and more with two dead voters listed, and a learner removed
/// for that joins again, round after round. The clock runs only while the
/// learner shows no sign of life either ([`learner_alive`]).
pub const LEARNER_START_MS: u64 = 30_000;

/// How long a learner may catch up (answer on its peer URL without
/// serving) before its answers stop counting. A learner's process
/// answers while it applies the log, and etcd allows one learner at a
/// time: one that never finishes would hold the seat for ever. Catch-ups
/// measured: seconds on real machines, about a minute for a lab VM under
/// TCG (docs/benchmarks.md); this is far above both.
pub const LEARNER_CATCH_UP_MS: u64 = 15 * 60_000;

/// Whether a learner that does not serve counts as alive this round: its
/// etcd answers on its peer URL (it is catching up: etcd opens the client
/// URL only once the log is applied), and it has not been at it for longer
/// than `LEARNER_CATCH_UP_MS`. An alive learner's grace starts again. Under
/// TCG the grace used to run out while a learner caught up: a `lab
/// upgrade` run removed one replacement's learner twice, 61 s after each
/// add, and each new learner had the leader send the whole log again
/// (2026-12-07, docs/benchmarks.md). Pure.
pub fn learner_alive(answers_peers: bool, not_serving_for_ms: u64) -> bool {
    answers_peers && not_serving_for_ms < LEARNER_CATCH_UP_MS
}

/// Whether a member counts as gone: its machine left the group, or it has
/// been unreachable for at least `grace_ms` (a learner: `LEARNER_START_MS`
/// at least).
fn is_gone(m: &MemberHealth, grace_ms: u64) -> Option<String> {
    if m.healthy {
        return None;
    }
    if m.in_group == Some(false) {
        return Some("its machine left the group".into());
    }
    let grace_ms = if m.is_learner {
        grace_ms.max(LEARNER_START_MS)
    } else {
        grace_ms
    };
    (m.unhealthy_for_ms >= grace_ms).then(|| {
        format!(
            "unreachable for {} s (grace {} s)",
            m.unhealthy_for_ms / 1000,
            grace_ms / 1000
        )
    })
}

/// What the group says of a member's machine (`MemberHealth::in_group`).
/// A static list cannot tell a dead machine from a slow one (`None` while
/// listed); a cloud group can. A machine a cloud group has never listed is
/// not known to be gone: a lagging group API lists a new machine seconds
/// after its agent joined (stale discovery), and removing the newcomer for
/// that would only make it join again.
pub fn group_verdict(static_list: bool, listed: bool, listed_before: bool) -> Option<bool> {
    match (static_list, listed) {
        (true, true) => None,
        (true, false) => Some(false),
        (false, true) => Some(true),
        (false, false) => listed_before.then_some(false),
    }
}

fn remove(m: &MemberHealth, reason: String) -> MemberAction {
    MemberAction::Remove {
        id: m.id,
        name: m.name.clone(),
        reason,
    }
}

/// Plans this round's changes.
pub fn plan(members: &[MemberHealth], policy: Policy) -> Vec<MemberAction> {
    let mut actions = Vec::new();
    let voters: Vec<&MemberHealth> = members.iter().filter(|m| !m.is_learner).collect();
    let healthy_voters = voters.iter().filter(|m| m.healthy).count();
    let seat_open = voters.len() < policy.wanted || healthy_voters < voters.len();

    // Learners do not count towards quorum: removing them is always safe.
    let learners: Vec<&MemberHealth> = members.iter().filter(|m| m.is_learner).collect();
    for m in &learners {
        if let Some(reason) = is_gone(m, policy.grace_ms) {
            actions.push(remove(m, reason));
        } else if !seat_open {
            // It came for a down voter's seat and the voter is back.
            actions.push(remove(
                m,
                format!(
                    "not needed: all {} voters healthy ({} wanted)",
                    voters.len(),
                    policy.wanted
                ),
            ));
        } else if m.healthy {
            actions.push(MemberAction::Promote {
                id: m.id,
                name: m.name.clone(),
            });
        }
    }

    // One voter at a time, and only with quorum now (without it etcd could
    // not commit a removal anyway). Machines the group says are gone first.
    if healthy_voters < quorum(voters.len()) || voters.len() < 2 {
        return actions;
    }
    let remaining = voters.len() - 1;
    let gone = voters
        .iter()
        .filter_map(|m| is_gone(m, policy.grace_ms).map(|r| (*m, r)))
        .min_by_key(|(m, _)| m.in_group != Some(false));
    if let Some((m, reason)) = gone {
        let left_the_group = m.in_group == Some(false);
        // S3 for every removal; add before remove for a voter that may
        // come back.
        let needed = quorum(remaining) + usize::from(!left_the_group);
        if healthy_voters >= needed {
            actions.push(remove(m, reason));
        }
    } else if voters.len() > policy.wanted && healthy_voters == voters.len() && learners.is_empty()
    {
        // Over size: a down voter came back after its replacement was
        // promoted. Back to the configured size; any choice is safe with
        // every voter healthy, the highest id is a fixed one.
        if let Some(m) = voters
            .iter()
            .filter(|m| m.id != policy.leader)
            .max_by_key(|m| m.id)
        {
            actions.push(remove(
                m,
                format!(
                    "over size: {} healthy voters, {} wanted",
                    voters.len(),
                    policy.wanted
                ),
            ));
        }
    }
    actions
}

/// The next step of a member whose machine is being terminated on purpose
/// (its group holds it in a termination lifecycle hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// Hand leadership to this healthy voter first: removing the leader
    /// costs an election, a transfer costs one round trip.
    MoveLeader { to: u64 },
    /// Remove this member: the others keep quorum without it.
    RemoveSelf,
    /// Stay: leaving now would break quorum (S3); say why.
    Refuse { reason: String },
    /// The cluster no longer lists this member.
    Gone,
}

/// What member `me` does to leave, with `leader` leading (pure).
pub fn leave_plan(members: &[MemberHealth], me: u64, leader: u64) -> Leave {
    let Some(mine) = members.iter().find(|m| m.id == me) else {
        return Leave::Gone;
    };
    if mine.is_learner {
        // Learners never count towards quorum.
        return Leave::RemoveSelf;
    }
    let others: Vec<&MemberHealth> = members
        .iter()
        .filter(|m| !m.is_learner && m.id != me)
        .collect();
    if others.is_empty() {
        return Leave::Refuse {
            reason: "this is the only voting member: leaving would end the cluster".into(),
        };
    }
    let healthy: Vec<&MemberHealth> = others.iter().copied().filter(|m| m.healthy).collect();
    let needed = quorum(others.len());
    if healthy.len() < needed {
        return Leave::Refuse {
            reason: format!(
                "leaving would break quorum: {} of the other {} voters are healthy, {needed} needed",
                healthy.len(),
                others.len()
            ),
        };
    }
    if leader == me
        && let Some(to) = healthy.iter().map(|m| m.id).min()
    {
        return Leave::MoveLeader { to };
    }
    Leave::RemoveSelf
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

    fn learner(id: u64, healthy: bool) -> MemberHealth {
        MemberHealth {
            is_learner: true,
            ..member(id, healthy, if healthy { 0 } else { 1 })
        }
    }

    /// Leader 1, `wanted` voters, grace `grace_ms`.
    fn policy(wanted: usize, grace_ms: u64) -> Policy {
        Policy {
            wanted,
            grace_ms,
            leader: 1,
        }
    }

    fn removed(actions: &[MemberAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                MemberAction::Remove { id, .. } => Some(*id),
                MemberAction::Promote { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_machine_a_cloud_group_never_listed_is_not_known_gone() {
        assert_eq!(group_verdict(false, false, false), None);
        assert_eq!(group_verdict(false, false, true), Some(false));
        assert_eq!(group_verdict(false, true, false), Some(true));
        assert_eq!(group_verdict(true, true, false), None);
        assert_eq!(group_verdict(true, false, false), Some(false));
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3]);
    }

    #[test]
    fn an_unreachable_voter_of_three_keeps_its_seat_until_a_replacement_holds_one() {
        // Seed 0xc0de0006: removing it would leave 2 of 2 (no tolerance
        // gained) and lose the chance that it comes back.
        let three = [
            member(1, true, 0),
            member(2, true, 0),
            member(3, false, 99_000),
        ];
        assert!(plan(&three, policy(3, 10_000)).is_empty());
        // The replacement is promoted: now the dead one goes, after the grace.
        let mut four = three.to_vec();
        four.push(member(4, true, 0));
        four[2].unhealthy_for_ms = 5_000;
        assert!(
            plan(&four, policy(3, 10_000)).is_empty(),
            "inside the grace period nothing happens"
        );
        four[2].unhealthy_for_ms = 10_000;
        assert_eq!(removed(&plan(&four, policy(3, 10_000))), [3]);
    }

    #[test]
    fn a_machine_that_left_the_group_is_removed_at_once() {
        let mut gone = member(3, false, 0);
        gone.in_group = Some(false);
        let members = [member(1, true, 0), member(2, true, 0), gone];
        assert_eq!(removed(&plan(&members, policy(3, 60_000))), [3]);
    }

    #[test]
    fn one_unreachable_voter_of_five_is_removed_after_the_grace() {
        // 4 of 4 after: still survives a failure.
        let members: Vec<_> = (1..=5).map(|i| member(i, i != 5, 99_000)).collect();
        assert_eq!(removed(&plan(&members, policy(5, 1_000))), [5]);
    }

    #[test]
    fn two_dead_of_three_removes_nothing() {
        let members = [
            member(1, true, 0),
            member(2, false, 99_000),
            member(3, false, 99_000),
        ];
        assert!(plan(&members, policy(3, 1_000)).is_empty());
        let (mut a, mut b) = (members[1].clone(), members[2].clone());
        a.in_group = Some(false);
        b.in_group = Some(false);
        assert!(
            plan(&[members[0].clone(), a, b], policy(3, 1_000)).is_empty(),
            "not even machines known to be gone: no quorum"
        );
    }

    #[test]
    fn only_one_voter_is_removed_per_round_and_known_gone_first() {
        let mut members: Vec<_> = (1..=7).map(|i| member(i, i <= 5, 99_000)).collect();
        members[6].in_group = Some(false);
        assert_eq!(removed(&plan(&members, policy(5, 1_000))), [7]);
    }

    #[test]
    fn a_learner_that_answers_its_peers_is_alive_until_the_catch_up_limit() {
        assert!(learner_alive(true, 0));
        assert!(learner_alive(true, LEARNER_CATCH_UP_MS - 1));
        assert!(
            !learner_alive(true, LEARNER_CATCH_UP_MS),
            "stuck: its seat is freed"
        );
        assert!(!learner_alive(false, 0), "silent");
    }

    #[test]
    fn healthy_learners_are_promoted_and_dead_learners_removed() {
        let members = [
            member(1, true, 0),
            member(2, true, 0),
            learner(4, true),
            MemberHealth {
                unhealthy_for_ms: LEARNER_START_MS,
                ..learner(5, false)
            },
            // A learner still starting gets more than the grace.
            MemberHealth {
                unhealthy_for_ms: 29_000,
                ..learner(6, false)
            },
        ];
        let actions = plan(&members, policy(3, 1_000));
        assert!(actions.contains(&MemberAction::Promote {
            id: 4,
            name: "m4".into()
        }));
        assert_eq!(removed(&actions), [5]);
    }

    #[test]
    fn a_learner_for_a_seat_that_is_no_longer_open_is_removed_not_promoted() {
        // It joined while voter 3 was down; voter 3 is back.
        let members = [
            member(1, true, 0),
            member(2, true, 0),
            member(3, true, 0),
            learner(4, true),
        ];
        let actions = plan(&members, policy(3, 1_000));
        assert_eq!(removed(&actions), [4]);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, MemberAction::Promote { .. }))
        );
        // While voter 3 is still down it is promoted.
        let mut down = members.clone();
        down[2] = member(3, false, 500);
        assert_eq!(
            plan(&down, policy(3, 1_000)),
            [MemberAction::Promote {
                id: 4,
                name: "m4".into()
            }]
        );
    }

    #[test]
    fn over_size_with_every_voter_healthy_shrinks_by_one_never_the_leader() {
        let members: Vec<_> = (1..=4).map(|i| member(i, true, 0)).collect();
        assert_eq!(removed(&plan(&members, policy(3, 1_000))), [4]);
        let led_by_4 = Policy {
            leader: 4,
            ..policy(3, 1_000)
        };
        assert_eq!(removed(&plan(&members, led_by_4)), [3]);
        // Not while one is down (it goes first, after its grace) or a
        // learner is pending.
        let mut down = members.clone();
        down[1] = member(2, false, 10);
        assert!(plan(&down, policy(3, 1_000)).is_empty());
        assert!(plan(&members, policy(4, 1_000)).is_empty(), "at size");
    }

    /// S3 and add-before-remove over every small cluster: a planned removal
    /// always leaves a quorum of healthy voters, and an unreachable voter
    /// (not known gone) is removed only if one more failure is survivable.
    #[test]
    fn every_removal_keeps_quorum_and_unreachable_ones_keep_a_margin() {
        for n in 1..=6usize {
            for healthy_mask in 0..(1u32 << n) {
                for gone_mask in 0..(1u32 << n) {
                    let members: Vec<_> = (0..n)
                        .map(|i| {
                            let mut m = member(i as u64 + 1, healthy_mask & (1 << i) != 0, 99_000);
                            if gone_mask & (1 << i) != 0 {
                                m.in_group = Some(false);
                            }
                            m
                        })
                        .collect();
                    let healthy = members.iter().filter(|m| m.healthy).count();
                    for wanted in [3, 5] {
                        let ids = removed(&plan(&members, policy(wanted, 1_000)));
                        assert!(ids.len() <= 1, "one per round");
                        for id in ids {
                            let m = &members[id as usize - 1];
                            let healthy_after = healthy - usize::from(m.healthy);
                            assert!(healthy_after >= quorum(n - 1), "S3: {members:?}");
                            if m.in_group != Some(false) && !m.healthy {
                                assert!(healthy_after > quorum(n - 1), "margin: {members:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_leaving_member_hands_over_leadership_then_removes_itself_while_quorum_holds() {
        let three = [member(1, true, 0), member(2, true, 0), member(3, true, 0)];
        assert_eq!(leave_plan(&three, 1, 1), Leave::MoveLeader { to: 2 });
        assert_eq!(leave_plan(&three, 3, 1), Leave::RemoveSelf);
        // One other voter down: 1 of 2 left healthy, 2 needed.
        let one_down = [
            member(1, true, 0),
            member(2, false, 9_000),
            member(3, true, 0),
        ];
        assert!(matches!(
            leave_plan(&one_down, 3, 1),
            Leave::Refuse { reason } if reason.contains("1 of the other 2")
        ));
        // Five voters, one down: the other four keep 3 of 4 healthy.
        let five = [
            member(1, true, 0),
            member(2, false, 9_000),
            member(3, true, 0),
            member(4, true, 0),
            member(5, true, 0),
        ];
        assert_eq!(leave_plan(&five, 5, 1), Leave::RemoveSelf);
        // The leader hands over to a healthy voter, never to the down one.
        assert_eq!(leave_plan(&five, 1, 1), Leave::MoveLeader { to: 3 });
        // A learner just goes; a lone voter stays; a removed member is gone.
        let with_learner = [member(1, true, 0), learner(4, true)];
        assert_eq!(leave_plan(&with_learner, 4, 1), Leave::RemoveSelf);
        assert!(matches!(
            leave_plan(&[member(1, true, 0)], 1, 1),
            Leave::Refuse { .. }
        ));
        assert_eq!(leave_plan(&three, 9, 1), Leave::Gone);
    }
}
