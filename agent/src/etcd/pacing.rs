//! How often an agent that holds no etcd seat lists its group and asks the
//! cluster (issue 18). Pure: the runner asks, these answer.
//!
//! Measured before (benches/mass_join.rs, docs/benchmarks.md): every agent
//! without a seat probed every listed peer's etcd every tick, and listed
//! its group every tick, so the fleet's calls grew with N² and the three
//! etcd members spent the machine on TLS handshakes; past about 40 workers
//! the probes timed out and joins stalled. Now:
//!
//! * an agent that may form the cluster (it is in the formation set) or
//!   has data of its own still asks every peer: only it can found a second
//!   cluster, so only it needs the full picture (S1);
//! * any other agent asks a bounded set: the first peers in the total
//!   order (where members are) and a few others in turn, and waits longer
//!   each time it finds nothing to do, with jitter;
//! * a worker lists the group and asks whether the cluster is short of
//!   members at a rate that keeps the fleet's total bounded: each worker
//!   every `workers / FLEET_CHECKS_PER_S` seconds (at least
//!   `STEP_IN_MIN`), so with 500 workers some worker still checks about
//!   every 0.1 s and S7 keeps its bound.

use std::time::Duration;

use super::membership::MemberHealth;
use crate::discovery::Peer;
use crate::roles::{self, Topology};

/// The least time between one worker's checks whether the cluster needs it.
pub const STEP_IN_MIN: Duration = Duration::from_secs(5);

/// How many step-in checks per second the whole fleet makes at most (each
/// is one probe of a member and a health check of each member).
pub const FLEET_CHECKS_PER_S: f64 = 10.0;

/// How often a worker lists its group at least (cloud API calls): it needs
/// the list only to find the members, who rarely change, and to see its own
/// machine leave.
pub const WORKER_LIST_EVERY: Duration = Duration::from_secs(30);

/// How many group listings a second the fleet's workers make at most
/// (before jitter). A listing of an AWS group by a worker is one Auto
/// Scaling call at rest; AWS does not publish that API's budget, and
/// EC2's describe budget refills 20 a second, so the fleet keeps to a
/// quarter of it. Through the throttling front (benches/mass_join.rs),
/// 200 workers listing every 30 s already made AWS refuse half the calls.
pub const FLEET_LISTS_PER_S: f64 = 5.0;

/// How long a worker waits between its listings: at least
/// `WORKER_LIST_EVERY`, longer in a large fleet so that the workers
/// together list at most `FLEET_LISTS_PER_S` (500 workers: every 100 s).
pub fn worker_list_every(workers: usize) -> Duration {
    WORKER_LIST_EVERY.max(Duration::from_secs_f64(workers as f64 / FLEET_LISTS_PER_S))
}

/// How often a booting agent that cannot form the cluster lists its group
/// (jittered): it needs the list only to know where the members are, and
/// finds them by probing. Listing every round made 500 booting agents list
/// 650 times a second (39 000 a minute): through a cloud API, throttled.
pub const BOOTING_LIST_EVERY: Duration = Duration::from_secs(10);

/// How long a booting agent's listing stays good for its next round: the
/// pipeline lists the group once at start, and its first round, then its
/// first round as a worker, used to list again within a second, three
/// listings per booting machine where one does. Through moto, 100 machines
/// booting at once made 300 listings in a few seconds and the API timed
/// out for minutes (issue 18).
pub const LISTING_REUSE: Duration = Duration::from_secs(3);

/// Whether a listing made `ago` (`None`: never) may serve this round.
pub fn reuse_listing(ago: Option<Duration>) -> bool {
    ago.is_some_and(|ago| ago < LISTING_REUSE)
}

/// The longest wait between two probes of an agent that found nothing to
/// do (no cluster yet, or one still forming).
pub const WAIT_CAP: Duration = Duration::from_secs(4);

/// Peers beyond the first ones probed in turn each round, to find members
/// that moved down the order (a static list keeps dead machines ahead).
pub const ROTATING_PROBES: usize = 8;

/// A factor in [0.5, 1.5) that differs per node (`seed`: its address) and
/// per draw `n`, the same on every run (splitmix64).
pub fn jitter(seed: u64, n: u64) -> f64 {
    let mut z = seed
        .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    0.5 + (z >> 11) as f64 / (1u64 << 53) as f64
}

/// How long a worker waits between its checks whether the cluster is short
/// of members: the fleet makes at most `FLEET_CHECKS_PER_S` (before jitter).
pub fn step_in_every(workers: usize) -> Duration {
    STEP_IN_MIN.max(Duration::from_secs_f64(workers as f64 / FLEET_CHECKS_PER_S))
}

/// The wait before the next probe of an agent that found nothing to do
/// `idle_rounds` times in a row: one tick, doubling, at most `WAIT_CAP`.
pub fn wait_after(tick: Duration, idle_rounds: u32) -> Duration {
    let doubled = tick.saturating_mul(1u32 << idle_rounds.min(16));
    doubled.min(WAIT_CAP.max(tick))
}

/// How far apart the first probes of a fleet booting at once are spread:
/// 10 ms per listed machine, at most 5 s (500 machines).
pub fn boot_spread(listed: usize) -> Duration {
    Duration::from_millis(10 * listed as u64).min(Duration::from_secs(5))
}

/// Whether this node must see every peer before deciding: it may form the
/// cluster (it is in the formation set), so it must know there is none.
pub fn probes_everyone(topology: Topology, view: &[Peer], me: &Peer) -> bool {
    roles::formation_set(topology, view)
        .iter()
        .any(|p| p.id == me.id)
}

/// The peers a node that cannot form probes this round: the first
/// `2 × members + 1` in the total order (members are among them unless
/// many listed machines ahead are dead), then `ROTATING_PROBES` of the
/// rest, a different window each `round`. Machines that are down are
/// skipped.
pub fn bounded_probe_set(topology: Topology, view: &[Peer], me: &Peer, round: usize) -> Vec<Peer> {
    let others: Vec<&Peer> = roles::candidates(view)
        .into_iter()
        .filter(|p| p.id != me.id && !p.address.is_unspecified())
        .collect();
    let head = (2 * topology.etcd_members() + 1).min(others.len());
    let (first, rest) = others.split_at(head);
    let mut set: Vec<Peer> = first.iter().map(|p| (*p).clone()).collect();
    if !rest.is_empty() {
        let start = (round * ROTATING_PROBES) % rest.len();
        set.extend(
            rest.iter()
                .cycle()
                .skip(start)
                .take(ROTATING_PROBES.min(rest.len()))
                .map(|p| (*p).clone()),
        );
    }
    set
}

/// How often a member's agent runs its round (group listing, status,
/// member list, every member's health) while the cluster is calm. Every
/// tick was the largest load on etcd once it ran: on three TCG VMs etcd
/// used 25-50 % of each VM's core, more than the starting apiservers, and
/// lost its leader (docs/benchmarks.md, "CPU per part"). A fault makes the
/// next round un-calm, so the rounds that heal run every tick again; a
/// calm round only delays noticing a fault by at most this long, against
/// a replacement grace of seconds to a minute.
pub const CALM_ROUND_EVERY: Duration = Duration::from_secs(2);

/// Whether a member's round found the cluster calm: a leader, exactly the
/// wanted number of voters, all healthy, no learner, and no member whose
/// machine the group says is gone or leaving. Pure.
pub fn calm(members: &[MemberHealth], leader: u64, wanted: usize) -> bool {
    leader != 0
        && members.len() == wanted
        && members
            .iter()
            .all(|m| m.healthy && !m.is_learner && m.in_group != Some(false))
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

    fn view(n: usize) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer {
                id: format!("i-{i:04}"),
                address: Ipv4Addr::new(10, 1, (i / 200) as u8, (i % 200 + 1) as u8),
                launched_at_ms: Some(1000 + i as u64),
                lifecycle: Lifecycle::InService,
            })
            .collect()
    }

    #[test]
    fn jitter_stays_in_range_and_differs_per_node() {
        let draws: Vec<f64> = (0..1000).map(|n| jitter(7, n)).collect();
        assert!(draws.iter().all(|j| (0.5..1.5).contains(j)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.95..1.05).contains(&mean), "mean {mean}");
        assert_ne!(jitter(1, 0), jitter(2, 0));
        assert_eq!(jitter(1, 3), jitter(1, 3));
    }

    #[test]
    fn the_fleets_step_in_checks_stay_bounded_as_it_grows() {
        for workers in [1, 10, 50, 100, 500, 5000] {
            let every = step_in_every(workers).as_secs_f64();
            assert!(every >= STEP_IN_MIN.as_secs_f64());
            let fleet_rate = workers as f64 / every;
            assert!(
                fleet_rate <= FLEET_CHECKS_PER_S + 1e-9,
                "{workers}: {fleet_rate}/s"
            );
        }
        assert_eq!(step_in_every(500), Duration::from_secs(50));
    }

    #[test]
    fn the_fleets_listings_stay_bounded_as_it_grows() {
        for workers in [1, 10, 150, 151, 500, 5000] {
            let every = worker_list_every(workers);
            assert!(every >= WORKER_LIST_EVERY, "{workers}: {every:?}");
            let fleet_rate = workers as f64 / every.as_secs_f64();
            assert!(
                fleet_rate <= FLEET_LISTS_PER_S + 1e-9,
                "{workers}: {fleet_rate}/s"
            );
        }
        assert_eq!(worker_list_every(100), WORKER_LIST_EVERY);
        assert_eq!(worker_list_every(500), Duration::from_secs(100));
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let tick = Duration::from_millis(250);
        let waits: Vec<Duration> = (0..8).map(|n| wait_after(tick, n)).collect();
        assert_eq!(waits[0], tick);
        assert_eq!(waits[1], tick * 2);
        assert_eq!(waits[7], WAIT_CAP);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        // A tick longer than the cap is not shortened.
        assert_eq!(
            wait_after(Duration::from_secs(10), 3),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn only_the_formation_set_probes_everyone() {
        let v = view(10);
        assert!(probes_everyone(STACKED3, &v, &v[0]));
        assert!(probes_everyone(STACKED3, &v, &v[2]));
        assert!(!probes_everyone(STACKED3, &v, &v[3]));
    }

    #[test]
    fn the_bounded_set_is_the_head_and_a_window_that_covers_the_rest_in_turn() {
        let v = view(503);
        let me = &v[400];
        let first = bounded_probe_set(STACKED3, &v, me, 0);
        assert_eq!(first.len(), 7 + ROTATING_PROBES);
        assert_eq!(
            first[..7].iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            (0..7).map(|i| format!("i-{i:04}")).collect::<Vec<_>>()
        );
        assert!(first.iter().all(|p| p.id != me.id));
        // Every peer is probed within ceil(rest / window) rounds.
        let rest: usize = 503 - 1 - 7;
        let rounds = rest.div_ceil(ROTATING_PROBES);
        let mut seen = std::collections::BTreeSet::new();
        for round in 0..rounds {
            seen.extend(
                bounded_probe_set(STACKED3, &v, me, round)
                    .into_iter()
                    .map(|p| p.id),
            );
        }
        assert_eq!(seen.len(), 503 - 1);
        // Small groups: everyone, once.
        let small = view(4);
        assert_eq!(bounded_probe_set(STACKED3, &small, &small[3], 5).len(), 3);
    }

    #[test]
    fn machines_that_are_down_are_not_probed() {
        let mut v = view(6);
        v[1].lifecycle = Lifecycle::Stopped;
        v[2].lifecycle = Lifecycle::Leaving;
        let set = bounded_probe_set(STACKED3, &v, &v[5], 0);
        assert!(set.iter().all(|p| p.id != "i-0001" && p.id != "i-0002"));
        assert_eq!(set.len(), 3);
    }

    fn member(id: u64) -> MemberHealth {
        MemberHealth {
            id,
            name: format!("m{id}"),
            is_learner: false,
            healthy: true,
            unhealthy_for_ms: 0,
            in_group: Some(true),
        }
    }

    #[test]
    fn calm_needs_a_leader_the_wanted_voters_all_healthy_and_none_gone() {
        let three: Vec<MemberHealth> = (1..=3).map(member).collect();
        assert!(calm(&three, 1, 3));
        // A static list cannot tell: listed is fine.
        let mut listed = three.clone();
        listed[0].in_group = None;
        assert!(calm(&listed, 1, 3));
        assert!(!calm(&three, 0, 3), "no leader");
        assert!(!calm(&three[..2], 1, 3), "a seat open");
        assert!(!calm(&three, 1, 5), "fewer than wanted");
        let mut sick = three.clone();
        sick[2].healthy = false;
        assert!(!calm(&sick, 1, 3));
        let mut learner = three.clone();
        learner.push(MemberHealth {
            is_learner: true,
            ..member(4)
        });
        assert!(!calm(&learner, 1, 3), "a learner waits for promotion");
        let mut gone = three.clone();
        gone[1].in_group = Some(false);
        assert!(!calm(&gone, 1, 3), "gone or leaving from the group");
    }

    #[test]
    fn a_listing_serves_the_next_rounds_for_a_few_seconds_only() {
        assert!(!reuse_listing(None));
        assert!(reuse_listing(Some(Duration::ZERO)));
        assert!(reuse_listing(Some(
            LISTING_REUSE - Duration::from_millis(1)
        )));
        assert!(!reuse_listing(Some(LISTING_REUSE)));
    }
}
