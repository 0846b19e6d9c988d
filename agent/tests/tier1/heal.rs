//! Tier 1, invariant S7 (docs/design/bootstrap.md): a cluster whose voters
//! died comes back to its configured size, from the workers it already has
//! and from replacement machines that start together while the dead members
//! are still listed — the race of issue 14, where the second replacement
//! settled as a worker for good and the cluster stayed one voter short.
//! Real agents and etcd 3.5 in namespaces, a static list of 9 slots,
//! `controlPlane.count: 5`; and add before remove on three voters.

use crate::support::cluster;
use crate::support::netns;

use std::time::{Duration, Instant};

use cluster::Cluster;
use netns::wait_until;

fn put_keys(c: &Cluster, node: usize, n: usize) {
    c.put_keys(node, "/heal/", n);
}

fn count_keys(c: &Cluster, node: usize) -> usize {
    c.keys(node, "/heal/").len()
}

#[test]
fn voters_lost_for_good_are_replaced_by_workers_and_by_replacements_started_together() {
    let mut c = Cluster::new("heal", 9, 5);
    for i in 0..7 {
        c.add_host();
        c.start_agent(i);
    }
    c.wait_for_cluster(&[0, 1, 2, 3, 4], 5, Duration::from_secs(90));
    wait_until(
        "two workers",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || (5..7).all(|i| c.status(i).is_some_and(|s| s["role"] == "worker")),
    )
    .expect("hosts 6 and 7 become workers");
    put_keys(&c, 2, 20);
    let id = c.etcd_view(2).expect("view").cluster_id;

    // Two voters gone for good, no new machine: the workers step in.
    c.destroy(0);
    c.destroy(1);
    let lost = Instant::now();
    c.wait_for_cluster(&[2, 3, 4, 5, 6], 5, Duration::from_secs(120));
    eprintln!(
        "two voters destroyed -> 5 healthy voters again (both workers stepped in): {:?}",
        lost.elapsed()
    );
    for i in [5, 6] {
        assert_eq!(
            c.status(i).expect("status")["role"],
            "control-plane",
            "node {i}"
        );
    }

    // Two more gone; two replacements (slots 8 and 9) start half a second
    // apart while the dead members are still listed.
    c.destroy(2);
    c.destroy(3);
    let new1 = c.add_host();
    c.start_agent(new1);
    std::thread::sleep(Duration::from_millis(500));
    let new2 = c.add_host();
    c.start_agent(new2);
    let started = Instant::now();
    let now = c.wait_for_cluster(&[4, 5, 6, new1, new2], 5, Duration::from_secs(120));
    eprintln!(
        "two more destroyed, two replacements started 0.5 s apart -> 5 healthy voters: {:?}",
        started.elapsed()
    );
    assert_eq!(now, id, "S1: the same cluster throughout");
    for i in [new1, new2] {
        assert_eq!(
            c.status(i).expect("status")["role"],
            "control-plane",
            "node {i}"
        );
    }
    assert_eq!(count_keys(&c, new2), 20, "S2: the data is all there");
}

/// Add before remove (issue 14, fault campaign seed 0xc0de0006): a voter
/// that is only unreachable keeps its seat while removing it would leave no
/// margin, so when another voter is then lost for good, its return restores
/// quorum; a replacement then takes the lost one's seat.
#[test]
fn an_unreachable_voter_keeps_its_seat_so_its_return_restores_quorum() {
    let mut c = Cluster::new("seat", 4, 3);
    for i in 0..3 {
        c.add_host();
        c.start_agent(i);
    }
    let id = c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(90));
    put_keys(&c, 2, 20);

    c.power_off(1);
    // Well past the 3 s grace: the old rule removed it by now.
    std::thread::sleep(Duration::from_secs(8));
    let listed = c.etcd_view(2).expect("view").listed;
    assert_eq!(listed, 3, "the unreachable voter keeps its seat");

    // Another voter lost for good: no quorum until the first one is back.
    c.destroy(0);
    c.start_agent(1);
    let new = c.add_host();
    let started = Instant::now();
    c.start_agent(new);
    let now = c.wait_for_cluster(&[1, 2, new], 3, Duration::from_secs(120));
    eprintln!(
        "one voter back, one lost for good, a replacement started -> 3 healthy voters: {:?}",
        started.elapsed()
    );
    assert_eq!(now, id, "S1: the same cluster throughout");
    assert_eq!(count_keys(&c, new), 20, "S2: the data is all there");
}

/// A member removed while it was cut off (the shape of fault campaign seed
/// 0xc0df001f) comes back on the net, sets its data aside and joins afresh
/// when its seat is needed again, because another voter is then lost.
/// In that seed, under load, the removed member's etcd 3.5 process did not
/// exit (known: etcd-io/etcd#7512, #3787) and answered status and the member
/// list from memory; that hang did not happen here unloaded (tried with a
/// watch and a writer on the member), so the campaign's replay under load
/// is what covers it.
#[test]
fn a_member_removed_while_cut_off_rejoins_when_its_seat_is_needed() {
    let mut c = Cluster::new("zombie", 4, 3);
    for i in 0..3 {
        c.add_host();
        c.start_agent(i);
    }
    let id = c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(90));
    put_keys(&c, 1, 20);

    // Node 0 cut off; a new machine takes its seat, then node 0 is removed
    // (add before remove).
    c.nodes[0].host.link_down();
    let new = c.add_host();
    c.start_agent(new);
    c.wait_for_cluster(&[1, 2, new], 3, Duration::from_secs(120));
    c.nodes[0].host.link_up();

    // Another voter lost for good: node 0, removed but still running, is
    // the only machine that can fill the seat.
    c.destroy(1);
    let lost = Instant::now();
    let now = c.wait_for_cluster(&[0, 2, new], 3, Duration::from_secs(120));
    eprintln!(
        "removed member back on the net, another voter destroyed -> 3 healthy voters: {:?}",
        lost.elapsed()
    );
    assert_eq!(now, id, "S1: the same cluster throughout");
    assert_eq!(count_keys(&c, 0), 20, "S2: the data is all there");
}
