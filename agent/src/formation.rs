//! etcd formation — form a new cluster, start as a listed member, join, or wait.
//!
//! `decide` is a pure function from what this node observed to one decision,
//! so the rules that keep invariant S1 (one cluster per name) and S2 (no lost
//! data) are tested by simulation (`tests/bootstrap_simulation.rs`) without
//! machines. The argument for S1 is written in docs/design/bootstrap.md.
//!
//! The rules, in order — the first that applies wins:
//! 1. A local etcd data directory exists → restart that member (never `new`
//!    over existing data, S2) — unless a cluster with a leader answers and no
//!    longer lists this member: it was removed while away, so set its data
//!    aside (kept, not deleted) and join afresh.
//! 2. Peers answer for more than one cluster → refuse to act (and alarm).
//! 3. A cluster answers → it decides (a running cluster always goes first):
//!    listed without data → start as that member; not listed and the cluster
//!    wants more members → join as a learner; otherwise no etcd here.
//! 4. No cluster answers: until this node's view has settled, wait.
//! 5. Settled, seeing at least N etcd candidates, and among the first N in
//!    the total order of `roles` → form with exactly that set; else wait.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::discovery::Peer;
use crate::roles::{self, Role, Topology};

/// The etcd peer port.
pub const PEER_PORT: u16 = 2380;
/// The etcd client port.
pub const CLIENT_PORT: u16 = 2379;

/// One member as an etcd cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundMember {
    pub id: u64,
    /// Empty until the member has started once (etcd 3.5 behaviour).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
    /// Answered this round's probe as part of this cluster.
    #[serde(default)]
    pub healthy: bool,
}

impl FoundMember {
    /// The member's machine: the host of its (first) peer URL, which Muster
    /// always writes as an IPv4 address (`peer_url`).
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        let url = self.peer_urls.first()?;
        let (host, _port) = url.split("://").nth(1)?.rsplit_once(':')?;
        host.parse().ok()
    }
}

/// A cluster that answered a probe of a peer's etcd client port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundCluster {
    pub cluster_id: u64,
    pub members: Vec<FoundMember>,
    /// Whether the member that answered knows a leader and serves reads: a
    /// cluster still forming has none, and neither does the stale memory of
    /// a removed member's process.
    pub has_leader: bool,
}

/// Everything `decide` looks at.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub cluster_name: &'a str,
    pub me: &'a Peer,
    pub topology: Topology,
    /// The role this node already holds (persisted), if any.
    pub sticky_role: Option<Role>,
    /// This node's view of its group (itself included).
    pub view: &'a [Peer],
    /// The view has stopped changing and the settle time since this node's
    /// launch has passed (see bootstrap.md for why this matters).
    pub settled: bool,
    /// The local etcd data directory exists.
    pub local_data: bool,
    /// Clusters found by probing the peers' etcd client ports.
    pub clusters: &'a [FoundCluster],
    /// `etcd.restore`, resolved against the backup store by the runner when
    /// a new cluster may have to be formed; `None`: form an empty one.
    pub restore: Option<&'a RestoreSource>,
}

/// The snapshot a new cluster is formed from (docs/design/backup.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// This snapshot (its file name in the store).
    Ready { snapshot: String },
    /// Not now, and why (no snapshot, a live cluster may still write them,
    /// the store does not answer).
    Blocked { reason: String },
}

/// A member of the initial cluster: etcd name and peer URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InitialMember {
    pub name: String,
    pub peer_url: String,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// Restart the member whose data is on disk.
    Restart,
    /// This member was removed from the cluster while it was away: move its
    /// data directory aside (never delete it) and decide again.
    Retire { cluster_id: u64 },
    /// Start a brand-new cluster with exactly these members.
    Form {
        initial: Vec<InitialMember>,
        token: String,
    },
    /// This node is listed in a running cluster but has no data: start it as
    /// that member (`existing` when the cluster has a leader, else `new` with
    /// the forming cluster's set and token).
    StartListed {
        cluster_id: u64,
        initial: Vec<InitialMember>,
        token: String,
        existing: bool,
    },
    /// Restore `snapshot` as this node's member of a new cluster with
    /// exactly these members (every member of the set restores the same
    /// snapshot: etcd's own procedure). `into_cluster`: go ahead only if
    /// the restore yields this cluster id (a forming restored cluster this
    /// node is listed in); otherwise set the restore aside.
    Restore {
        snapshot: String,
        initial: Vec<InitialMember>,
        token: String,
        into_cluster: Option<u64>,
    },
    /// Add this node to the cluster as a learner, then start it.
    Join { cluster_id: u64 },
    /// This node runs no etcd member; `role` is what it is instead.
    NoEtcd { role: Role },
    /// Nothing safe to do yet.
    Wait { reason: String },
    /// More than one cluster answers for this cluster name: S1 is broken
    /// somewhere; touch nothing and alarm.
    Conflict { cluster_ids: Vec<u64> },
}

/// The peer URL a node advertises.
pub fn peer_url(peer: &Peer) -> String {
    format!("https://{}:{PEER_PORT}", peer.address)
}

/// The initial-cluster token: derived from the cluster name and the member
/// set, so two nodes that computed different sets can never form one cluster
/// by accident, and a node that sees a forming cluster can recompute it.
pub fn token(cluster_name: &str, initial: &[InitialMember]) -> String {
    format!(
        "muster-{cluster_name}-{:016x}",
        set_hash(cluster_name, initial, &[])
    )
}

/// The token of a cluster restored from `snapshot`: the snapshot's name is
/// part of it, so members that restored different snapshots get different
/// cluster ids and never talk to each other.
pub fn restore_token(cluster_name: &str, initial: &[InitialMember], snapshot: &str) -> String {
    let h = set_hash(cluster_name, initial, snapshot.as_bytes());
    format!("muster-{cluster_name}-restored-{h:016x}")
}

fn set_hash(cluster_name: &str, initial: &[InitialMember], extra: &[u8]) -> u64 {
    let urls: BTreeSet<&str> = initial.iter().map(|m| m.peer_url.as_str()).collect();
    // FNV-1a: stable across versions and platforms; this is a label, not a secret.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in cluster_name
        .bytes()
        .chain(urls.iter().flat_map(|u| u.bytes().chain([0u8])))
        .chain(extra.iter().copied())
    {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn initial_from_found(cluster: &FoundCluster) -> Vec<InitialMember> {
    let mut initial: Vec<InitialMember> = cluster
        .members
        .iter()
        .filter_map(|m| {
            m.peer_urls.first().map(|url| InitialMember {
                name: m.name.clone(),
                peer_url: url.clone(),
            })
        })
        .collect();
    initial.sort();
    initial
}

/// The clusters that peers' etcd answered for (address of the peer, its
/// answer), one per cluster id. Several peers answer for the same cluster:
/// the view of one that knows a leader and serves is kept, so the stale
/// memory of a removed member's process never outvotes the serving
/// members. A member is healthy when its own machine answered for its
/// cluster with a leader. Pure.
pub fn merge_answers(answers: &[(Ipv4Addr, FoundCluster)]) -> Vec<FoundCluster> {
    let mut found: Vec<FoundCluster> = Vec::new();
    for (_, cluster) in answers {
        match found
            .iter_mut()
            .find(|c| c.cluster_id == cluster.cluster_id)
        {
            Some(existing) if !existing.has_leader && cluster.has_leader => {
                *existing = cluster.clone()
            }
            Some(_) => {}
            None => found.push(cluster.clone()),
        }
    }
    for cluster in &mut found {
        for m in &mut cluster.members {
            let host = m.address();
            m.healthy = answers.iter().any(|(address, c)| {
                Some(*address) == host && c.cluster_id == cluster.cluster_id && c.has_leader
            });
        }
    }
    found
}

/// The cluster this node's member was removed from, if that is what the
/// peers say: exactly one cluster answers, it has a leader, and it does not
/// list this node's peer URL. Pure.
pub fn removed_from(clusters: &[FoundCluster], my_url: &str) -> Option<u64> {
    match clusters {
        [c] if c.has_leader
            && !c
                .members
                .iter()
                .any(|m| m.peer_urls.iter().any(|u| u == my_url)) =>
        {
            Some(c.cluster_id)
        }
        _ => None,
    }
}

/// Decides the next etcd step for this node. Pure.
pub fn decide(o: &Observed<'_>) -> Decision {
    let my_url = peer_url(o.me);
    if o.local_data {
        return match removed_from(o.clusters, &my_url) {
            Some(cluster_id) => Decision::Retire { cluster_id },
            None => Decision::Restart,
        };
    }
    let ids: BTreeSet<u64> = o.clusters.iter().map(|c| c.cluster_id).collect();
    if ids.len() > 1 {
        return Decision::Conflict {
            cluster_ids: ids.into_iter().collect(),
        };
    }
    if let Some(cluster) = o.clusters.first() {
        return decide_with_cluster(o, cluster, &my_url);
    }
    if let Some(role) = o.sticky_role.filter(|r| !o.topology.runs_etcd(*r)) {
        return Decision::NoEtcd { role };
    }
    if !o.settled {
        return Decision::Wait {
            reason: "waiting for the group view to settle".into(),
        };
    }
    let set = roles::formation_set(o.topology, o.view);
    if set.len() < o.topology.etcd_members() {
        // Never form a smaller cluster than asked for: a lone early node would
        // otherwise form a cluster of one while the others form another.
        return Decision::Wait {
            reason: format!(
                "seeing {} of the {} etcd candidates needed to form",
                set.len(),
                o.topology.etcd_members()
            ),
        };
    }
    if let Some(p) = set.iter().find(|p| p.address.is_unspecified()) {
        // A cloud group lists a booting machine before it has an address.
        return Decision::Wait {
            reason: format!("waiting for {} to get an address", p.id),
        };
    }
    if !set.iter().any(|p| p.id == o.me.id) {
        return Decision::Wait {
            reason: format!(
                "not among the first {} candidates; waiting for them to form the cluster",
                o.topology.etcd_members()
            ),
        };
    }
    let mut initial: Vec<InitialMember> = set
        .iter()
        .map(|p| InitialMember {
            name: p.id.clone(),
            peer_url: peer_url(p),
        })
        .collect();
    initial.sort();
    match o.restore {
        None => {
            let token = token(o.cluster_name, &initial);
            Decision::Form { initial, token }
        }
        Some(RestoreSource::Blocked { reason }) => Decision::Wait {
            reason: reason.clone(),
        },
        Some(RestoreSource::Ready { snapshot }) => Decision::Restore {
            token: restore_token(o.cluster_name, &initial, snapshot),
            snapshot: snapshot.clone(),
            initial,
            into_cluster: None,
        },
    }
}

fn decide_with_cluster(o: &Observed<'_>, cluster: &FoundCluster, my_url: &str) -> Decision {
    let listed = cluster
        .members
        .iter()
        .any(|m| m.peer_urls.iter().any(|u| u == my_url));
    if listed {
        let mut initial = initial_from_found(cluster);
        // Members that never started have no name yet; ours is our id.
        for m in initial.iter_mut().filter(|m| m.peer_url == my_url) {
            m.name = o.me.id.clone();
        }
        // A restored cluster still forming: this member must restore the
        // same snapshot (an empty member would diverge from the restored
        // data). The runner checks the restore yields this very cluster.
        if !cluster.has_leader
            && let Some(restore) = o.restore
        {
            return match restore {
                RestoreSource::Ready { snapshot } => Decision::Restore {
                    token: restore_token(o.cluster_name, &initial, snapshot),
                    snapshot: snapshot.clone(),
                    initial,
                    into_cluster: Some(cluster.cluster_id),
                },
                RestoreSource::Blocked { reason } => Decision::Wait {
                    reason: reason.clone(),
                },
            };
        }
        let token = token(o.cluster_name, &initial);
        return Decision::StartListed {
            cluster_id: cluster.cluster_id,
            initial,
            token,
            existing: cluster.has_leader,
        };
    }
    if let Some(role) = o.sticky_role.filter(|r| !o.topology.runs_etcd(*r)) {
        return Decision::NoEtcd { role };
    }
    if !cluster.has_leader {
        return Decision::Wait {
            reason: format!("cluster {:x} is still forming", cluster.cluster_id),
        };
    }
    match room_to_join(o.topology, cluster) {
        Ok(()) => {
            return Decision::Join {
                cluster_id: cluster.cluster_id,
            };
        }
        // Short of members, or a member is down (a seat may open for this
        // node): wait rather than settle as a worker.
        Err(reason)
            if cluster.members.len() < o.topology.etcd_members()
                || cluster.members.iter().any(|m| !m.healthy) =>
        {
            return Decision::Wait { reason };
        }
        Err(_) => {}
    }
    let role = if o.topology.dedicated_etcd_count.is_some() {
        // Dedicated etcd is full: fill the control plane or become a worker.
        roles::auto_role(o.topology, o.view, &o.me.id)
            .filter(|r| *r != Role::Etcd)
            .unwrap_or(Role::Worker)
    } else {
        Role::Worker
    };
    Decision::NoEtcd { role }
}

/// Whether one more member may be added to `cluster` now (pure): it has a
/// leader, fewer healthy voters than the topology asks for, at most as
/// many members as it asks for (so at most one more than configured while
/// a dead voter is still listed), and no learner still catching up (one at
/// a time: etcd allows one learner, and a second would count towards
/// quorum before it has the data). Checked before a join, and again under
/// the membership lock.
///
/// Add before remove: a voter that is down keeps its seat until a
/// replacement holds one (see `membership::plan`), so a seat counts as free
/// when its voter is unhealthy. Removing an unreachable voter first would
/// turn a temporary outage into a permanent loss (fault campaign seed
/// 0xc0de0006, docs/design/bootstrap.md).
pub fn room_to_join(topology: Topology, cluster: &FoundCluster) -> Result<(), String> {
    let wanted = topology.etcd_members();
    if !cluster.has_leader {
        return Err(format!("cluster {:x} has no leader", cluster.cluster_id));
    }
    if let Some(l) = cluster.members.iter().find(|m| m.is_learner) {
        return Err(format!(
            "learner {:x} is still catching up in cluster {:x}",
            l.id, cluster.cluster_id
        ));
    }
    let healthy_voters = cluster.members.iter().filter(|m| m.healthy).count();
    if healthy_voters >= wanted {
        return Err(format!(
            "cluster {:x} has {healthy_voters} of {wanted} voters healthy",
            cluster.cluster_id
        ));
    }
    if cluster.members.len() > wanted {
        return Err(format!(
            "cluster {:x} already has {} members for {wanted} seats; waiting for a dead one to be removed",
            cluster.cluster_id,
            cluster.members.len()
        ));
    }
    Ok(())
}

/// S7 for a node that settled as a worker: whether it should step in as an
/// etcd member now (pure). Only in the stacked topology (a worker becomes a
/// control-plane node; dedicated etcd is refilled by new machines only),
/// and only when the cluster has room (`room_to_join`). Which of several
/// workers gets the seat is decided by the membership lock, not by an
/// order: a static list keeps dead machines in the order for ever.
pub fn worker_steps_in(topology: Topology, role: Role, cluster: &FoundCluster) -> bool {
    role == Role::Worker
        && topology.dedicated_etcd_count.is_none()
        && room_to_join(topology, cluster).is_ok()
}

/// Whether a node may trust its view enough to form a cluster.
///
/// The view must not have changed for `settle_ms`, and `settle_ms` must have
/// passed since the launch of the last member of the formation set: any
/// machine launched before that one is then visible (the group API's lag is
/// at most `settle_ms`, the assumption stated in bootstrap.md), so every
/// settled node computes the same formation set. Peers without a launch time
/// (static lists, DNS) rely on the stable-view part only: their order is the
/// list's, the same on every node.
pub fn settled(
    now_ms: u64,
    view_stable_since_ms: u64,
    formation_set: &[Peer],
    settle_ms: u64,
) -> bool {
    let last_launch = formation_set
        .iter()
        .filter_map(|p| p.launched_at_ms)
        .max()
        .unwrap_or(0);
    now_ms >= view_stable_since_ms.saturating_add(settle_ms)
        && now_ms >= last_launch.saturating_add(settle_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Lifecycle;
    use std::net::Ipv4Addr;

    const STACKED3: Topology = Topology {
        control_plane_count: 3,
        dedicated_etcd_count: None,
    };

    fn peer(i: u8) -> Peer {
        Peer {
            id: format!("i-{i}"),
            address: Ipv4Addr::new(10, 0, 0, i),
            launched_at_ms: Some(1000),
            lifecycle: Lifecycle::InService,
        }
    }

    fn observed<'a>(me: &'a Peer, view: &'a [Peer], clusters: &'a [FoundCluster]) -> Observed<'a> {
        Observed {
            cluster_name: "prod",
            me,
            topology: STACKED3,
            sticky_role: None,
            view,
            settled: true,
            local_data: false,
            clusters,
            restore: None,
        }
    }

    #[test]
    fn a_restore_forms_the_same_set_from_the_same_snapshot_on_every_member() {
        let view: Vec<_> = (1..=5).map(peer).collect();
        let ready = RestoreSource::Ready {
            snapshot: "prod-20261206T013000Z-r42.db".into(),
        };
        let decisions: Vec<_> = view
            .iter()
            .map(|me| {
                let mut o = observed(me, &view, &[]);
                o.restore = Some(&ready);
                decide(&o)
            })
            .collect();
        let Decision::Restore {
            snapshot,
            initial,
            token,
            into_cluster: None,
        } = &decisions[0]
        else {
            panic!("{:?}", decisions[0])
        };
        assert_eq!(snapshot, "prod-20261206T013000Z-r42.db");
        assert_eq!(initial.len(), 3);
        assert_eq!(decisions[1], decisions[0]);
        assert_eq!(decisions[2], decisions[0]);
        assert!(
            matches!(decisions[3], Decision::Wait { .. }),
            "{:?}",
            decisions[3]
        );
        // Another snapshot, another token: never one cluster of both.
        assert_ne!(token, &token_of_plain(initial));
        assert_ne!(
            token,
            &restore_token("prod", initial, "prod-20261206T023000Z-r50.db")
        );
        // Blocked (a live cluster may still write snapshots): wait, say why.
        let blocked = RestoreSource::Blocked {
            reason: "the newest snapshot is 30s old".into(),
        };
        let mut o = observed(&view[0], &view, &[]);
        o.restore = Some(&blocked);
        assert_eq!(
            decide(&o),
            Decision::Wait {
                reason: "the newest snapshot is 30s old".into()
            }
        );
    }

    fn token_of_plain(initial: &[InitialMember]) -> String {
        token("prod", initial)
    }

    #[test]
    fn a_member_listed_in_a_forming_restored_cluster_restores_into_it_and_a_live_cluster_is_joined()
    {
        let view: Vec<_> = (1..=4).map(peer).collect();
        let ready = RestoreSource::Ready {
            snapshot: "prod-20261206T013000Z-r42.db".into(),
        };
        // The first member restored and waits for its peers (no leader yet).
        let forming = [found(7, &[&view[0], &view[1], &view[2]], false)];
        let mut o = observed(&view[1], &view, &forming);
        o.restore = Some(&ready);
        let Decision::Restore {
            into_cluster,
            initial,
            token,
            ..
        } = decide(&o)
        else {
            panic!("{:?}", decide(&o))
        };
        assert_eq!(into_cluster, Some(7));
        assert_eq!(initial.len(), 3);
        assert_eq!(
            token,
            restore_token("prod", &initial, "prod-20261206T013000Z-r42.db")
        );
        // A cluster with a leader is live: nobody restores over it; a
        // listed member starts as itself, another node joins.
        let live = [found(7, &[&view[0], &view[1], &view[2]], true)];
        let mut o = observed(&view[1], &view, &live);
        o.restore = Some(&ready);
        assert!(matches!(
            decide(&o),
            Decision::StartListed { existing: true, .. }
        ));
        let mut o = observed(&view[3], &view, &live);
        o.restore = Some(&ready);
        assert!(
            matches!(
                decide(&o),
                Decision::Join { cluster_id: 7 } | Decision::NoEtcd { .. }
            ),
            "{:?}",
            decide(&o)
        );
        // Local data is never restored over.
        let mut o = observed(&view[1], &view, &forming);
        o.restore = Some(&ready);
        o.local_data = true;
        assert_eq!(decide(&o), Decision::Restart);
    }

    fn found(id: u64, members: &[&Peer], has_leader: bool) -> FoundCluster {
        FoundCluster {
            cluster_id: id,
            members: members
                .iter()
                .enumerate()
                .map(|(n, p)| FoundMember {
                    id: n as u64 + 1,
                    name: p.id.clone(),
                    peer_urls: vec![peer_url(p)],
                    is_learner: false,
                    healthy: true,
                })
                .collect(),
            has_leader,
        }
    }

    #[test]
    fn existing_data_always_restarts() {
        let view: Vec<_> = (1..=3).map(peer).collect();
        let clusters = [found(1, &[&view[1]], true), found(2, &[&view[2]], true)];
        let mut o = observed(&view[0], &view, &clusters);
        o.local_data = true;
        assert_eq!(decide(&o), Decision::Restart);
    }

    #[test]
    fn a_member_removed_while_away_retires_its_data_instead_of_restarting() {
        let view: Vec<_> = (1..=4).map(peer).collect();
        let without_me = [found(5, &[&view[1], &view[2], &view[3]], true)];
        let mut o = observed(&view[0], &view, &without_me);
        o.local_data = true;
        assert_eq!(decide(&o), Decision::Retire { cluster_id: 5 });
        // A cluster still forming (no leader) proves nothing: restart.
        let forming = [found(5, &[&view[1], &view[2], &view[3]], false)];
        let mut o = observed(&view[0], &view, &forming);
        o.local_data = true;
        assert_eq!(decide(&o), Decision::Restart);
    }

    #[test]
    fn first_three_form_with_the_same_set_and_token_and_the_rest_wait() {
        let view: Vec<_> = (1..=5).map(peer).collect();
        let decisions: Vec<_> = view
            .iter()
            .map(|me| decide(&observed(me, &view, &[])))
            .collect();
        let Decision::Form { initial, token } = &decisions[0] else {
            panic!("{:?}", decisions[0])
        };
        assert_eq!(initial.len(), 3);
        assert_eq!(decisions[1], decisions[0]);
        assert_eq!(decisions[2], decisions[0]);
        assert!(matches!(decisions[3], Decision::Wait { .. }));
        assert!(matches!(decisions[4], Decision::Wait { .. }));
        assert!(token.starts_with("muster-prod-"));
    }

    #[test]
    fn a_view_smaller_than_the_cluster_never_forms() {
        let view: Vec<_> = (1..=2).map(peer).collect();
        assert!(matches!(
            decide(&observed(&view[0], &view, &[])),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn unsettled_nodes_wait() {
        let view: Vec<_> = (1..=3).map(peer).collect();
        let mut o = observed(&view[0], &view, &[]);
        o.settled = false;
        assert!(matches!(decide(&o), Decision::Wait { .. }));
    }

    #[test]
    fn a_running_cluster_decides_first() {
        let view: Vec<_> = (1..=4).map(peer).collect();
        // Node 4 would never be in the formation set, but the cluster has room.
        let clusters = [found(7, &[&view[0], &view[1]], true)];
        assert_eq!(
            decide(&observed(&view[3], &view, &clusters)),
            Decision::Join { cluster_id: 7 }
        );
        // A full, healthy cluster makes it a worker.
        let clusters = [found(7, &[&view[0], &view[1], &view[2]], true)];
        assert_eq!(
            decide(&observed(&view[3], &view, &clusters)),
            Decision::NoEtcd { role: Role::Worker }
        );
        // A full cluster with a voter down: add before remove, this node
        // takes a seat while the down voter still holds its own.
        let mut degraded = found(7, &[&view[0], &view[1], &view[2]], true);
        degraded.members[2].healthy = false;
        assert_eq!(
            decide(&observed(&view[3], &view, std::slice::from_ref(&degraded))),
            Decision::Join { cluster_id: 7 }
        );
        // One extra is already in and two voters are down: wait for a
        // removal, neither join nor settle as a worker.
        let wide: Vec<_> = (1..=5).map(peer).collect();
        let mut over = found(7, &[&wide[0], &wide[1], &wide[2], &wide[3]], true);
        over.members[1].healthy = false;
        over.members[2].healthy = false;
        match decide(&observed(&wide[4], &wide, &[over])) {
            Decision::Wait { reason } => {
                assert!(reason.contains("4 members for 3 seats"), "{reason}")
            }
            other => panic!("expected Wait, got {other:?}"),
        }
        // Even node 1, first in order, joins rather than forming anew.
        let clusters = [found(7, &[&view[1], &view[2]], true)];
        assert_eq!(
            decide(&observed(&view[0], &view, &clusters)),
            Decision::Join { cluster_id: 7 }
        );
    }

    #[test]
    fn a_listed_member_without_data_starts_as_that_member() {
        let view: Vec<_> = (1..=3).map(peer).collect();
        let forming = [found(9, &[&view[0], &view[1], &view[2]], false)];
        match decide(&observed(&view[2], &view, &forming)) {
            Decision::StartListed {
                existing,
                initial,
                token,
                ..
            } => {
                assert!(!existing, "a forming cluster is joined with state new");
                let Decision::Form {
                    initial: own,
                    token: own_token,
                } = decide(&observed(&view[2], &view, &[]))
                else {
                    panic!("expected form")
                };
                assert_eq!(
                    (initial, token),
                    (own, own_token),
                    "same set and token as forming it itself"
                );
            }
            d => panic!("{d:?}"),
        }
        let formed = [found(9, &[&view[0], &view[1], &view[2]], true)];
        assert!(matches!(
            decide(&observed(&view[2], &view, &formed)),
            Decision::StartListed { existing: true, .. }
        ));
    }

    #[test]
    fn two_clusters_in_view_is_a_conflict_and_nothing_is_done() {
        let view: Vec<_> = (1..=3).map(peer).collect();
        let clusters = [found(1, &[&view[0]], true), found(2, &[&view[1]], true)];
        assert_eq!(
            decide(&observed(&view[2], &view, &clusters)),
            Decision::Conflict {
                cluster_ids: vec![1, 2]
            }
        );
    }

    #[test]
    fn sticky_workers_stay_workers() {
        let view: Vec<_> = (1..=3).map(peer).collect();
        let mut o = observed(&view[0], &view, &[]);
        o.sticky_role = Some(Role::Worker);
        assert_eq!(decide(&o), Decision::NoEtcd { role: Role::Worker });
    }

    #[test]
    fn settling_waits_for_the_last_formation_member_and_a_stable_view() {
        let mut set: Vec<_> = (1..=3).map(peer).collect();
        set[2].launched_at_ms = Some(5_000);
        assert!(!settled(6_000, 0, &set, 2_000));
        assert!(settled(7_000, 0, &set, 2_000));
        assert!(!settled(7_000, 6_000, &set, 2_000), "view changed 1 s ago");
    }

    #[test]
    fn a_member_address_comes_from_its_peer_url() {
        let view: Vec<_> = (1..=1).map(peer).collect();
        let c = found(1, &[&view[0]], true);
        assert_eq!(c.members[0].address(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        let mut unnamed = c.members[0].clone();
        unnamed.peer_urls.clear();
        assert_eq!(unnamed.address(), None);
    }

    #[test]
    fn the_token_depends_on_the_set_not_its_order() {
        let a = InitialMember {
            name: "a".into(),
            peer_url: "https://10.0.0.1:2380".into(),
        };
        let b = InitialMember {
            name: "b".into(),
            peer_url: "https://10.0.0.2:2380".into(),
        };
        assert_eq!(
            token("x", &[a.clone(), b.clone()]),
            token("x", &[b.clone(), a.clone()])
        );
        assert_ne!(
            token("x", std::slice::from_ref(&a)),
            token("x", &[a.clone(), b])
        );
        assert_ne!(token("x", std::slice::from_ref(&a)), token("y", &[a]));
    }

    #[test]
    fn one_learner_at_a_time_and_never_more_than_the_topology_asks() {
        let view: Vec<_> = (1..=5).map(peer).collect();
        let two = found(7, &[&view[0], &view[1]], true);
        assert_eq!(room_to_join(STACKED3, &two), Ok(()));
        let o = observed(&view[4], &view, std::slice::from_ref(&two));
        assert_eq!(decide(&o), Decision::Join { cluster_id: 7 });

        // Two voters and a learner still catching up: full at 3; at 5 the
        // next one waits for the learner.
        let mut with_learner = two.clone();
        with_learner.members.push(FoundMember {
            id: 99,
            name: String::new(),
            peer_urls: vec![peer_url(&view[3])],
            is_learner: true,
            healthy: true,
        });
        assert!(room_to_join(STACKED3, &with_learner).is_err());
        let five = Topology {
            control_plane_count: 5,
            dedicated_etcd_count: None,
        };
        let e = room_to_join(five, &with_learner).expect_err("learner pending");
        assert!(e.contains("learner 63"), "{e}");
        let mut o = observed(&view[4], &view, std::slice::from_ref(&with_learner));
        o.topology = five;
        assert!(
            matches!(decide(&o), Decision::Wait { .. }),
            "{:?}",
            decide(&o)
        );

        let mut leaderless = two.clone();
        leaderless.has_leader = false;
        assert!(room_to_join(STACKED3, &leaderless).is_err());
    }

    #[test]
    fn removed_means_one_cluster_with_a_leader_that_does_not_list_this_node() {
        let view: Vec<_> = (1..=4).map(peer).collect();
        let mine = peer_url(&view[3]);
        let without = found(7, &[&view[0], &view[1], &view[2]], true);
        assert_eq!(removed_from(std::slice::from_ref(&without), &mine), Some(7));
        let with = found(7, &[&view[0], &view[1], &view[3]], true);
        assert_eq!(removed_from(&[with], &mine), None);
        let leaderless = found(7, &[&view[0], &view[1], &view[2]], false);
        assert_eq!(
            removed_from(&[leaderless], &mine),
            None,
            "no leader: cannot tell"
        );
        let other = found(8, &[&view[0]], true);
        assert_eq!(
            removed_from(&[without, other], &mine),
            None,
            "two clusters: touch nothing"
        );
        assert_eq!(removed_from(&[], &mine), None);
    }

    /// Seed 0xc0df001f: two members (1 and 2) were removed while away;
    /// member 1's process did not exit and answered from memory (its old
    /// list, a remembered leader, but no read served). Member 2, probing,
    /// must still learn that it was removed, whichever answer comes first.
    #[test]
    fn a_removed_members_stale_memory_never_outvotes_the_serving_members() {
        let view: Vec<_> = (1..=5).map(peer).collect();
        let mine = peer_url(&view[1]);
        let stale = found(7, &[&view[0], &view[1], &view[2], &view[3]], false);
        let live = found(7, &[&view[2], &view[3], &view[4]], true);
        for answers in [
            vec![
                (view[0].address, stale.clone()),
                (view[2].address, live.clone()),
            ],
            vec![
                (view[2].address, live.clone()),
                (view[0].address, stale.clone()),
            ],
        ] {
            let merged = merge_answers(&answers);
            assert_eq!(merged.len(), 1);
            assert_eq!(
                merged[0].members,
                live.members
                    .iter()
                    .map(|m| FoundMember {
                        healthy: m.address() == Some(view[2].address),
                        ..m.clone()
                    })
                    .collect::<Vec<_>>()
            );
            assert_eq!(removed_from(&merged, &mine), Some(7), "{answers:?}");
        }
        // Only the stale memory answers: nothing is decided from it.
        let merged = merge_answers(&[(view[0].address, stale)]);
        assert_eq!(removed_from(&merged, &mine), None);
        assert!(merged[0].members.iter().all(|m| !m.healthy));
    }

    #[test]
    fn a_worker_steps_in_only_where_there_is_room_and_only_when_stacked() {
        let view: Vec<_> = (1..=5).map(peer).collect();
        let short = found(7, &[&view[0], &view[1]], true);
        let full = found(7, &[&view[0], &view[1], &view[2]], true);
        assert!(worker_steps_in(STACKED3, Role::Worker, &short));
        assert!(!worker_steps_in(STACKED3, Role::Worker, &full));
        let mut degraded = full.clone();
        degraded.members[0].healthy = false;
        assert!(
            worker_steps_in(STACKED3, Role::Worker, &degraded),
            "a down voter's seat is open to a worker (add before remove)"
        );
        assert!(!worker_steps_in(STACKED3, Role::ControlPlane, &short));
        let dedicated = Topology {
            control_plane_count: 2,
            dedicated_etcd_count: Some(3),
        };
        assert!(!worker_steps_in(dedicated, Role::Worker, &short));
    }
}
