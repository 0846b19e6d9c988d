//! Tier 1: the real `muster agent` holds the L2 API VIP (`apiEndpoint.mode:
//! arp`) once etcd has formed, exactly one node at a time, and a power cut of
//! the holder moves it to another node. The election and ARP details are
//! tested in depth (observer, partitions, clean stop) in tier1/vip.rs; this
//! checks the agent wires them up, in ARP mode and in BGP mode (against
//! bird2 as the router).

use crate::support::cluster;
use crate::support::netns;
use crate::support::vip_lab;

use std::net::Ipv4Addr;

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

use cluster::Cluster;
use netns::wait_until;
use serde_json::Value;

/// Every node's status endpoint, read over the network from another node
/// (as the lab on the host does), names the holder, reports the formed
/// etcd, and shows no secret (S5).
fn status_endpoints_name_the_holder(c: &Cluster, nodes: &[usize], holder: usize) {
    let reader = nodes
        .iter()
        .copied()
        .find(|&i| i != holder)
        .expect("another node");
    let status = |i: usize| {
        c.status_get(reader, i, "/status")
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| serde_json::from_str::<Value>(&a.body).ok())
    };
    wait_until(
        "the status endpoints name the VIP holder",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            nodes.iter().all(|&i| {
                status(i).is_some_and(|s| {
                    s["vip"]["holder"] == (i == holder)
                        && s["etcd"]["members"].as_array().map(Vec::len) == Some(nodes.len())
                })
            })
        },
    )
    .unwrap_or_else(|e| {
        let all: Vec<_> = nodes.iter().map(|&i| status(i)).collect();
        panic!("{e}; statuses: {all:#?}")
    });
    let metrics = c
        .status_get(reader, holder, "/metrics")
        .expect("GET /metrics");
    assert!(
        metrics.body.contains("muster_vip_holder 1\n"),
        "{}",
        metrics.body
    );
    for &i in nodes {
        for path in ["/status", "/metrics"] {
            let body = c.status_get(reader, i, path).expect("GET").body;
            assert!(
                !body.contains(cluster::SECRET),
                "node {i} {path} shows the secret"
            );
        }
    }
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
            let h = c.vip_holders(vip, &all);
            assert!(h.len() <= 1, "two nodes hold the VIP: {h:?}");
            holder = h.first().copied();
            holder.is_some()
        },
    )
    .expect("the VIP is taken");
    let holder = holder.expect("holder");
    status_endpoints_name_the_holder(&c, &all, holder);

    c.power_off(holder);
    let killed = Instant::now();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != holder).collect();
    wait_until(
        "another node holds the VIP",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let h = c.vip_holders(vip, &rest);
            assert!(h.len() <= 1, "two nodes hold the VIP: {h:?}");
            h.len() == 1
        },
    )
    .expect("the VIP moves");
    eprintln!(
        "holder powered off -> VIP address on another node after {:?}",
        killed.elapsed()
    );

    // A holder that stops running (SIGSTOP: starved or frozen; its etcd
    // member runs on): the other node takes over after `takeover_after`,
    // and the kernel removes the frozen holder's address when its lifetime
    // runs out, since nothing renews it (S4's backstop).
    let frozen = c.vip_holders(vip, &rest)[0];
    let other = rest.iter().copied().find(|&i| i != frozen).expect("other");
    c.nodes[frozen]
        .agent
        .as_mut()
        .expect("agent")
        .kill(Signal::SIGSTOP);
    let stopped = Instant::now();
    let (mut both_since, mut overlap) = (None::<Instant>, Duration::ZERO);
    wait_until(
        "the other node alone holds the VIP",
        Duration::from_secs(30),
        Duration::from_millis(10),
        || {
            let h = c.vip_holders(vip, &rest);
            match (h.len(), both_since) {
                (2, None) => both_since = Some(Instant::now()),
                (2, Some(_)) => {}
                (_, Some(t)) => {
                    overlap += t.elapsed();
                    both_since = None;
                }
                _ => {}
            }
            h == [other]
        },
    )
    .unwrap_or_else(|e| panic!("{e}: holders {:?}", c.vip_holders(vip, &rest)));
    let bound = muster::vip::election::Timing::default().frozen_holder_overlap();
    eprintln!(
        "holder frozen -> the other node alone after {:?}; both had the address for {overlap:?} (stated bound {bound:?})",
        stopped.elapsed()
    );
    assert!(
        overlap <= bound + Duration::from_millis(300),
        "a frozen holder overlapped its successor for {overlap:?}"
    );
    // Thawed, it finds its claim long expired: never two holders, and one
    // holder again soon (not always the same: removing the powered-off
    // member from etcd drops proposals for a moment, and the holder may
    // have to hand over).
    c.nodes[frozen]
        .agent
        .as_mut()
        .expect("agent")
        .kill(Signal::SIGCONT);
    let thawed = Instant::now();
    while thawed.elapsed() < Duration::from_secs(3) {
        let holders = c.vip_holders(vip, &rest);
        assert!(holders.len() <= 1, "after the thaw: {holders:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until(
        "one holder after the thaw",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            let holders = c.vip_holders(vip, &rest);
            assert!(holders.len() <= 1, "after the thaw: {holders:?}");
            holders.len() == 1
        },
    )
    .expect("a holder");
}

#[test]
fn the_agents_announce_the_vip_over_bgp_and_the_route_moves_when_the_holder_dies() {
    let vip = vip_lab::BGP_VIP;
    let mut c = Cluster::with_discovery("abgp", 3, |net| {
        let prefix = net.subnet().trim_end_matches("0/24").to_string();
        // The router is the fourth host of the Net: .14.
        format!(
            "discovery:\n  static:\n    peers: [\"{prefix}11\", \"{prefix}12\", \"{prefix}13\"]\n\
             apiEndpoint:\n  vip: {vip}\n  mode: bgp\n  bgp:\n    localAsn: {}\n    holdTime: 3\n\
             \x20   peers:\n      - {{address: \"{prefix}14\", asn: {}}}\n",
            vip_lab::NODE_ASN,
            vip_lab::ROUTER_ASN
        )
    });
    for _ in 0..3 {
        c.add_host();
    }
    let router = c.net.add_host("rtr");
    let nodes: Vec<_> = c.nodes.iter().map(|n| n.host.clone()).collect();
    let _bird = vip_lab::start_bird(&router, &nodes, 3);
    let socket = router.dir().join("bird.ctl");
    let routes = || {
        vip_lab::bird_routes(&socket, vip)
            .map(|(hops, _)| hops)
            .unwrap_or_default()
    };
    for i in 0..3 {
        c.start_agent(i);
    }
    c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(60));
    let mut holder = None;
    wait_until(
        "the router routes the VIP to one node",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let r = routes();
            assert!(r.len() <= 1, "two routes for the VIP: {r:?}");
            holder = r
                .first()
                .and_then(|ip| nodes.iter().position(|h| h.ip() == *ip));
            holder.is_some()
        },
    )
    .expect("the VIP is announced");
    let holder = holder.expect("holder");
    assert!(
        c.nodes[holder]
            .host
            .ip_cmd(&["-4", "addr", "show", "dev", "lo"])
            .contains(&format!("inet {vip}/32")),
        "the holder answers for the VIP on lo"
    );

    // Every process of the node is SIGKILLed (agent and etcd); its network
    // stays up, so the kernel closes the agent's BGP session at once.
    c.power_off(holder);
    let killed = Instant::now();
    let old_ip = nodes[holder].ip();
    wait_until(
        "the router routes the VIP to another node",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let r = routes();
            r.len() == 1 && r[0] != old_ip
        },
    )
    .unwrap_or_else(|e| panic!("{e}; routes now: {:?}", routes()));
    eprintln!(
        "bgp: holder powered off -> route via another node alone after {:?}",
        killed.elapsed()
    );
}
