//! The DNS hand-over, run inside the Kubernetes scenario (tier1/kubernetes.rs)
//! so that it costs no second control-plane start: with real
//! kube-apiservers, the publisher installs the DNSEndpoint CRD and applies
//! DNSEndpoint objects; their content equals the records in the real BIND
//! field by field (names, types, targets, TTLs, and the ownership TXT's
//! resource label naming the object). ExternalDNS itself cannot run here
//! (no image pulls): its adoption is its one write the agent reads,
//! `status.observedGeneration`, made with kubectl as ExternalDNS would.
//! After it the agent stops writing DNS: a record removed by hand stays
//! removed, while the DNSEndpoints still describe it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::bind::Bind;
use crate::support::cluster::Cluster;
use crate::support::kubernetes::kubectl_ok;
use crate::support::netns::{Host, wait_until};

pub const ZONE: &str = "example.test";
pub const INTERVAL_SECS: u64 = 2;

/// The `dns:` section for a cluster whose BIND runs on `server`.
pub fn config(server: Ipv4Addr) -> String {
    format!(
        "dns:\n  provider: rfc2136\n  zone: {ZONE}\n  nodesSubdomain: nodes\n  interval: {INTERVAL_SECS}s\n  \
         rfc2136:\n    server: \"{server}\"\n    tsig: {{keyName: {}, secret: \"{}\"}}\n",
        crate::support::bind::KEY_NAME,
        crate::support::bind::KEY_SECRET
    )
}

/// `(ttl, targets)` of `name`'s A record as BIND serves it.
fn served(bind: &Bind, from: &Host, name: &str) -> (u64, BTreeSet<String>) {
    let out = bind.dig(from, &["+noall", "+answer", "A", name]);
    let mut ttl = 0;
    let mut targets = BTreeSet::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_, t, "IN", "A", ip] = f[..] {
            ttl = t.parse().unwrap_or(0);
            targets.insert(ip.to_string());
        }
    }
    (ttl, targets)
}

fn endpoints(c: &Cluster, admin: &Path) -> Option<Value> {
    let text = kubectl_ok(
        &c.nodes[0].host,
        admin,
        &["-n", "kube-system", "get", "dnsendpoints", "-o", "json"],
    )?;
    serde_json::from_str(&text).ok()
}

pub fn check(
    c: &Cluster,
    admin: &Path,
    bind: &Bind,
    ns: &Host,
    vip: Ipv4Addr,
    diagnose: impl Fn() -> String,
) {
    let api = format!("api.{ZONE}");
    wait_until(
        "the API name resolves to the VIP",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || served(bind, ns, &api).1 == [vip.to_string()].into(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose()));
    // Both objects, with every node listed.
    let mut list = Value::Null;
    wait_until(
        "the DNSEndpoints describe the API and three nodes",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            list = endpoints(c, admin).unwrap_or(Value::Null);
            let count: usize = list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| i["spec"]["endpoints"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            count == 4
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {list:#}\n{}", diagnose()));
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    for item in &items {
        let object = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for ep in item["spec"]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = ep["dnsName"].as_str().unwrap_or_default().to_string();
            assert_eq!(ep["recordType"], "A", "{ep}");
            let targets: BTreeSet<String> = ep["targets"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let (ttl, in_dns) = served(bind, ns, &name);
            assert_eq!(in_dns, targets, "{name}: BIND vs DNSEndpoint {object}");
            assert_eq!(ep["recordTTL"].as_u64(), Some(ttl), "{name}: TTL");
            assert_eq!(
                bind.dig(ns, &["+short", "TXT", &format!("a-{name}")])
                    .trim(),
                format!(
                    "\"heritage=external-dns,external-dns/owner=k8s,external-dns/resource=crd/kube-system/{object}\""
                ),
                "{name}: ownership names the object that describes it"
            );
            names.push(name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            api.clone(),
            format!("h1.nodes.{ZONE}"),
            format!("h2.nodes.{ZONE}"),
            format!("h3.nodes.{ZONE}")
        ]
    );

    // ExternalDNS's adoption, as it writes it.
    for item in &items {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let generation = item["metadata"]["generation"].as_i64().unwrap_or(0);
        let patch = format!("{{\"status\":{{\"observedGeneration\":{generation}}}}}");
        kubectl_ok(
            &c.nodes[0].host,
            admin,
            &[
                "-n",
                "kube-system",
                "patch",
                "dnsendpoint",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
        )
        .unwrap_or_else(|| panic!("patch the status of {name}\n{}", diagnose()));
    }
    wait_until(
        "the publisher reports the hand-over",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            (0..c.nodes.len()).any(|i| {
                c.status(i)
                    .is_some_and(|s| s["dns"]["state"] == "handed over")
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose()));
    // From now on the agent writes no DNS: a record removed by hand stays
    // removed for three intervals (ExternalDNS would restore it).
    bind.nsupdate(ns, &format!("update delete h2.nodes.{ZONE} A"));
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    assert!(
        served(bind, ns, &format!("h2.nodes.{ZONE}")).1.is_empty(),
        "the agent wrote DNS after the hand-over"
    );
    assert!(
        endpoints(c, admin).is_some_and(|l| l.to_string().contains(&format!("h2.nodes.{ZONE}"))),
        "the DNSEndpoints still describe h2"
    );
}
