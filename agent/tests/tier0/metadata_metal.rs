//! Bare metal / PXE: the private IPv4 when the kernel command line has no
//! `muster.ip=` — the address of the default route's interface. Route tables
//! are recorded or hand-written `/proc/net/route` texts
//! (`tests/fixtures/metadata/metal/`); interface addresses come from a fake
//! [`Network`], so nothing here reads this machine's network.

use crate::support::golden;

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use golden::{assert_golden, hermetic, read_fixture_text};
use muster::cmdline::KernelCmdline;
use muster::metadata::netinfo::{
    self, DefaultRoute, Ipv4OnInterface, Lookup, NetInfoError, Network, ROUTE_WAIT,
};
use muster::metadata::{self, Options, ProviderKind, metal};
use muster::retry::Backoff;

fn route(name: &str) -> String {
    read_fixture_text(&format!("metal/{name}"))
}

fn a(cidr: &str) -> Ipv4OnInterface {
    let (ip, len) = cidr.split_once('/').expect("a.b.c.d/len");
    Ipv4OnInterface {
        address: ip.parse().expect("ip"),
        prefix_len: len.parse().expect("len"),
        secondary: false,
        global: true,
    }
}

fn secondary(cidr: &str) -> Ipv4OnInterface {
    Ipv4OnInterface {
        secondary: true,
        ..a(cidr)
    }
}

fn link_scope(cidr: &str) -> Ipv4OnInterface {
    Ipv4OnInterface {
        global: false,
        ..a(cidr)
    }
}

/// A scripted network: each route-table read takes the next text (the last
/// one repeats); addresses per interface name; every read is counted.
#[derive(Default)]
struct FakeNet {
    tables: Mutex<VecDeque<Option<String>>>,
    addrs: BTreeMap<String, Vec<Ipv4OnInterface>>,
    route_reads: AtomicU32,
    addr_reads: Mutex<Vec<String>>,
}

impl FakeNet {
    fn new(tables: Vec<Option<String>>, addrs: &[(&str, Vec<Ipv4OnInterface>)]) -> Self {
        FakeNet {
            tables: Mutex::new(tables.into()),
            addrs: addrs
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            ..FakeNet::default()
        }
    }

    fn route_reads(&self) -> u32 {
        self.route_reads.load(Ordering::SeqCst)
    }

    fn addr_reads(&self) -> Vec<String> {
        self.addr_reads.lock().expect("lock").clone()
    }
}

impl Network for FakeNet {
    async fn route_table(&self) -> Result<Option<String>, NetInfoError> {
        self.route_reads.fetch_add(1, Ordering::SeqCst);
        let mut tables = self.tables.lock().expect("lock");
        Ok(if tables.len() > 1 {
            tables.pop_front().flatten()
        } else {
            tables.front().cloned().flatten()
        })
    }

    async fn ipv4_addresses(&self, iface: &str) -> Result<Vec<Ipv4OnInterface>, NetInfoError> {
        self.addr_reads
            .lock()
            .expect("lock")
            .push(iface.to_string());
        match self.addrs.get(iface) {
            Some(v) => Ok(v.clone()),
            None => Err(NetInfoError::NoSuchInterface(iface.to_string())),
        }
    }
}

/// Hermetic options for a PXE node with no `muster.ip=`.
fn pxe_opts(dir: &Path, extra: &str) -> Options {
    let mut opts = hermetic(dir, None);
    opts.cmdline = KernelCmdline::parse(&format!(
        "BOOT_IMAGE=/vmlinuz muster.platform=metal muster.instance-id=pxe-7 {extra}"
    ));
    opts
}

async fn private_ipv4(net: &FakeNet) -> Option<Ipv4Addr> {
    let dir = tempfile::tempdir().expect("tempdir");
    metal::fetch_with(&pxe_opts(dir.path(), ""), net)
        .await
        .expect("identifies")
        .private_ipv4
}

// --- the route table parser, on recorded and hand-written text ---

#[test]
fn recorded_route_table_names_its_default_interface() {
    assert_eq!(
        netinfo::default_route(&route("route-recorded")),
        Ok(Some(DefaultRoute {
            iface: "eth0".into(),
            metric: 0
        }))
    );
}

#[test]
fn no_default_route_in_the_table_is_none() {
    assert_eq!(netinfo::default_route(&route("route-no-default")), Ok(None));
    let header_only = route("route-no-default")
        .lines()
        .next()
        .expect("header")
        .to_string();
    assert_eq!(netinfo::default_route(&header_only), Ok(None));
}

#[test]
fn of_two_defaults_the_lowest_metric_wins_not_the_first_listed() {
    assert_eq!(
        netinfo::default_route(&route("route-two-defaults")),
        Ok(Some(DefaultRoute {
            iface: "eth0".into(),
            metric: 100
        }))
    );
}

#[test]
fn unreachable_and_blackhole_defaults_are_skipped() {
    assert_eq!(
        netinfo::default_route(&route("route-reject-defaults")),
        Ok(Some(DefaultRoute {
            iface: "bond0".into(),
            metric: 600
        }))
    );
}

// --- the whole provider over a fake network ---

#[tokio::test]
async fn dhcp_node_gets_the_address_of_the_default_route_interface() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cluster.yaml");
    std::fs::write(&config, "muster:\n  cluster: pxe\n").expect("write");
    let opts = pxe_opts(
        dir.path(),
        &format!("muster.config={} muster.zone=rack-3", config.display()),
    );
    let net = FakeNet::new(
        vec![Some(route("route-recorded"))],
        &[
            ("lo", vec![link_scope("127.0.0.1/8")]),
            ("eth0", vec![a("192.0.2.2/24")]),
        ],
    );
    let facts = metal::fetch_with(&opts, &net).await.expect("identifies");
    assert_eq!(facts.private_ipv4, Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(net.addr_reads(), vec!["eth0"]);
    assert_golden("metal/expected-dhcp.json", &facts);
}

#[tokio::test]
async fn muster_ip_wins_and_the_network_is_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = FakeNet::new(
        vec![Some(route("route-recorded"))],
        &[("eth0", vec![a("192.0.2.2/24")])],
    );
    let opts = pxe_opts(dir.path(), "muster.ip=10.20.0.5/16");
    let facts = metal::fetch_with(&opts, &net).await.expect("identifies");
    assert_eq!(facts.private_ipv4, Some(Ipv4Addr::new(10, 20, 0, 5)));
    assert_eq!(net.route_reads(), 0);
    assert!(net.addr_reads().is_empty());
}

#[tokio::test]
async fn the_lowest_metric_default_decides_the_interface() {
    let net = FakeNet::new(
        vec![Some(route("route-two-defaults"))],
        &[
            ("eth1", vec![a("192.168.1.20/24")]),
            ("eth0", vec![a("10.0.0.20/24")]),
        ],
    );
    assert_eq!(private_ipv4(&net).await, Some(Ipv4Addr::new(10, 0, 0, 20)));
    assert_eq!(net.addr_reads(), vec!["eth0"]);
}

#[tokio::test]
async fn a_default_on_an_interface_without_ipv4_leaves_it_unset() {
    let net = FakeNet::new(vec![Some(route("route-recorded"))], &[("eth0", vec![])]);
    assert_eq!(private_ipv4(&net).await, None);
    let lookup = netinfo::default_route_ipv4(&net, golden::FAST)
        .await
        .expect("reads");
    assert!(
        matches!(lookup, Lookup::NoUsableAddress { ref route, .. } if route.iface == "eth0"),
        "{lookup:?}"
    );
}

#[tokio::test]
async fn loopback_and_link_local_addresses_are_never_chosen() {
    // Even when someone gave them scope global.
    let net = FakeNet::new(
        vec![Some(route("route-recorded"))],
        &[(
            "eth0",
            vec![
                a("127.0.0.2/8"),
                link_scope("169.254.7.7/16"),
                a("169.254.8.8/16"),
            ],
        )],
    );
    assert_eq!(private_ipv4(&net).await, None);
}

#[tokio::test]
async fn the_vip_slash_32_is_not_taken_for_the_node_address() {
    // The VIP was added before the DHCP address came back, so it is listed
    // first, and it is primary too.
    let net = FakeNet::new(
        vec![Some(route("route-recorded"))],
        &[("eth0", vec![a("192.0.2.100/32"), a("192.0.2.2/24")])],
    );
    assert_eq!(private_ipv4(&net).await, Some(Ipv4Addr::new(192, 0, 2, 2)));
}

#[tokio::test]
async fn a_lone_slash_32_lease_is_still_used() {
    let net = FakeNet::new(
        vec![Some(route("route-recorded"))],
        &[(
            "eth0",
            vec![link_scope("169.254.1.1/16"), a("198.51.100.9/32")],
        )],
    );
    assert_eq!(
        private_ipv4(&net).await,
        Some(Ipv4Addr::new(198, 51, 100, 9))
    );
}

#[tokio::test]
async fn the_primary_address_beats_secondaries() {
    let net = FakeNet::new(
        vec![Some(route("route-recorded"))],
        &[(
            "eth0",
            vec![
                secondary("192.0.2.50/24"),
                a("192.0.2.2/24"),
                a("10.9.0.1/24"),
            ],
        )],
    );
    assert_eq!(private_ipv4(&net).await, Some(Ipv4Addr::new(192, 0, 2, 2)));
}

#[tokio::test(start_paused = true)]
async fn a_default_route_that_appears_late_is_waited_for() {
    let net = FakeNet::new(
        vec![
            Some(route("route-no-default")),
            Some(route("route-no-default")),
            Some(route("route-recorded")),
        ],
        &[("eth0", vec![a("192.0.2.2/24")])],
    );
    assert_eq!(private_ipv4(&net).await, Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(net.route_reads(), 3);
}

#[tokio::test(start_paused = true)]
async fn no_default_route_gives_up_within_the_route_wait() {
    let net = FakeNet::new(vec![Some(route("route-no-default"))], &[]);
    let start = tokio::time::Instant::now();
    // The boot-time policy (30 s in all) is cut to ROUTE_WAIT for this wait.
    let lookup = netinfo::default_route_ipv4(&net, Backoff::METADATA)
        .await
        .expect("reads");
    assert_eq!(lookup, Lookup::NoDefaultRoute);
    assert!(start.elapsed() < ROUTE_WAIT, "waited {:?}", start.elapsed());
    assert!(
        start.elapsed() >= ROUTE_WAIT / 2,
        "gave up too soon: {:?}",
        start.elapsed()
    );
    assert!(net.route_reads() > 2, "retried: {}", net.route_reads());
    assert!(net.addr_reads().is_empty());
}

#[tokio::test]
async fn a_missing_route_table_is_not_waited_for() {
    let net = FakeNet::new(vec![None], &[]);
    let lookup = netinfo::default_route_ipv4(&net, Backoff::METADATA)
        .await
        .expect("reads");
    assert_eq!(lookup, Lookup::NoRouteTable);
    assert_eq!(net.route_reads(), 1);
}

#[tokio::test]
async fn a_garbled_route_table_is_an_error_not_a_wait() {
    let net = FakeNet::new(vec![Some("not a route table\n".into())], &[]);
    let e = netinfo::default_route_ipv4(&net, Backoff::METADATA)
        .await
        .expect_err("garbled");
    assert_eq!(
        e.to_string(),
        "/proc/net/route: the route table header has no Iface column"
    );
    assert_eq!(net.route_reads(), 1);
    assert_eq!(private_ipv4(&net).await, None, "metal carries on without");
}

// --- the real reader, pointed at a temporary host_root ---

#[tokio::test]
async fn host_root_route_table_is_read_but_never_this_machines_interfaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = pxe_opts(dir.path(), "");
    let path = opts.host_root.join("proc/net/route");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, route("route-recorded")).expect("write");
    let net = netinfo::HostNetwork::new(&opts.host_root);
    assert_eq!(
        net.route_table().await.expect("reads"),
        Some(route("route-recorded"))
    );
    assert!(matches!(
        net.ipv4_addresses("eth0").await,
        Err(NetInfoError::NotThisMachine(_))
    ));
    let facts = metadata::identify(None, &opts).await.expect("identifies");
    assert_eq!(facts.provider, ProviderKind::Metal);
    assert_eq!(facts.private_ipv4, None);
}

#[tokio::test]
async fn without_a_route_table_under_host_root_identify_does_not_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = pxe_opts(dir.path(), "");
    opts.backoff = Backoff::METADATA;
    let start = std::time::Instant::now();
    let facts = metadata::identify(None, &opts).await.expect("identifies");
    assert_eq!(facts.private_ipv4, None);
    assert!(start.elapsed() < ROUTE_WAIT / 2, "{:?}", start.elapsed());
}
