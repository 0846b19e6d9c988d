//! Tier 1, GCE end to end: the stateful Compute fake (`support/fake_compute.rs`,
//! no GCE emulator exists) plays the metadata server and the Compute API in
//! a "cloud" host of the test network; a managed instance group of 5
//! instances is made there, one host per instance with the instance's
//! address, each running the real `muster agent` with
//! `discovery.cloudGroup.provider: gce` and `apiEndpoint.mode: gce`. The
//! agents read project, zone, name and token from the metadata server (the
//! fake tells instances apart by source address), list the group through
//! the Compute API, form etcd and move the VIP as an alias IP range.
//!
//! Asserted: 3 etcd members named by instance id + 2 workers; exactly one
//! instance holds the alias and only its host has the /32; the holder's
//! machine powered off (GCE keeps a stopped instance's ranges) → another
//! control-plane instance takes the range off it and holds it alone; the
//! group replaces the stopped instance → the cluster is back at 3 healthy
//! voters (a worker or the replacement took the seat the stopped instance
//! kept while it might start again).
//! Real Google latency is not measured here (the fake finishes an operation
//! in 300 ms; Google documents up to a minute, see docs/design/vip.md).

use crate::support::cluster;
use crate::support::fake_compute::FakeCompute;
use crate::support::gce_group::{add_instance, attach, serve_in};
use crate::support::netns;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cluster::Cluster;
use netns::wait_until;

#[test]
fn a_managed_instance_group_assembles_and_moves_the_alias_ip() {
    let mut c = Cluster::with_discovery("gce", 3, |net| {
        format!(
            "discovery:\n  cloudGroup:\n    provider: gce\n\
             apiEndpoint:\n  vip: {}\n  mode: gce\n  interface: eth0\n",
            net.spare_ip(0)
        )
    });
    let vip = c.net.spare_ip(0);
    let cloud = c.net.add_host("cloud");
    let fake = FakeCompute::new(&[]);
    fake.with(|s| s.target_size = 5);
    let served = serve_in(&cloud, &fake);
    attach(&mut c, &served);

    let names = [
        "muster-cp-a1",
        "muster-cp-b2",
        "muster-cp-c3",
        "muster-cp-d4",
        "muster-cp-e5",
    ];
    let nodes: Vec<(usize, u64)> = names
        .iter()
        .map(|n| add_instance(&mut c, &fake, n))
        .collect();
    let start = Instant::now();
    for (i, _) in &nodes {
        c.start_agent(*i);
    }
    let all: Vec<usize> = nodes.iter().map(|(i, _)| *i).collect();
    let mut members = Vec::new();
    wait_until(
        "3 control-plane agents and 2 workers",
        Duration::from_secs(120),
        Duration::from_millis(300),
        || {
            let roles: Vec<Option<String>> = all
                .iter()
                .map(|&i| {
                    c.status(i)
                        .and_then(|s| s["role"].as_str().map(str::to_string))
                })
                .collect();
            members = all
                .iter()
                .zip(&roles)
                .filter(|(_, r)| r.as_deref() == Some("control-plane"))
                .map(|(i, _)| *i)
                .collect();
            let workers = roles
                .iter()
                .filter(|r| r.as_deref() == Some("worker"))
                .count();
            members.len() == 3 && workers == 2
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            all.iter().map(|&i| c.status(i)).collect::<Vec<_>>()
        )
    });
    c.wait_for_cluster(&members, 3, Duration::from_secs(90));
    eprintln!(
        "5 agents via the fake GCE group -> 3 healthy voting members + 2 workers: {:?}",
        start.elapsed()
    );
    let member_names: Vec<String> = c.status(members[0]).expect("status")["etcd"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default().to_string())
        .collect();
    for m in &members {
        let id = nodes.iter().find(|(i, _)| i == m).expect("node").1;
        assert!(
            member_names.contains(&id.to_string()),
            "members are named by instance id: {member_names:?}"
        );
    }

    let first = wait_for_alias(&c, &fake, vip, &members, &names, Duration::from_secs(60));
    eprintln!("VIP held by {} (alias range and /32)", names[first]);
    assert!(
        fake.with(|s| s
            .calls
            .iter()
            .any(|(m, p)| m == "PATCH" && p.ends_with("updateNetworkInterface"))),
        "moved through updateNetworkInterface"
    );

    // Power off the holder's machine: GCE keeps a stopped instance's alias
    // ranges, so the next holder has to take the VIP off it.
    c.power_off(first);
    c.nodes[first].host.link_down();
    fake.with(|s| s.stop(names[first]));
    assert_eq!(
        fake.alias_holders(vip),
        [names[first]],
        "the stopped instance still lists it"
    );
    let off = Instant::now();
    let survivors: Vec<usize> = members.iter().copied().filter(|&m| m != first).collect();
    let second = wait_for_alias(&c, &fake, vip, &survivors, &names, Duration::from_secs(60));
    eprintln!(
        "holder powered off -> alias range on {} alone after {:?}",
        names[second],
        off.elapsed()
    );

    // The group replaces the stopped instance. While it was only stopped
    // (it may start again) it kept its seat; now a worker or the
    // replacement takes the seat, whichever asks first (S7).
    c.destroy(first);
    let replacement = "muster-cp-f6";
    fake.with(|s| s.instances.retain(|i| i.name != names[first]));
    let (new, _) = add_instance(&mut c, &fake, replacement);
    let started = Instant::now();
    c.start_agent(new);
    let candidates: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| i != first)
        .chain([new])
        .collect();
    let mut now_members = Vec::new();
    wait_until(
        "3 control-plane agents again",
        Duration::from_secs(90),
        Duration::from_millis(300),
        || {
            now_members = candidates
                .iter()
                .copied()
                .filter(|&i| c.status(i).is_some_and(|s| s["role"] == "control-plane"))
                .collect();
            now_members.len() == 3
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.wait_for_cluster(&now_members, 3, Duration::from_secs(90));
    eprintln!(
        "replacement instance agent start -> 3 healthy voting members again: {:?}",
        started.elapsed()
    );
    wait_until(
        "the replacement has a role",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || c.status(new).is_some_and(|s| s["role"].is_string()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut all_names: Vec<&str> = names.to_vec();
    all_names.push(replacement);
    let holder = wait_for_alias(
        &c,
        &fake,
        vip,
        &now_members,
        &all_names,
        Duration::from_secs(30),
    );
    assert!(now_members.contains(&holder));
    drop(served);
}

/// Waits until exactly one instance lists the VIP and exactly that one of
/// `alive` has the /32 on eth0; returns its node index.
fn wait_for_alias(
    c: &Cluster,
    fake: &FakeCompute,
    vip: Ipv4Addr,
    alive: &[usize],
    names: &[&str],
    timeout: Duration,
) -> usize {
    let mut holder = None;
    wait_until(
        "one alias holder, alone with the address",
        timeout,
        Duration::from_millis(200),
        || {
            holder = match (
                fake.alias_holders(vip).as_slice(),
                c.vip_holders(vip, alive).as_slice(),
            ) {
                ([name], [local]) if names.get(*local) == Some(&name.as_str()) => Some(*local),
                _ => None,
            };
            holder.is_some()
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: in the fake: {:?}; with the /32: {:?}",
            fake.alias_holders(vip),
            c.vip_holders(vip, alive)
        )
    });
    holder.expect("holder")
}
