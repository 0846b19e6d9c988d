//! Tier 1, cloud-group discovery end to end: moto (the AWS API emulator) runs
//! in a "cloud" host of the test network; an Auto Scaling group of 5
//! instances is created there; each instance becomes a host with the
//! instance's private IP, running the real `muster agent` that discovers its
//! peers through DescribeAutoScalingGroups + DescribeInstances (SigV4).
//! Checks: 3 etcd members named by instance id + 2 workers; then an etcd
//! member's instance is terminated, the group launches a replacement, and the
//! new agent takes the dead member's place (removed at once: its machine left
//! the group, no grace period needed).

use std::time::{Duration, Instant};

use crate::support::asg_lab::{self, Moto, add_instance};
use crate::support::netns::wait_until;

const GROUP: &str = "muster-cp";

#[test]
fn an_autoscaling_group_assembles_itself_and_replaces_a_terminated_member() {
    let (mut c, cloud, api) = asg_lab::start("asg", GROUP, 5, Moto::Plain);
    let endpoint = api.endpoint.clone();
    let peers = asg_lab::in_service(&cloud, &endpoint, GROUP);
    assert_eq!(peers.len(), 5, "{peers:#?}");

    let start = Instant::now();
    for peer in &peers {
        let i = add_instance(&mut c, peer, GROUP);
        c.start_agent(i);
    }
    // The first three in (launch time, instance id) order form etcd.
    let mut order = peers.clone();
    order.sort_by(muster::roles::compare);
    let first: Vec<usize> = (0..3)
        .map(|n| {
            peers
                .iter()
                .position(|p| p.id == order[n].id)
                .expect("index")
        })
        .collect();
    c.wait_for_cluster(&first, 3, Duration::from_secs(90));
    eprintln!(
        "5 agents via the AWS group API (10 s settle time) -> 3 healthy voting members: {:?}",
        start.elapsed()
    );
    for (i, peer) in peers.iter().enumerate() {
        let want = if first.contains(&i) {
            "control-plane"
        } else {
            "worker"
        };
        wait_until(
            "roles settle",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || c.status(i).is_some_and(|s| s["role"] == want),
        )
        .unwrap_or_else(|e| panic!("{} ({}): {e}: {:?}", peer.id, peer.address, c.status(i)));
    }
    let names: Vec<String> = c.status(first[0]).expect("status")["etcd"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default().to_string())
        .collect();
    for n in &first {
        assert!(
            names.contains(&peers[*n].id),
            "members are named by instance id: {names:?}"
        );
    }

    // Terminate one etcd member's instance; the group launches a replacement.
    let victim = first[1];
    asg_lab::terminate(&cloud, &endpoint, &peers[victim].id);
    c.destroy(victim);
    let mut replacement = None;
    wait_until(
        "the group launches a replacement",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            replacement = asg_lab::in_service(&cloud, &endpoint, GROUP)
                .into_iter()
                .find(|p| peers.iter().all(|q| q.id != p.id));
            replacement.is_some()
        },
    )
    .expect("replacement instance");
    let replacement = replacement.expect("replacement");
    let new = add_instance(&mut c, &replacement, GROUP);
    let started = Instant::now();
    c.start_agent(new);
    let survivors: Vec<usize> = first
        .iter()
        .copied()
        .filter(|i| *i != victim)
        .chain([new])
        .collect();
    c.wait_for_cluster(&survivors, 3, Duration::from_secs(90));
    eprintln!(
        "terminated member's replacement agent start -> healthy voting member: {:?}",
        started.elapsed()
    );
    assert_eq!(c.status(new).expect("status")["role"], "control-plane");
}
