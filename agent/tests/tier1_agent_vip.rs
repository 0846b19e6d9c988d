//! Tier 1: the real `muster agent` holds the L2 API VIP (`apiEndpoint.mode:
//! arp`) once etcd has formed, exactly one node at a time, and a power cut of
//! the holder moves it to another node. The election and ARP details are
//! tested in depth (observer, partitions, clean stop) in tier1_vip.rs; this
//! checks the agent wires them up.

#[path = "support/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "support/netns.rs"]
mod netns;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cluster::Cluster;
use netns::wait_until;

/// The nodes whose eth0 carries the VIP right now.
fn holders(c: &Cluster, vip: Ipv4Addr, alive: &[usize]) -> Vec<usize> {
    alive
        .iter()
        .copied()
        .filter(|&i| {
            c.nodes[i]
                .host
                .ip_cmd(&["-4", "addr", "show", "dev", "eth0"])
                .contains(&format!("inet {vip}/32"))
        })
        .collect()
}

#[test]
fn the_agents_hold_the_vip_on_one_node_and_move_it_when_the_holder_dies() {
    let mut vip = Ipv4Addr::UNSPECIFIED;
    let mut c = Cluster::with_discovery("avip", 3, |net| {
        vip = net.spare_ip(0);
        let prefix = net.subnet().trim_end_matches("0/24").to_string();
        format!(
            "discovery:\n  static:\n    peers: [\"{prefix}11\", \"{prefix}12\", \"{prefix}13\"]\n\
             apiEndpoint:\n  vip: {vip}\n  mode: arp\n  interface: eth0\n"
        )
    });
    for i in 0..3 {
        c.add_host();
        c.start_agent(i);
    }
    c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(60));
    let all = [0, 1, 2];
    let mut holder = None;
    wait_until(
        "one node holds the VIP",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let h = holders(&c, vip, &all);
            assert!(h.len() <= 1, "two nodes hold the VIP: {h:?}");
            holder = h.first().copied();
            holder.is_some()
        },
    )
    .expect("the VIP is taken");
    let holder = holder.expect("holder");

    c.power_off(holder);
    let killed = Instant::now();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != holder).collect();
    wait_until(
        "another node holds the VIP",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let h = holders(&c, vip, &rest);
            assert!(h.len() <= 1, "two nodes hold the VIP: {h:?}");
            h.len() == 1
        },
    )
    .expect("the VIP moves");
    eprintln!(
        "holder powered off -> VIP address on another node after {:?}",
        killed.elapsed()
    );
}
