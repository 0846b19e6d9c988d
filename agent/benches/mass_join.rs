//! Benchmark (issue 18): 3 control-plane agents + N workers booting at once
//! must all join, in time that grows at most linearly with N.
//!
//! Real agents (this build's `muster agent`) and real etcd 3.5, a static
//! group listing every machine. To hold 500 machines on one host, the
//! agents share one network namespace (a [`Net`] host made for the run),
//! each on its own address of the namespace's loopback, with its own state
//! directory and status endpoint: what grows with N here is the agents'
//! own work (group listings, etcd probes, CPU, memory), not ARP. The 3
//! control-plane agents start first; once they are one healthy cluster,
//! the N workers start together.
//!
//! Prints, for each N: time from a worker's start until its status says
//! `steady-state` (p50, p99, max), failures (workers not steady within the
//! limit), group listings and etcd connections per minute (the boot window
//! and a steady minute, summed over the fleet, from each agent's
//! `/metrics`), per-worker CPU (% of one core) and RSS at rest, and the
//! etcd revision rate (writes per second) at rest.
//!
//! `MASS_JOIN_GROUP=aws`: the same through an AWS Auto Scaling group of
//! 3 + N instances in moto (in the workers' namespace, reached over the
//! bridge by the control-plane hosts): each agent is one instance (its id
//! and moto's private IP as its facts) and lists the group through the
//! AWS API with SigV4, as on EC2. The control-plane agents are the group's
//! formation set (`roles::formation_set`), each on a host of its own with
//! the instance's address (etcd checks a peer's certificate against the
//! address it connects from). moto sits behind `moto_throttled.py`, which
//! refuses what exceeds AWS's token buckets at once, as AWS does
//! (`MASS_JOIN_AWS_FRONT=none`: plain moto, which queues instead); the
//! cloud API calls, answered and throttled, are counted from its log.
//!
//! Run: `cargo bench -p muster-agent --bench mass_join` (root; needs
//! `bash ci/install-deps.sh`); `MUSTER_BIN=path` measures another agent
//! binary. `MASS_JOIN_N=50,100` picks the sizes
//! (default 50,100,200,500), `MASS_JOIN_LIMIT_S` the limit per size
//! (default 240), `MASS_JOIN_REST_S` the rest window (default 30),
//! `MASS_JOIN_LOGS=dir` keeps some agents' logs.
//! Figures, not assertions: a shared 2-core machine is too noisy for
//! timed asserts.

#[path = "../tests/support/etcd_bin.rs"]
mod etcd_bin;
#[path = "../tests/support/http_get.rs"]
#[allow(dead_code)]
mod http_get;
#[path = "../tests/support/moto.rs"]
#[allow(dead_code)]
mod moto;
#[path = "../tests/support/netns.rs"]
mod netns;
#[path = "support/proc_stats.rs"]
mod proc_stats;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use muster::discovery::Peer;
use muster::roles::{Topology, formation_set};
use netns::{Host, Net, Proc};
use proc_stats::{cpu_ticks, rss_kib};

const SECRET: &str = "mass-join-bench-secret-0123456789abcdef";
const STATUS_PORT: u16 = 9743;
const CONTROL_PLANE: usize = 3;

/// Worker `i`'s address: 10.201.(10 + i / 150).(100 + i % 150), all the
/// same length, so the list's order is the same read as text or as numbers.
fn worker_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, 10 + (i / 150) as u8, 100 + (i % 150) as u8)
}

/// Where the group lives: the config lists every machine, or an AWS Auto
/// Scaling group in moto lists them (`MASS_JOIN_GROUP=aws`).
#[derive(Clone, Copy, PartialEq)]
enum Group {
    Static,
    Aws,
}

fn group() -> Group {
    match std::env::var("MASS_JOIN_GROUP").as_deref() {
        Ok("aws") => Group::Aws,
        _ => Group::Static,
    }
}

const GROUP_NAME: &str = "massjoin";
const MOTO_PORT: u16 = 5000;
/// The group's VPC and subnet: room for 500 workers, apart from the
/// bridge's subnet.
const AWS_SUBNET: &str = "10.201.0.0/16";

/// `MASS_JOIN_NETNS=1`: every worker on a host (namespace) of its own on
/// the bridge, as tier 1 runs machines (at most 176 workers per run).
fn own_namespaces() -> bool {
    std::env::var("MASS_JOIN_NETNS").is_ok_and(|v| v == "1")
}

/// The agent binary: this build's, or `MUSTER_BIN` (to measure another
/// build, e.g. before a change, with the same harness).
fn muster_bin() -> PathBuf {
    std::env::var_os("MUSTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_muster")))
}

struct Agent {
    host: Host,
    ip: Ipv4Addr,
    dir: PathBuf,
    proc: Option<Proc>,
    started: Option<Instant>,
    steady_after: Option<Duration>,
}

impl Agent {
    fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("state/status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn is_steady(&self) -> bool {
        self.status()
            .is_some_and(|s| s["phase"] == "steady-state" && s["role"].is_string())
    }

    fn pid(&self) -> Option<i32> {
        self.proc.as_ref().map(|p| p.pid())
    }
}

struct Run {
    config: PathBuf,
    agents: Vec<Agent>,
    /// The agents' extra environment (the AWS endpoint and keys).
    env: Vec<(String, String)>,
    /// moto, for the AWS group: its log counts the API calls.
    cloud: Option<Cloud>,
}

struct Cloud {
    log: PathBuf,
    /// The throttling front's request log (`None`: plain moto).
    front_log: Option<PathBuf>,
    _moto: Proc,
}

/// Cloud API requests so far: answered (by moto or the front's cache) and
/// refused by the front's token buckets.
#[derive(Clone, Copy, Default)]
struct Calls {
    answered: usize,
    throttled: usize,
}

impl Cloud {
    fn calls(&self) -> Calls {
        match &self.front_log {
            Some(log) => {
                let outcomes = moto::FrontOutcomes::read(log);
                let throttled = outcomes.count(None, Some("throttled"));
                Calls {
                    answered: outcomes.requests.len() - throttled,
                    throttled,
                }
            }
            // Plain moto: one log line per answered request.
            None => Calls {
                answered: std::fs::read_to_string(&self.log)
                    .map(|t| t.lines().filter(|l| l.contains("\"POST / HTTP")).count())
                    .unwrap_or(0),
                throttled: 0,
            },
        }
    }
}

/// `MASS_JOIN_AWS_FRONT=none` runs plain moto (it queues every request);
/// the default puts `moto_throttled.py` in front: AWS's token buckets
/// (EC2 describes 100 + 20/s; Auto Scaling, not published, the same unless
/// `MASS_JOIN_ASG_BUCKET=size,refill`) and a 1 s read cache.
fn throttling() -> Option<moto::Throttling> {
    if std::env::var("MASS_JOIN_AWS_FRONT").as_deref() == Ok("none") {
        return None;
    }
    let mut throttling = moto::Throttling::aws();
    if let Ok(spec) = std::env::var("MASS_JOIN_ASG_BUCKET") {
        let parsed = spec
            .split_once(',')
            .and_then(|(b, r)| Some((b.trim().parse().ok()?, r.trim().parse().ok()?)));
        throttling.autoscaling =
            Some(parsed.expect("MASS_JOIN_ASG_BUCKET is `size,refill`, e.g. `40,8`"));
    }
    Some(throttling)
}

/// moto in `shared` (behind the throttling front unless told otherwise),
/// an Auto Scaling group of `machines` instances, and the instances as the
/// agents will list them (formation set first).
fn start_cloud(shared: &Host, machines: usize) -> (Cloud, String, Vec<Peer>) {
    let port = MOTO_PORT.to_string();
    let front_log = shared.dir().join("front.log");
    let throttling = throttling();
    let proc = match &throttling {
        Some(t) => shared.spawn(
            moto::python(),
            &t.args("0.0.0.0", MOTO_PORT, &front_log)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            &[],
            "moto.log",
        ),
        None => shared.spawn(
            moto::binary(),
            &["-H", "0.0.0.0", "-p", &port],
            &[],
            "moto.log",
        ),
    };
    let ip = shared.ip();
    netns::wait_until(
        "moto answers",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || shared.in_netns(|| std::net::TcpStream::connect((ip, MOTO_PORT)).is_ok()),
    )
    .expect("moto starts");
    let endpoint = format!("http://{ip}:{MOTO_PORT}/");
    let peers = shared.block_on(async || {
        let client = moto::client(&endpoint);
        moto::create_group(&client, GROUP_NAME, machines as u32, AWS_SUBNET, AWS_SUBNET).await;
        muster::discovery::aws_asg::list_group(&client, GROUP_NAME)
            .await
            .expect("list the group")
            .peers
    });
    assert_eq!(
        peers.len(),
        machines,
        "moto launched {} of {machines}",
        peers.len()
    );
    let topology = Topology {
        control_plane_count: CONTROL_PLANE,
        dedicated_etcd_count: None,
    };
    let first = formation_set(topology, &peers);
    let rest = peers.iter().filter(|p| !first.contains(p)).cloned();
    let ordered = first.iter().cloned().chain(rest).collect();
    let cloud = Cloud {
        log: shared.dir().join("moto.log"),
        front_log: throttling.map(|_| front_log),
        _moto: proc,
    };
    (cloud, endpoint, ordered)
}

/// A control-plane host with its instance's address `ip` on the bridge
/// (beside the bridge address it came with), reaching the other
/// control-plane instances on the link and the workers through `shared`,
/// always from `ip`. `shared` routes back to it.
fn instance_host(net: &Net, name: &str, ip: Ipv4Addr, others: &[Ipv4Addr], shared: &Host) -> Host {
    let h = net.add_host(name);
    let me = ip.to_string();
    h.ip_cmd(&["addr", "add", &format!("{me}/32"), "dev", "eth0"]);
    for other in others.iter().filter(|o| **o != ip) {
        h.ip_cmd(&[
            "route",
            "add",
            &format!("{other}/32"),
            "dev",
            "eth0",
            "src",
            &me,
        ]);
    }
    let via = shared.ip().to_string();
    h.ip_cmd(&["route", "add", AWS_SUBNET, "via", &via, "src", &me]);
    shared.ip_cmd(&["route", "add", &format!("{me}/32"), "dev", "eth0"]);
    h
}

impl Run {
    fn new(net: &Net, workers: usize) -> Run {
        let shared = net.add_host("workers");
        if group() == Group::Aws {
            return Run::with_aws_group(net, shared, workers);
        }
        let mut hosts: Vec<(Host, Ipv4Addr)> = (0..CONTROL_PLANE)
            .map(|i| {
                let h = net.add_host(&format!("cp{i}"));
                // The workers' addresses are behind the shared host.
                let via = shared.ip().to_string();
                h.ip_cmd(&["route", "add", "10.201.0.0/16", "via", &via]);
                let ip = h.ip();
                (h, ip)
            })
            .collect();
        if own_namespaces() {
            // As the issue measured: a namespace per worker on the bridge.
            for i in 0..workers {
                let h = net.add_host(&format!("w{i}"));
                let ip = h.ip();
                hosts.push((h, ip));
            }
        } else {
            // On the shared namespace's loopback: no dummy driver on these
            // machines, and local addresses need no link of their own.
            for i in 0..workers {
                let ip = worker_address(i);
                shared.ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
                hosts.push((shared.clone(), ip));
            }
        }
        let peers: Vec<String> = hosts.iter().map(|(_, ip)| format!("\"{ip}\"")).collect();
        let config = write_config(
            &shared,
            &format!("  static:\n    peers: [{}]\n", peers.join(", ")),
        );
        let machines: Vec<(Host, Ipv4Addr, String)> = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (host, ip))| (host, ip, format!("i-{i:04}")))
            .collect();
        Run {
            config,
            agents: agents(machines, ""),
            env: Vec::new(),
            cloud: None,
        }
    }

    /// The AWS variant: moto's instances are the machines.
    fn with_aws_group(net: &Net, shared: Host, workers: usize) -> Run {
        let (cloud, endpoint, peers) = start_cloud(&shared, CONTROL_PLANE + workers);
        let cp_ips: Vec<Ipv4Addr> = peers[..CONTROL_PLANE].iter().map(|p| p.address).collect();
        let machines: Vec<(Host, Ipv4Addr, String)> = peers
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                let host = if i < CONTROL_PLANE {
                    instance_host(net, &format!("cp{i}"), peer.address, &cp_ips, &shared)
                } else {
                    let ip = peer.address.to_string();
                    shared.ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
                    shared.clone()
                };
                (host, peer.address, peer.id.clone())
            })
            .collect();
        let config = write_config(
            &shared,
            &format!("  cloudGroup:\n    provider: aws\n    name: {GROUP_NAME}\n"),
        );
        let facts = format!("region: us-east-1\nzone: us-east-1a\ngroup: {GROUP_NAME}\n");
        Run {
            config,
            agents: agents(machines, &facts),
            env: vec![
                ("MUSTER_AWS_ENDPOINT".into(), endpoint),
                ("AWS_ACCESS_KEY_ID".into(), moto::KEY.into()),
                ("AWS_SECRET_ACCESS_KEY".into(), moto::SECRET_KEY.into()),
            ],
            cloud: Some(cloud),
        }
    }

    fn start(&mut self, i: usize) {
        let a = &mut self.agents[i];
        let dir = a.dir.display();
        let args: Vec<String> = vec![
            "agent".into(),
            "--provider=file".into(),
            format!("--metadata-file={dir}/facts.yaml"),
            format!("--config={}", self.config.display()),
            format!("--state-dir={dir}/state"),
            "--defaults=/nonexistent".into(),
            "--cmdline-file=/dev/null".into(),
            "--supervisor=child".into(),
            format!("--etcd-bin={}", etcd_bin::etcd_bin().display()),
            "--log-format=json".into(),
            "--kubernetes-bin=/nonexistent/kubernetes".into(),
            format!("--kubernetes-dir={dir}/kubernetes"),
            format!("--status-listen={}:{STATUS_PORT}", a.ip),
            // As the issue measured: the tier-1 tick, a production grace.
            "--tick-ms=250".into(),
            "--replace-after-secs=60".into(),
            "--etcd-heartbeat-ms=100".into(),
            "--etcd-election-ms=1000".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = Path::new(&format!("a{i}")).join("agent.log");
        let mut env: Vec<(&str, &str)> = vec![("RUST_LOG", "info")];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        a.proc = Some(a.host.spawn(muster_bin(), &args, &env, log));
        a.started = Some(Instant::now());
    }

    /// Sums a counter over the agents' `/metrics`.
    fn counter(&self, name: &str, agents: std::ops::Range<usize>) -> u64 {
        let addrs: Vec<SocketAddr> = agents
            .map(|i| SocketAddr::from((self.agents[i].ip, STATUS_PORT)))
            .collect();
        // Every agent's address is reachable from the first one's host.
        self.agents[0].host.in_netns(|| {
            addrs
                .iter()
                .filter_map(|a| http_get::get(*a, "/metrics").ok())
                .filter_map(|answer| {
                    answer
                        .body
                        .lines()
                        .find(|l| l.starts_with(name) && !l.starts_with('#'))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .sum()
        })
    }

    /// The cluster's revision, via the first control-plane agent's member.
    fn revision(&self) -> Option<i64> {
        let pki = self.agents[0].dir.join("state/pki");
        let out = self.agents[0]
            .host
            .command(etcd_bin::etcdctl_bin())
            .arg(format!("--endpoints=https://{}:2379", self.agents[0].ip))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", pki.join("client.crt").display()))
            .arg(format!("--key={}", pki.join("client.key").display()))
            .args(["--command-timeout=5s", "endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v[0]["Status"]["header"]["revision"].as_i64()
    }
}

/// The fleet's cluster config, with `discovery` (the section's body).
fn write_config(shared: &Host, discovery: &str) -> PathBuf {
    let config = shared.dir().join("cluster.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster:\n  name: massjoin\n  secret: \"{SECRET}\"\n\
             topology:\n  controlPlane:\n    count: {CONTROL_PLANE}\n\
             discovery:\n{discovery}"
        ),
    )
    .expect("write config");
    config
}

/// The agents on `machines` (host, address, instance id), each with a
/// state directory and facts as the metadata service would give them
/// (`extra_facts` added).
fn agents(machines: Vec<(Host, Ipv4Addr, String)>, extra_facts: &str) -> Vec<Agent> {
    machines
        .into_iter()
        .enumerate()
        .map(|(i, (host, ip, id))| {
            let dir = host.dir().join(format!("a{i}"));
            std::fs::create_dir_all(&dir).expect("agent dir");
            std::fs::write(
                dir.join("facts.yaml"),
                format!("instance_id: {id}\nhostname: mj{i}\nprivate_ipv4: {ip}\n{extra_facts}"),
            )
            .expect("facts");
            Agent {
                host,
                ip,
                dir,
                proc: None,
                started: None,
                steady_after: None,
            }
        })
        .collect()
}

fn quantile<T: Copy + Ord>(sorted: &[T], q: f64) -> T {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn measure(workers: usize, limit: Duration, rest: Duration) {
    let net = Net::new("massjoin");
    let mut run = Run::new(&net, workers);
    let total = CONTROL_PLANE + workers;

    let cp_start = Instant::now();
    for i in 0..CONTROL_PLANE {
        run.start(i);
    }
    let formed = netns::wait_until(
        "the control plane is steady",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || (0..CONTROL_PLANE).all(|i| run.agents[i].is_steady()),
    );
    if let Err(e) = formed {
        println!("N={workers}: the 3 control-plane agents did not form: {e}");
        let log = std::fs::read_to_string(run.agents[0].dir.join("agent.log")).unwrap_or_default();
        for line in log
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            println!("  agent 0: {}", &line[..line.len().min(300)]);
        }
        return;
    }
    let cp_formed = cp_start.elapsed();

    let boot_calls0 = run.cloud.as_ref().map(Cloud::calls);
    let boot = Instant::now();
    for i in CONTROL_PLANE..total {
        run.start(i);
    }
    let spawned = boot.elapsed();
    while boot.elapsed() < limit {
        let mut waiting = 0;
        for a in run.agents[CONTROL_PLANE..].iter_mut() {
            if a.steady_after.is_none() {
                if a.is_steady() {
                    a.steady_after = a.started.map(|s| s.elapsed());
                } else {
                    waiting += 1;
                }
            }
        }
        if waiting == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let boot_window = boot.elapsed();
    let boot_calls1 = run.cloud.as_ref().map(Cloud::calls);
    let boot_lists = run.counter("muster_group_lists_total", 0..total);
    let boot_conns = run.counter("muster_etcd_connections_total", 0..total);

    let mut times: Vec<Duration> = run.agents[CONTROL_PLANE..]
        .iter()
        .filter_map(|a| a.steady_after)
        .collect();
    times.sort();
    let failures = workers - times.len();
    let roles: std::collections::BTreeMap<String, usize> =
        run.agents.iter().fold(Default::default(), |mut m, a| {
            let role = a
                .status()
                .and_then(|s| s["role"].as_str().map(str::to_string))
                .unwrap_or_else(|| "none".into());
            *m.entry(role).or_default() += 1;
            m
        });

    // At rest: CPU and memory of the workers, calls and writes per minute.
    std::thread::sleep(Duration::from_secs(5));
    let worker_pids: Vec<i32> = run.agents[CONTROL_PLANE..]
        .iter()
        .filter_map(Agent::pid)
        .collect();
    let lists0 = run.counter("muster_group_lists_total", 0..total);
    let conns0 = run.counter("muster_etcd_connections_total", 0..total);
    let rev0 = run.revision();
    let rest_calls0 = run.cloud.as_ref().map(Cloud::calls);
    let cpu0: Vec<Option<u64>> = worker_pids.iter().map(|p| cpu_ticks(*p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(rest);
    let cpu1: Vec<Option<u64>> = worker_pids.iter().map(|p| cpu_ticks(*p)).collect();
    let window = t0.elapsed().as_secs_f64();
    let lists1 = run.counter("muster_group_lists_total", 0..total);
    let conns1 = run.counter("muster_etcd_connections_total", 0..total);
    let rev1 = run.revision();
    let rest_calls1 = run.cloud.as_ref().map(Cloud::calls);
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut cpu: Vec<u64> = cpu0
        .iter()
        .zip(&cpu1)
        .filter_map(|(a, b)| {
            Some(((b.as_ref()? - a.as_ref()?) as f64 / ticks_per_s / window * 1e4) as u64)
        })
        .collect();
    cpu.sort();
    let mut rss: Vec<u64> = worker_pids.iter().filter_map(|p| rss_kib(*p)).collect();
    rss.sort();
    let per_min = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * 60.0 / window;

    let steady = |q: f64| {
        if times.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1} s", quantile(&times, q).as_secs_f64())
        }
    };
    println!(
        "N={workers}: control plane formed in {:.1} s; {workers} workers spawned in {:.1} s; \
         steady after start p50 {}, p99 {}, max {}; failures {failures} (limit {} s); roles {roles:?}",
        cp_formed.as_secs_f64(),
        spawned.as_secs_f64(),
        steady(0.5),
        steady(0.99),
        steady(1.0),
        limit.as_secs(),
    );
    println!(
        "N={workers}: boot window {:.0} s: group listings {:.0}/min, etcd connections {:.0}/min (fleet); \
         at rest: group listings {:.0}/min, etcd connections {:.0}/min (fleet), etcd writes {}/s",
        boot_window.as_secs_f64(),
        boot_lists as f64 * 60.0 / boot_window.as_secs_f64(),
        boot_conns as f64 * 60.0 / boot_window.as_secs_f64(),
        per_min(lists0, lists1),
        per_min(conns0, conns1),
        match (rev0, rev1) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) as f64 / window),
            _ => "?".into(),
        },
    );
    if let (Some(b0), Some(b1), Some(r0), Some(r1)) =
        (boot_calls0, boot_calls1, rest_calls0, rest_calls1)
    {
        let boot = |a: usize, b: usize| (b - a) as f64 * 60.0 / boot_window.as_secs_f64();
        let rest = |a: usize, b: usize| per_min(a as u64, b as u64);
        println!(
            "N={workers}: AWS API calls (fleet): boot {:.0}/min answered, {:.0}/min throttled; \
             at rest {:.0}/min answered ({:.2} per agent per min), {:.0}/min throttled",
            boot(b0.answered, b1.answered),
            boot(b0.throttled, b1.throttled),
            rest(r0.answered, r1.answered),
            rest(r0.answered, r1.answered) / total as f64,
            rest(r0.throttled, r1.throttled),
        );
    }
    if !cpu.is_empty() && !rss.is_empty() {
        println!(
            "N={workers}: per idle worker over {:.0} s: CPU p50 {:.2} %, max {:.2} % of one core; \
             RSS p50 {} KiB, max {} KiB",
            window,
            quantile(&cpu, 0.5) as f64 / 100.0,
            quantile(&cpu, 1.0) as f64 / 100.0,
            quantile(&rss, 0.5),
            quantile(&rss, 1.0),
        );
    }
    if let Some(keep) = std::env::var_os("MASS_JOIN_LOGS") {
        keep_logs(&run, Path::new(&keep), workers);
    }
    // Dropping the Net kills every process in its namespaces.
    drop(run);
    drop(net);
}

/// `MASS_JOIN_LOGS=dir`: the first control-plane agent's, the first and
/// last workers' logs (and moto's) are copied there before the run's
/// namespaces go.
fn keep_logs(run: &Run, dir: &Path, workers: usize) {
    let dir = dir.join(format!("n{workers}"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        println!("MASS_JOIN_LOGS: {}: {e}", dir.display());
        return;
    }
    let last = run.agents.len() - 1;
    for i in [0, CONTROL_PLANE, last] {
        let from = run.agents[i].dir.join("agent.log");
        let _ = std::fs::copy(&from, dir.join(format!("a{i}.log")));
    }
    if let Some(cloud) = &run.cloud {
        let _ = std::fs::copy(&cloud.log, dir.join("moto.log"));
        if let Some(front) = &cloud.front_log {
            let _ = std::fs::copy(front, dir.join("front.log"));
        }
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("MASS_JOIN_N")
        .unwrap_or_else(|_| "50,100,200,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let limit = Duration::from_secs(env_or("MASS_JOIN_LIMIT_S", 240));
    let rest = Duration::from_secs(env_or("MASS_JOIN_REST_S", 30));
    for n in sizes {
        measure(n, limit, rest);
    }
}
