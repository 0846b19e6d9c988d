//! What the DNS provider tests share: the names of one test cluster and
//! node lists to publish.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use muster::dns::records::Names;

/// `api.<zone>` and `<node>.nodes.<zone>`, TTL 60, owner `prod`.
pub fn names(zone: &str) -> Names {
    Names {
        zone: zone.into(),
        api: format!("api.{zone}"),
        nodes: Some(format!("nodes.{zone}")),
        ttl: 60,
        owner: "prod".into(),
    }
}

/// `node-<i>` → `10.1.<i / 250>.<1 + i % 250>` for `i` in `range`.
pub fn nodes(range: std::ops::Range<usize>) -> BTreeMap<String, IpAddr> {
    range
        .map(|i| {
            let ip = format!("10.1.{}.{}", i / 250, 1 + i % 250);
            (format!("node-{i}"), ip.parse().expect("ip"))
        })
        .collect()
}

/// Named nodes, from `(hostname, address)` pairs.
pub fn named(list: &[(&str, &str)]) -> BTreeMap<String, IpAddr> {
    list.iter()
        .map(|(h, ip)| (h.to_string(), ip.parse().expect("ip")))
        .collect()
}

pub fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

/// The provider scenarios seed `node-0` as another owner's record: the
/// first publish must report exactly that conflict.
pub fn assert_only_node0_conflict(plan: &muster::dns::plan::DnsPlan, zone: &str) {
    let conflicts: Vec<String> = plan.conflicts.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        conflicts,
        [format!(
            "node-0.nodes.{zone}: owned by ExternalDNS owner `other`"
        )]
    );
}

/// `node-0 .. node-(n-1)` with `node-7` replaced by `node-n`.
pub fn node7_replaced(n: usize) -> BTreeMap<String, IpAddr> {
    let mut replaced = nodes(0..n);
    replaced.remove("node-7");
    replaced.extend(nodes(n..n + 1));
    replaced
}
