//! Tier 1: DNS SRV discovery against a real BIND 9 in a namespace. The
//! source reads the targets' addresses from the zone and sees a change at
//! once (no cache); three real agents whose only peer list is the SRV
//! record form one etcd cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use muster::discovery::dns_srv::SrvSource;

use crate::support::bind::Bind;
use crate::support::cluster::Cluster;

const ZONE: &str = "example.test";
const SRV: &str = "_muster._tcp.example.test";

#[test]
fn srv_records_list_the_group_and_agents_form_etcd_from_them() {
    let mut c = Cluster::with_discovery("srv", 3, |net| {
        // The server will be the fourth host (after the three nodes).
        let prefix = net.subnet().trim_end_matches("0/24").to_string();
        format!(
            "discovery:\n  dns:\n    name: {SRV}\n    record: SRV\n    nameserver: \"{prefix}14\"\n"
        )
    });
    for _ in 0..3 {
        c.add_host();
    }
    let ns = c.net.add_host("ns");
    let bind = Bind::start(&ns, ZONE);
    let ips: Vec<String> = c.nodes.iter().map(|n| n.host.ip().to_string()).collect();
    let mut update = String::new();
    for (i, ip) in ips.iter().enumerate() {
        update.push_str(&format!(
            "update add h{n}.{ZONE} 60 A {ip}\nupdate add {SRV} 60 SRV 0 0 2379 h{n}.{ZONE}.\n",
            n = i + 1
        ));
    }
    bind.nsupdate(&ns, &update);

    // The source, from node 0's namespace.
    let server = ns.ip().to_string();
    let listed = |c: &Cluster| -> BTreeSet<String> {
        c.nodes[0].host.block_on(async || {
            let source = SrvSource::new(SRV, Some(&server)).expect("source");
            source
                .list()
                .await
                .expect("list")
                .into_iter()
                .map(|p| p.id)
                .collect()
        })
    };
    assert_eq!(listed(&c), ips.iter().cloned().collect::<BTreeSet<_>>());
    // A target removed is gone on the next look.
    bind.nsupdate(&ns, &format!("update delete {SRV} SRV 0 0 2379 h3.{ZONE}."));
    assert_eq!(
        listed(&c),
        ips[..2].iter().cloned().collect::<BTreeSet<_>>()
    );
    bind.nsupdate(&ns, &format!("update add {SRV} 60 SRV 0 0 2379 h3.{ZONE}."));

    // Three agents whose peer list is the SRV record.
    for i in 0..3 {
        c.start_agent(i);
    }
    let id = c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(90));
    assert!(!id.is_empty());
}
