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
