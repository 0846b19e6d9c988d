//! Deterministic simulation of concurrent boots: checks invariant S1 (at most
//! one etcd cluster formed per cluster name) over thousands of generated
//! scenarios — random launch times with ties, per-pair group-API lag, machines
//! that die at boot, random interleavings of agent steps — driving the real
//! `formation::decide` and `formation::settled`. And S3 for `membership::plan`
//! on generated member lists.
//!
//! etcd is modelled by its static-bootstrap rule: a cluster with initial set F
//! and token T forms once a majority of F has started with (F, T). That is
//! the rule of the real etcd (tested for real in the tier-1 tests).
//!
//! A negative control runs the same scenarios without the settle rule and
//! must find a violation: it shows the checker can fail and that the settle
//! rule is what keeps S1.

use crate::support::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use muster::discovery::{Lifecycle, Peer};
use muster::etcd::membership::{self, MemberAction, MemberHealth};
use muster::formation::{self, Decision, FoundCluster, FoundMember, InitialMember, Observed};
use muster::roles::Topology;

struct Node {
    peer: Peer,
    /// Dies at this time (stops acting and answering), if ever.
    dies_at: Option<u64>,
    /// (initial set, token) it started etcd with.
    started: Option<(Vec<InitialMember>, String)>,
    /// Joined (as a learner) the cluster with this token.
    joined: Option<String>,
}

struct Scenario {
    nodes: Vec<Node>,
    /// lag[i][j]: how long after j's launch i's group view shows j.
    lag: Vec<Vec<u64>>,
    topology: Topology,
}

const MAX_LAG_MS: u64 = 2_000;

fn generate(rng: &mut Rng) -> Scenario {
    let count = 3 + rng.below(5) as usize; // 3..=7 machines
    let etcd = if count >= 5 && rng.chance(40) {
        5
    } else if rng.chance(10) {
        1
    } else {
        3
    };
    let nodes = (0..count)
        .map(|i| {
            // Launch times in 500 ms steps: ties are common, as in one scaling action.
            let launched = rng.below(7) * 500;
            Node {
                peer: Peer {
                    id: format!("i-{:04x}", rng.below(0x10000)),
                    address: Ipv4Addr::new(10, 0, 0, 10 + i as u8),
                    launched_at_ms: Some(launched),
                    lifecycle: Lifecycle::InService,
                },
                dies_at: rng.chance(15).then(|| launched + rng.below(4_000)),
                started: None,
                joined: None,
            }
        })
        .collect();
    let lag = (0..count)
        .map(|_| (0..count).map(|_| rng.below(MAX_LAG_MS + 1)).collect())
        .collect();
    Scenario {
        nodes,
        lag,
        topology: Topology {
            control_plane_count: etcd,
            dedicated_etcd_count: None,
        },
    }
}

fn alive(n: &Node, t: u64) -> bool {
    t >= n.peer.launched_at_ms.unwrap_or(0) && n.dies_at.is_none_or(|d| t < d)
}

/// What node `i`'s group view shows at time `t`, and since when it has been
/// unchanged. Dead machines stay in the group (the cloud replaces them on a
/// health-check timescale of minutes, far beyond boot).
fn view(s: &Scenario, i: usize, t: u64) -> (Vec<Peer>, u64) {
    let mut peers = Vec::new();
    let mut stable_since = 0;
    for (j, n) in s.nodes.iter().enumerate() {
        let visible_at = n.peer.launched_at_ms.unwrap_or(0) + if i == j { 0 } else { s.lag[i][j] };
        if t >= visible_at {
            peers.push(n.peer.clone());
            stable_since = stable_since.max(visible_at);
        }
    }
    (peers, stable_since)
}

fn quorate(s: &Scenario, token: &str) -> bool {
    let mut set_size = 0;
    let mut started = 0;
    for (initial, _) in s
        .nodes
        .iter()
        .filter_map(|n| n.started.as_ref())
        .filter(|(_, t)| t == token)
    {
        set_size = initial.len();
        started += 1;
    }
    set_size > 0 && started >= membership::quorum(set_size)
}

/// What probing the etcd client ports of the peers in `view` shows at `t`.
fn probe(s: &Scenario, view: &[Peer], t: u64) -> Vec<FoundCluster> {
    let mut by_token: BTreeMap<String, FoundCluster> = BTreeMap::new();
    for n in s
        .nodes
        .iter()
        .filter(|n| alive(n, t) && view.iter().any(|p| p.id == n.peer.id))
    {
        let token = match (&n.started, &n.joined) {
            (Some((_, token)), _) => token.clone(),
            (None, Some(token)) if quorate(s, token) => token.clone(),
            _ => continue,
        };
        let Some(initial) = s
            .nodes
            .iter()
            .find_map(|m| m.started.as_ref().filter(|(_, t)| *t == token))
        else {
            continue;
        };
        let mut members: Vec<FoundMember> = initial
            .0
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let healthy = s.nodes.iter().any(|n| {
                    formation::peer_url(&n.peer) == m.peer_url
                        && alive(n, t)
                        && n.started.as_ref().is_some_and(|(_, tk)| *tk == token)
                });
                FoundMember {
                    id: k as u64,
                    name: m.name.clone(),
                    peer_urls: vec![m.peer_url.clone()],
                    is_learner: false,
                    healthy,
                }
            })
            .collect();
        for joiner in s
            .nodes
            .iter()
            .filter(|m| m.joined.as_deref() == Some(token.as_str()))
        {
            members.push(FoundMember {
                id: 100 + members.len() as u64,
                name: joiner.peer.id.clone(),
                peer_urls: vec![formation::peer_url(&joiner.peer)],
                is_learner: true,
                healthy: alive(joiner, t),
            });
        }
        let cluster_id = token
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        by_token.insert(
            token.clone(),
            FoundCluster {
                cluster_id,
                members,
                has_leader: quorate(s, &token),
            },
        );
    }
    by_token.into_values().collect()
}

/// Runs one scenario to the end; returns the tokens that reached quorum.
fn run(seed: u64, settle_ms: u64) -> BTreeSet<String> {
    let mut rng = Rng(seed);
    let mut s = generate(&mut rng);
    let mut t = 0;
    while t < 20_000 {
        t += 50 + rng.below(400);
        let i = rng.below(s.nodes.len() as u64) as usize;
        if !alive(&s.nodes[i], t) || s.nodes[i].started.is_some() || s.nodes[i].joined.is_some() {
            continue;
        }
        let (peers, stable_since) = view(&s, i, t);
        let clusters = probe(&s, &peers, t);
        let set = muster::roles::formation_set(s.topology, &peers);
        let me = s.nodes[i].peer.clone();
        let observed = Observed {
            cluster_name: "sim",
            me: &me,
            topology: s.topology,
            sticky_role: None,
            view: &peers,
            settled: formation::settled(t, stable_since, &set, settle_ms),
            local_data: false,
            clusters: &clusters,
            restore: None,
        };
        let d = formation::decide(&observed);
        if std::env::var("SIM_TRACE").is_ok() && !matches!(d, Decision::Wait { .. }) {
            eprintln!(
                "t={t} node={} launched={:?} view={:?} settled={} clusters={:?} -> {:?}",
                me.id,
                me.launched_at_ms,
                peers
                    .iter()
                    .map(|p| (&p.id, p.launched_at_ms))
                    .collect::<Vec<_>>(),
                observed.settled,
                clusters
                    .iter()
                    .map(|c| (c.cluster_id, c.members.len(), c.has_leader))
                    .collect::<Vec<_>>(),
                d
            );
        }
        match d {
            // A restore starts a member of the set as forming does.
            Decision::Form { initial, token } | Decision::Restore { initial, token, .. } => {
                s.nodes[i].started = Some((initial, token))
            }
            Decision::StartListed { initial, token, .. } => {
                s.nodes[i].started = Some((initial, token))
            }
            Decision::Join { cluster_id } => {
                let token = clusters
                    .iter()
                    .find(|c| c.cluster_id == cluster_id)
                    .and_then(|c| {
                        s.nodes.iter().find_map(|n| {
                            n.started.as_ref().map(|(_, tk)| tk.clone()).filter(|tk| {
                                tk.bytes().fold(7u64, |h, b| {
                                    h.wrapping_mul(31).wrapping_add(u64::from(b))
                                }) == c.cluster_id
                            })
                        })
                    });
                s.nodes[i].joined = token;
            }
            Decision::Restart
            | Decision::Retire { .. }
            | Decision::NoEtcd { .. }
            | Decision::Wait { .. }
            | Decision::Conflict { .. } => {}
        }
    }
    s.nodes
        .iter()
        .filter_map(|n| n.started.as_ref().map(|(_, t)| t.clone()))
        .filter(|t| quorate(&s, t))
        .collect()
}

#[test]
fn trace_one() {
    if let Ok(seed) = std::env::var("SIM_TRACE") {
        let mut rng = Rng(seed.parse().unwrap());
        let s = generate(&mut rng);
        for n in &s.nodes {
            eprintln!(
                "{} launched {:?} dies {:?}",
                n.peer.id, n.peer.launched_at_ms, n.dies_at
            );
        }
        eprintln!("etcd {}", s.topology.control_plane_count);
        eprintln!("{:?}", run(seed.parse().unwrap(), MAX_LAG_MS));
    }
}

#[test]
fn s1_at_most_one_cluster_under_concurrent_boots_lag_and_deaths() {
    let mut formed_one = 0;
    for seed in 0..20_000u64 {
        let formed = run(seed, MAX_LAG_MS);
        assert!(
            formed.len() <= 1,
            "seed {seed}: S1 broken, clusters formed: {formed:?}"
        );
        formed_one += formed.len();
    }
    // Liveness sanity: most scenarios do form their cluster within 20 s.
    assert!(
        formed_one > 15_000,
        "only {formed_one} of 20000 scenarios formed a cluster"
    );
}

#[test]
fn negative_control_without_the_settle_rule_the_checker_finds_a_split() {
    let split = (0..20_000u64).find(|&seed| run(seed, 0).len() > 1);
    assert!(
        split.is_some(),
        "with no settle time and {MAX_LAG_MS} ms of lag a split must be reachable"
    );
}

#[test]
fn s3_membership_plans_never_drop_quorum_and_add_before_remove() {
    let mut rng = Rng(42);
    for _ in 0..50_000 {
        let n = 1 + rng.below(7) as usize;
        let members: Vec<MemberHealth> = (0..n)
            .map(|k| MemberHealth {
                id: k as u64,
                name: format!("m{k}"),
                is_learner: rng.chance(15),
                healthy: rng.chance(60),
                unhealthy_for_ms: rng.below(60_000),
                in_group: [None, Some(true), Some(false)][rng.below(3) as usize],
            })
            .map(|mut m| {
                if m.healthy {
                    m.unhealthy_for_ms = 0;
                }
                m
            })
            .collect();
        let wanted = [1, 3, 5][rng.below(3) as usize];
        let policy = membership::Policy {
            wanted,
            grace_ms: 30_000,
            leader: 0,
        };
        let actions = membership::plan(&members, policy);
        let removed: BTreeSet<u64> = actions
            .iter()
            .filter_map(|a| {
                if let MemberAction::Remove { id, .. } = a {
                    Some(*id)
                } else {
                    None
                }
            })
            .collect();
        let voters: Vec<&MemberHealth> = members.iter().filter(|m| !m.is_learner).collect();
        let removed_voters = voters.iter().filter(|m| removed.contains(&m.id)).count();
        assert!(removed_voters <= 1, "{members:?} -> {actions:?}");
        let healthy = voters.iter().filter(|m| m.healthy).count();
        // A healthy member goes only when its seat is not needed: a learner
        // while every voter is healthy and the size is reached, or one voter
        // over size (never the leader).
        let seat_open = voters.len() < wanted || healthy < voters.len();
        for m in members
            .iter()
            .filter(|m| m.healthy && removed.contains(&m.id))
        {
            if m.is_learner {
                assert!(
                    !seat_open,
                    "removed a needed learner: {members:?} -> {actions:?}"
                );
            } else {
                assert!(
                    voters.len() > wanted && healthy == voters.len() && m.id != policy.leader,
                    "removed a healthy voter: {members:?} -> {actions:?}"
                );
            }
        }
        if removed_voters == 1 {
            let remaining = voters.len() - 1;
            let gone = voters
                .iter()
                .find(|m| removed.contains(&m.id))
                .expect("one removed voter");
            let healthy_after = healthy - usize::from(gone.healthy);
            assert!(
                healthy_after >= membership::quorum(remaining),
                "S3 broken: {members:?} -> {actions:?}"
            );
            // Add before remove: a voter that may come back is removed only
            // if one more failure stays survivable.
            if !gone.healthy && gone.in_group != Some(false) {
                assert!(
                    healthy_after > membership::quorum(remaining),
                    "removed an unreachable voter with no margin: {members:?} -> {actions:?}"
                );
            }
        }
    }
}
