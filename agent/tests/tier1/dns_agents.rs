//! Tier 1: three real agents (etcd only, static peers, no VIP) publish the
//! API name and their node names to a real BIND 9 through the rfc2136
//! provider: exactly one publishes, the rest stand by; the API name lists
//! every control-plane node (no VIP); steady state writes nothing; a clean
//! stop removes that node's name, a restart brings it back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::bind::{Bind, KEY_NAME, KEY_SECRET};
use crate::support::cluster::Cluster;
use crate::support::netns::{Host, wait_until};

const ZONE: &str = "example.test";
const INTERVAL_SECS: u64 = 2;

fn a_records(bind: &Bind, from: &Host, name: &str) -> BTreeSet<String> {
    bind.dig(from, &["+short", "A", name])
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

fn dns_states(c: &Cluster, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| {
            c.status(i)
                .and_then(|s| s["dns"]["state"].as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn agents_publish_api_and_node_names_and_a_clean_stop_removes_its_name() {
    let mut c = Cluster::new("dnsag", 3, 3);
    for _ in 0..3 {
        c.add_host();
    }
    // After the three slots: the server is not a listed peer.
    let ns = c.net.add_host("ns");
    let bind = Bind::start(&ns, ZONE);
    c.append_config(&format!(
        "dns:\n  provider: rfc2136\n  zone: {ZONE}\n  nodesSubdomain: nodes\n  interval: {INTERVAL_SECS}s\n  \
         rfc2136:\n    server: \"{}\"\n    tsig: {{keyName: {KEY_NAME}, secret: \"{KEY_SECRET}\"}}\n",
        ns.ip()
    ));
    let ips: Vec<String> = c.nodes.iter().map(|n| n.host.ip().to_string()).collect();
    let started = Instant::now();
    for i in 0..3 {
        c.start_agent(i);
    }
    let diagnose = |c: &Cluster| {
        format!(
            "zone:\n{}\nstatus of node 0: {:?}\nagent log of node 0 (tail):\n{}",
            bind.zone_dump(&ns),
            c.status(0).map(|s| s["dns"].clone()),
            c.nodes[0]
                .agent
                .as_ref()
                .map(|a| a.log())
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let api = format!("api.{ZONE}");
    let all: BTreeSet<String> = ips.iter().cloned().collect();
    wait_until(
        "api name lists every control-plane node",
        Duration::from_secs(90),
        Duration::from_millis(100),
        || a_records(&bind, &ns, &api) == all,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose(&c)));
    eprintln!(
        "dns: {api} resolved to all 3 nodes {:.1} s after the agents started",
        started.elapsed().as_secs_f64()
    );
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("h{}.nodes.{ZONE}", i + 1);
        wait_until(
            &format!("{name} resolves"),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || a_records(&bind, &ns, &name) == [ip.clone()].into(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", diagnose(&c)));
    }
    eprintln!(
        "dns: every node name resolved {:.1} s after the agents started",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        bind.dig(&ns, &["+short", "TXT", &format!("a-api.{ZONE}")])
            .trim(),
        "\"heritage=external-dns,external-dns/owner=dnsag,external-dns/resource=crd/kube-system/muster-api\""
    );
    let mut states = dns_states(&c, &[0, 1, 2]);
    states.sort();
    assert_eq!(
        states,
        ["publishing", "standby", "standby"],
        "{}",
        diagnose(&c)
    );

    // Steady state: three intervals, nothing written.
    let before = bind.zone_dump(&ns);
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    assert_eq!(
        bind.zone_dump(&ns),
        before,
        "a steady cluster rewrote its zone"
    );

    // A clean stop of node 3 removes its name (and its API address).
    let stopped = Instant::now();
    c.kill_agent(2, Signal::SIGTERM);
    let name3 = format!("h3.nodes.{ZONE}");
    wait_until(
        "the stopped node's name is gone",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || a_records(&bind, &ns, &name3).is_empty(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose(&c)));
    eprintln!(
        "dns: a stopped node's name was gone {:.1} s after SIGTERM",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(
        bind.dig(&ns, &["+short", "TXT", &format!("a-{name3}")])
            .trim(),
        ""
    );
    let two: BTreeSet<String> = ips[..2].iter().cloned().collect();
    wait_until(
        "the API name drops the stopped node",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || a_records(&bind, &ns, &api) == two,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose(&c)));

    // Back: it registers again and the publisher names it.
    let restarted = Instant::now();
    c.start_agent(2);
    wait_until(
        "the restarted node's name is back",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            a_records(&bind, &ns, &name3) == [ips[2].clone()].into()
                && a_records(&bind, &ns, &api) == all
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", diagnose(&c)));
    eprintln!(
        "dns: a restarted node's name resolved {:.1} s after its agent started",
        restarted.elapsed().as_secs_f64()
    );
}

/// A wrong TSIG key: the boot goes on (etcd forms), status says
/// `failing` with the field to fix, and the zone is untouched.
#[test]
fn a_wrong_key_is_reported_in_status_and_the_boot_goes_on() {
    let mut c = Cluster::new("dnsbad", 1, 1);
    c.add_host();
    let ns = c.net.add_host("ns");
    let bind = Bind::start(&ns, ZONE);
    let before = bind.zone_dump(&ns);
    c.append_config(&format!(
        "dns:\n  provider: rfc2136\n  zone: {ZONE}\n  interval: {INTERVAL_SECS}s\n  \
         rfc2136:\n    server: \"{}\"\n    tsig: {{keyName: {KEY_NAME}, secret: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}}\n",
        ns.ip()
    ));
    c.start_agent(0);
    c.wait_for_cluster(&[0], 1, Duration::from_secs(60));
    let mut dns = serde_json::Value::Null;
    wait_until(
        "status reports dns failing",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            dns = c.status(0).map(|s| s["dns"].clone()).unwrap_or_default();
            dns["state"] == "failing"
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {dns:#}"));
    let message = dns["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("rfc2136 (dns.rfc2136.tsig)"),
        "{message}"
    );
    assert!(message.contains("rejected key `muster-test`"), "{message}");
    // The text status shows it too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["status", "--state-dir"])
        .arg(c.nodes[0].host.dir().join("state"))
        .output()
        .expect("muster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dns:         failing (rfc2136): rfc2136 (dns.rfc2136.tsig)"),
        "{text}"
    );
    assert_eq!(bind.zone_dump(&ns), before, "a refused key wrote nothing");
}
