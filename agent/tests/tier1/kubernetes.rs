//! Tier 1: real Kubernetes v1.28.7 (kube-apiserver, controller-manager,
//! scheduler) run by three real agents on real etcd in network namespaces,
//! reached through the ARP VIP with the admin kubeconfig the agents write.
//!
//! One scenario, in steps, because a control plane takes a while to start
//! on two cores: the API through the VIP, its DNS name handed over to
//! ExternalDNS (tier1/dns_handover.rs), from every node, one leader per
//! component; strangers refused; the VIP holder powered off; every agent
//! restarted (nothing re-issued, nothing duplicated); a tampered
//! service-account key repaired.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use muster::kubernetes::join;
use muster::kubernetes::token::BootstrapToken;
use muster::pki::{Authority, ClusterCa, LEAF_VALIDITY, LeafSpec, Usage};
use nix::sys::signal::Signal;

use crate::support::cluster::{Cluster, SECRET};
use crate::support::kubernetes::{anonymous_get_status, kube_bin, kubectl, kubectl_ok};
use crate::support::netns::Host;
use crate::support::netns::wait_until;

const NODES: [usize; 3] = [0, 1, 2];

struct K8s {
    c: Cluster,
}

impl K8s {
    fn admin_conf(&self, i: usize) -> PathBuf {
        self.c.kubernetes_dir(i).join("admin.conf")
    }

    /// `kubectl` from node `from`'s namespace through the VIP, as an admin.
    fn api(&self, from: usize, args: &[&str]) -> Option<String> {
        kubectl_ok(&self.c.nodes[from].host, &self.admin_conf(from), args)
    }

    fn wait_api(&self, from: usize, within: Duration) -> Duration {
        let t = Instant::now();
        wait_until(
            "the API answers /readyz through the VIP",
            within,
            Duration::from_millis(100),
            || self.api(from, &["get", "--raw", "/readyz"]).as_deref() == Some("ok"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnose()));
        t.elapsed()
    }

    fn lease_holder(&self, from: usize, name: &str) -> Option<String> {
        self.api(
            from,
            &[
                "-n",
                "kube-system",
                "get",
                "lease",
                name,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        )
        .and_then(|id| id.split('_').next().map(str::to_string))
        .filter(|s| !s.is_empty())
    }

    /// `name@resourceVersion` of every bootstrap-token Secret.
    fn tokens(&self) -> String {
        self.api(
            0,
            &[
                "-n",
                "kube-system",
                "get",
                "secrets",
                "--field-selector=type=bootstrap.kubernetes.io/token",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}@{.metadata.resourceVersion} {end}",
            ],
        )
        .unwrap_or_default()
    }

    fn pki(&self, i: usize, file: &str) -> Vec<u8> {
        read(&self.c.kubernetes_dir(i).join("pki").join(file))
    }

    /// Files that must not change when nothing needs re-issuing.
    fn snapshot(&self, i: usize) -> Vec<Vec<u8>> {
        [
            "apiserver.crt",
            "admin.crt",
            "ca.crt",
            "sa.key",
            "front-proxy-client.crt",
        ]
        .iter()
        .map(|f| self.pki(i, f))
        .collect()
    }

    /// Every node's status and the tail of its services' logs.
    fn diagnose(&self) -> String {
        let mut out = String::new();
        for i in NODES {
            out.push_str(&format!("--- node {i} status: {:#?}\n", self.c.status(i)));
            let services = self.c.nodes[i].host.dir().join("state/services");
            for name in [
                "muster-kube-apiserver.log",
                "muster-kube-controller-manager.log",
            ] {
                let log = std::fs::read_to_string(services.join(name)).unwrap_or_default();
                // The errors first (a component that exits says why in an
                // E-line), then the last lines.
                let errors: Vec<&str> = log
                    .lines()
                    .filter(|l| l.starts_with('E') || l.contains("rror"))
                    .rev()
                    .take(5)
                    .collect();
                let tail: Vec<&str> = log.lines().rev().take(8).chain(errors).collect();
                out.push_str(&format!("--- node {i} {name}:\n"));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// `kubectl get secrets -A` with the credential in `args` (server, CA and
/// credential flags) fails, prints no Secret, and says `why` on stderr.
fn assert_secrets_refused(host: &Host, args: &[&str], why: &str, who: &str) {
    let mut argv = args.to_vec();
    argv.extend(["get", "secrets", "-A"]);
    let out = kubectl(host, Path::new("/dev/null"), &argv);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "{who} listed Secrets: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(why),
        "{who}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client certificate from a CA of another cluster (same name, another
/// secret), claiming cluster-admin.
fn stranger_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let other = ClusterCa::derive_authority(
        Authority::Kubernetes,
        "k8s",
        b"another-cluster-secret-0123456789abcdef",
    )
    .expect("other CA");
    let issued = other
        .issue(&LeafSpec {
            common_name: "kubernetes-admin".into(),
            organization: Some("system:masters".into()),
            sans: Vec::new(),
            usages: vec![Usage::ClientAuth],
            validity: LEAF_VALIDITY,
        })
        .expect("issue");
    let (cert, key) = (dir.join("stranger.crt"), dir.join("stranger.key"));
    std::fs::write(&cert, &issued.cert_pem).expect("write");
    std::fs::write(&key, issued.key_pem.expose()).expect("write");
    (cert, key)
}

#[test]
fn three_agents_run_kubernetes_behind_the_vip_and_heal_it() {
    let mut vip = Ipv4Addr::UNSPECIFIED;
    let mut c = Cluster::with_discovery("k8s", 3, |net| {
        vip = net.spare_ip(0);
        let prefix = net.subnet().trim_end_matches("0/24").to_string();
        format!(
            "discovery:\n  static:\n    peers: [\"{prefix}11\", \"{prefix}12\", \"{prefix}13\"]\n\
             apiEndpoint:\n  vip: {vip}\n  mode: arp\n  interface: eth0\n"
        )
    });
    c.kubernetes_bin = Some(kube_bin());
    for _ in NODES {
        c.add_host();
    }
    // A real BIND for the DNS phase, on the address after the three peers.
    let ns = c.net.add_host("ns");
    let bind = crate::support::bind::Bind::start(&ns, crate::dns_handover::ZONE);
    c.append_config(&crate::dns_handover::config(ns.ip()));
    let started = Instant::now();
    for i in NODES {
        c.start_agent(i);
    }
    let mut k = K8s { c };

    // 1. The API through the VIP, with the admin kubeconfig an agent wrote.
    k.wait_api(0, Duration::from_secs(180));
    println!(
        "figures: 3 agents started -> API ready through the VIP: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let conf = String::from_utf8_lossy(&read(&k.admin_conf(0))).into_owned();
    assert!(
        conf.contains(&format!("server: https://{vip}:6443")),
        "admin.conf points at the VIP:\n{conf}"
    );
    let holders = k.c.vip_holders(vip, &NODES);
    assert_eq!(holders.len(), 1, "one VIP holder: {holders:?}");

    // 1b. DNS: the API name and node names in BIND, described as
    // DNSEndpoints, handed over (tier1/dns_handover.rs).
    crate::dns_handover::check(&k.c, &k.admin_conf(0), &bind, &ns, vip, || k.diagnose());
    println!(
        "figures: DNS published and described as DNSEndpoints: {:.1} s after start",
        started.elapsed().as_secs_f64()
    );

    // 2. /api from every node, to every node's own apiserver too.
    for from in NODES {
        let api = k.api(from, &["get", "--raw", "/api"]).unwrap_or_else(|| {
            panic!("node {from}: /api through the VIP failed\n{}", k.diagnose())
        });
        assert!(api.contains("\"versions\""), "{api}");
        for to in NODES {
            let server = format!("--server=https://{}:6443", k.c.nodes[to].host.ip());
            wait_until(
                "each apiserver answers on its own address",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || {
                    k.api(from, &[&server, "get", "--raw", "/readyz"])
                        .as_deref()
                        == Some("ok")
                },
            )
            .unwrap_or_else(|e| panic!("node {from} -> {to}: {e}\n{}", k.diagnose()));
        }
    }
    // The VIP's health check leaves out exactly the apiserver's two etcd
    // checks (kubernetes/health.rs); an unknown name would only be warned
    // about, so the verbose answer must list both as excluded, and no warning.
    let path = format!(
        "{}&verbose",
        muster::kubernetes::health::READYZ_WITHOUT_ETCD
    );
    let mut verbose = String::new();
    let _ = wait_until(
        "readiness without etcd",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            verbose = k.api(0, &["get", "--raw", &path]).unwrap_or_default();
            verbose.contains("readyz check passed")
        },
    );
    for check in ["etcd", "etcd-readiness"] {
        assert!(
            verbose.contains(&format!("[+]{check} excluded: ok")),
            "{path} does not leave out {check}:\n{verbose}"
        );
    }
    assert!(!verbose.contains("warn:"), "{path}:\n{verbose}");
    assert!(
        verbose.contains("readyz check passed"),
        "{path}:\n{verbose}"
    );

    // 3. One leader lease per component, held by a node of the cluster;
    // the cluster objects are there once.
    let names: BTreeSet<String> = (1..=3).map(|n| format!("h{n}")).collect();
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        let mut holder = None;
        wait_until(
            "a leader lease",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                holder = k.lease_holder(0, lease);
                holder.is_some()
            },
        )
        .unwrap_or_else(|e| panic!("{lease}: {e}\n{}", k.diagnose()));
        let holder = holder.expect("holder");
        assert!(names.contains(&holder), "{lease} held by {holder}");
    }
    // Their secure ports serve the agent's certificates, trusted through
    // the cluster CA (a self-generated one would fail the handshake).
    let ca_pem = String::from_utf8_lossy(&k.pki(0, "ca.crt")).into_owned();
    for (component, port) in [
        ("kube-controller-manager", 10257),
        ("kube-scheduler", 10259),
    ] {
        let url = format!("https://127.0.0.1:{port}/healthz");
        let status = anonymous_get_status(&k.c.nodes[0].host, &url, &ca_pem);
        assert_eq!(status, 200, "{component}: GET {url}");
    }
    let mut before = String::new();
    wait_until(
        "the bootstrap token Secret",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            before = k.tokens();
            !before.is_empty()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", k.diagnose()));
    assert_eq!(before.split_whitespace().count(), 1, "one token: {before}");
    // The controller-manager's bootstrapsigner signs cluster-info with
    // the derived token: the controllers run and the token is usable.
    wait_until(
        "cluster-info signed by the bootstrap token",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            k.api(
                0,
                &[
                    "-n",
                    "kube-public",
                    "get",
                    "configmap",
                    "cluster-info",
                    "-o",
                    "json",
                ],
            )
            .is_some_and(|j| j.contains("\"jws-kubeconfig-"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", k.diagnose()));
    // 3b. Draining a leaving machine's Node (tier1/drain.rs).
    crate::drain::check(&k.c.nodes[0].host, &k.admin_conf(0), || k.diagnose());

    // `muster kubeconfig` prints the admin kubeconfig the agent wrote.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["kubeconfig", "--kubernetes-dir"])
        .arg(k.c.kubernetes_dir(0))
        .output()
        .expect("muster kubeconfig");
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(printed.stdout, read(&k.admin_conf(0)));

    // 4. Strangers get nothing: anonymous requests and a certificate from
    // another cluster's CA are refused with 401.
    let host = &k.c.nodes[0].host;
    let ca = k.c.kubernetes_dir(0).join("pki/ca.crt");
    let server = format!("--server=https://{vip}:6443");
    let ca_arg = format!("--certificate-authority={}", ca.display());
    let ca_pem = String::from_utf8_lossy(&read(&ca)).into_owned();
    for path in ["/api", "/api/v1/namespaces/kube-system/secrets", "/readyz"] {
        let status = anonymous_get_status(host, &format!("https://{vip}:6443{path}"), &ca_pem);
        assert_eq!(status, 401, "anonymous GET {path}");
    }
    let (cert, key) = stranger_cert(host.dir());
    let stranger = [
        format!("--client-certificate={}", cert.display()),
        format!("--client-key={}", key.display()),
    ];
    assert_secrets_refused(
        host,
        &[&server, &ca_arg, &stranger[0], &stranger[1]],
        "Unauthorized",
        "another cluster's certificate",
    );

    // 4b. A worker-only machine (join credential, no secret) learns the CA
    // from the API only through the pinned key and is told when its token
    // is wrong; `muster join-credential` prints what such a group needs.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["join-credential", "--kubernetes-dir"])
        .arg(k.c.kubernetes_dir(0))
        .output()
        .expect("muster join-credential");
    assert!(printed.status.success(), "{printed:?}");
    let worker =
        muster::config::validate_text("join credential", &String::from_utf8_lossy(&printed.stdout))
            .expect("the join credential is a valid worker config");
    let join = worker.cluster.join.clone().expect("join");
    let token = BootstrapToken::parse(join.token.expose()).expect("token");
    let endpoint = format!("https://{vip}:6443");
    let discover = |pin: String, token: BootstrapToken| {
        let endpoint = endpoint.clone();
        host.block_on(async move || join::discover_ca(&endpoint, &pin, &token).await)
    };
    let ca_found = discover(join.ca_pin.clone(), token.clone()).expect("the pinned CA");
    assert_eq!(ca_found.trim(), String::from_utf8_lossy(&read(&ca)).trim());
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let e = discover(wrong_pin, token.clone()).expect_err("a wrong pin");
    assert!(e.to_string().starts_with("cluster.join.caPin"), "{e}");
    let wrong_token = BootstrapToken::parse("abcdef.0123456789abcdef").expect("token");
    let e = discover(join.ca_pin.clone(), wrong_token).expect_err("a wrong token");
    assert!(
        e.to_string().contains("refused the join token (HTTP 401)"),
        "{e}"
    );
    // The join token itself reads no Secrets: it may only register a node
    // and ask for the node's certificates.
    let token_arg = format!("--token={}", join.token.expose());
    assert_secrets_refused(
        host,
        &[&server, &ca_arg, &token_arg],
        "forbidden",
        "the join token",
    );

    // 5. Power off the VIP holder: the API answers through the VIP again,
    // and the controller-manager has a leader on a live node.
    let holder = holders[0];
    let cm_before = k.lease_holder(0, "kube-controller-manager");
    k.c.power_off(holder);
    let killed = Instant::now();
    let rest: Vec<usize> = NODES.iter().copied().filter(|&i| i != holder).collect();
    let gap = k.wait_api(rest[0], Duration::from_secs(60));
    println!(
        "figures: VIP holder powered off -> API through the VIP answers again: {:.2} s",
        killed.elapsed().as_secs_f64().min(gap.as_secs_f64())
    );
    let dead = format!("h{}", holder + 1);
    wait_until(
        "a controller-manager leader on a live node",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || {
            k.lease_holder(rest[0], "kube-controller-manager")
                .is_some_and(|h| h != dead)
        },
    )
    .unwrap_or_else(|e| panic!("{e} (was {cm_before:?})\n{}", k.diagnose()));

    // 6. Power the node on again and restart every agent: valid
    // certificates are kept, the objects are not duplicated or rewritten.
    k.c.start_agent(holder);
    for i in NODES {
        k.wait_api(i, Duration::from_secs(180));
    }
    let kept: Vec<_> = NODES.iter().map(|&i| k.snapshot(i)).collect();
    let before = k.tokens();
    for i in NODES {
        k.c.kill_agent(i, Signal::SIGTERM);
        k.c.start_agent(i);
    }
    for i in NODES {
        k.wait_api(i, Duration::from_secs(120));
    }
    wait_until(
        "every agent reports the objects applied",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            NODES.iter().all(|&i| {
                k.c.status(i)
                    .is_some_and(|s| s["kubernetes"]["objects"].is_string())
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", k.diagnose()));
    for (i, files) in NODES.iter().zip(&kept) {
        assert!(
            k.snapshot(*i) == *files,
            "node {i}: a valid file was re-issued"
        );
    }
    assert_eq!(k.tokens(), before, "the bootstrap token Secret changed");
    // Derived files are the same on every node.
    assert_eq!(k.pki(0, "ca.crt"), k.pki(1, "ca.crt"));
    assert_eq!(k.pki(0, "sa.key"), k.pki(2, "sa.key"));
    assert_eq!(
        k.pki(1, "front-proxy-ca.crt"),
        k.pki(2, "front-proxy-ca.crt")
    );

    // 7. A tampered service-account key is repaired from the derivation
    // when its agent starts.
    let sa = k.c.kubernetes_dir(1).join("pki/sa.key");
    std::fs::write(
        &sa,
        "-----BEGIN PRIVATE KEY-----\ntampered\n-----END PRIVATE KEY-----\n",
    )
    .expect("tamper");
    k.c.kill_agent(1, Signal::SIGTERM);
    k.c.start_agent(1);
    wait_until(
        "the service-account key is repaired",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || std::fs::read(&sa).ok() == Some(k.pki(0, "sa.key")),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", k.diagnose()));
    // The cluster secret never reaches a status or a log.
    for i in NODES {
        let status = k.c.status(i).map(|s| s.to_string()).unwrap_or_default();
        assert!(
            !status.contains(SECRET),
            "node {i}: status shows the secret"
        );
        let log = k.c.nodes[i]
            .agent
            .as_ref()
            .map(|a| a.log())
            .unwrap_or_default();
        assert!(!log.contains(SECRET), "node {i}: log shows the secret");
    }
}
