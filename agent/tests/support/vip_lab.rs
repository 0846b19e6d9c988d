#![allow(dead_code)]
//! A tier-1 VIP lab: candidate hosts running a real etcd member each and a
//! [`VipManager`] (in-process, one thread + runtime inside each host's
//! namespace), and an observer host probing the VIP two ways:
//!
//! * TCP connect to [`PORT`], which a tiny listener serves on every
//!   candidate, answering with the host's name: proves the VIP *answers*,
//!   from whom, including the observer's neighbour cache having moved
//!   (so it shows the gratuitous ARP at work). `ping` is not installed here.
//! * ARP "who-has VIP" every 10 ms on a raw socket, collecting every MAC
//!   that replies: two MACs in one round is a double holder (S4).
//!
//! Plus a ground-truth recorder per candidate: netlink polls of its
//! interface every 5 ms, so tests can order "holder dropped" before
//! "another took it". Everything stops when the lab is dropped (panics
//! included): threads are told to stop and joined, the Net tears down.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use muster::cloud::aws::{AwsClient, AwsOptions, Credentials, InstanceSession};
use muster::vip::arp;
use muster::vip::aws::AwsMover;
use muster::vip::bgp::{BgpMover, BgpPeer, BgpSettings};
use muster::vip::election::Timing;
use muster::vip::netlink::Netlink;
use muster::vip::{
    AnyMover, ArpMover, EtcdAccess, EtcdMemberHealth, HealthCheck, VipConfig, VipManager, VipRole,
};
use tokio::sync::watch;

pub use super::arp_observer::ArpRound;
use super::arp_observer::{self, mac_of};
use super::etcd_bin::etcd_bin;
use super::netns::{Host, Net, Proc, wait_until};

/// The local etcd member's health, answered only after `delay`, and
/// "unhealthy" while the test says the host is sick.
struct LabHealth {
    inner: EtcdMemberHealth,
    delay: Duration,
    sick: Arc<AtomicBool>,
}

impl HealthCheck for LabHealth {
    async fn healthy(&mut self) -> bool {
        tokio::time::sleep(self.delay).await;
        self.inner.healthy().await && !self.sick.load(Ordering::Relaxed)
    }
}

/// The port every candidate serves its name on.
pub const PORT: u16 = 7443;

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// What a candidate's manager thread is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Run,
    /// SIGTERM: the manager's clean shutdown.
    Stop,
    /// SIGKILL: the future is dropped mid-flight, nothing cleaned up.
    Kill,
}

/// One running VIP manager in a host.
pub struct Candidate {
    cmd: watch::Sender<Cmd>,
    pub role: watch::Receiver<VipRole>,
    thread: Option<JoinHandle<()>>,
}

impl Candidate {
    fn finish(&mut self, cmd: Cmd) {
        let _ = self.cmd.send(cmd);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.finish(Cmd::Kill);
    }
}

/// An interface-level fact: at `at`, the VIP appeared (true) or vanished.
#[derive(Debug, Clone, Copy)]
pub struct AddrChange {
    pub at: Instant,
    pub present: bool,
}

/// One TCP probe of the VIP: when it finished and who answered.
#[derive(Debug, Clone)]
pub struct Probe {
    pub at: Instant,
    pub answered_by: Option<String>,
}

/// How the candidates make the VIP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabMode {
    /// The VIP as a secondary private IP moved between EC2 network
    /// interfaces (moto), plus the /32 on eth0; set [`Lab::aws`] before
    /// starting candidates.
    Aws,
    /// The VIP on eth0, gratuitous ARP: the observer reaches it on L2.
    Arp,
    /// The VIP on lo, announced over BGP to a real router (bird2) in the
    /// observer host; the VIP lies outside the bridge's subnet, so the
    /// observer reaches it only through the route bird learnt.
    Bgp { hold_time: u16 },
}

/// The AS of every candidate, and of the router.
pub const NODE_ASN: u32 = 65001;
pub const ROUTER_ASN: u32 = 64512;
/// TEST-NET-1: routed only through BGP in the BGP lab.
pub const BGP_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

/// Where the AWS-mode candidates find EC2, and who they are there.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    pub endpoint: url::Url,
    /// Candidate `i` is instance `instance_ids[i]`.
    pub instance_ids: Vec<String>,
    pub key: String,
    pub secret_key: String,
}

/// One look at the router's table for the VIP.
#[derive(Debug, Clone)]
pub struct RouteRound {
    pub at: Instant,
    /// Next hops of every route bird has for the VIP.
    pub next_hops: Vec<Ipv4Addr>,
    /// The one bird selected (and put into the kernel).
    pub best: Option<Ipv4Addr>,
}

pub struct Lab {
    pub net: Net,
    pub hosts: Vec<Host>,
    pub observer: Host,
    pub vip: Ipv4Addr,
    pub macs: Vec<[u8; 6]>,
    pub candidates: Vec<Option<Candidate>>,
    pub mode: LabMode,
    pub aws: Option<AwsTarget>,
    pub timing: Timing,
    /// `VipConfig::shed_etcd_leadership` for managers started from now on.
    pub shed_etcd_leadership: bool,
    /// Run each manager's thread at real-time priority, as the agent does.
    pub realtime: bool,
    /// How long each health check of managers started from now on takes
    /// (an apiserver's `/readyz` under load); zero by default.
    pub health_delay: Duration,
    /// Per candidate: its health check says "unhealthy" while set.
    sick: Vec<Arc<AtomicBool>>,
    /// Per candidate: "this machine is leaving on purpose" (the agent's
    /// runner says so from the group's listing).
    leaving: Vec<watch::Sender<bool>>,
    endpoints: Vec<String>,
    _etcd: Vec<Proc>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub addr_log: Vec<Arc<Mutex<Vec<AddrChange>>>>,
    pub probes: Arc<Mutex<Vec<Probe>>>,
    pub arp_rounds: Arc<Mutex<Vec<ArpRound>>>,
    pub route_rounds: Arc<Mutex<Vec<RouteRound>>>,
    _router: Option<Proc>,
}

impl Lab {
    /// `n` candidate hosts with a 3-member (or n-member) etcd, an observer,
    /// listeners and probes running; no manager started yet.
    pub fn new(hint: &str, n: usize) -> Lab {
        Lab::with_mode(hint, n, LabMode::Arp)
    }

    /// Like [`Lab::new`]; in BGP mode the observer also runs bird2 as the
    /// candidates' router, and the router's table is polled.
    pub fn with_mode(hint: &str, n: usize, mode: LabMode) -> Lab {
        // The managers' logs, with the host in the span (RUST_LOG to filter).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "muster=info".into()),
            )
            .with_test_writer()
            .try_init();
        let net = Net::new(hint);
        let hosts: Vec<Host> = (1..=n).map(|i| net.add_host(&format!("c{i}"))).collect();
        let observer = net.add_host("obs");
        let vip = match mode {
            LabMode::Arp | LabMode::Aws => net.spare_ip(0),
            LabMode::Bgp { .. } => BGP_VIP,
        };
        let router = match mode {
            LabMode::Arp | LabMode::Aws => None,
            LabMode::Bgp { hold_time } => Some(start_bird(&observer, &hosts, hold_time)),
        };
        let initial: Vec<String> = hosts
            .iter()
            .map(|h| format!("{}=http://{}:2380", h.name(), h.ip()))
            .collect();
        let etcd: Vec<Proc> = hosts
            .iter()
            .map(|h| {
                let data = h.dir().join("etcd");
                h.spawn(
                    etcd_bin(),
                    &[
                        &format!("--name={}", h.name()),
                        &format!("--data-dir={}", data.display()),
                        &format!("--listen-peer-urls=http://{}:2380", h.ip()),
                        &format!("--initial-advertise-peer-urls=http://{}:2380", h.ip()),
                        &format!(
                            "--listen-client-urls=http://{}:2379,http://127.0.0.1:2379",
                            h.ip()
                        ),
                        &format!("--advertise-client-urls=http://{}:2379", h.ip()),
                        &format!("--initial-cluster={}", initial.join(",")),
                        "--initial-cluster-state=new",
                        "--initial-cluster-token=vip-lab",
                        // The agent's production timers (agent::Timing).
                        "--heartbeat-interval=100",
                        "--election-timeout=1000",
                    ],
                    &[],
                    "etcd.log",
                )
            })
            .collect();
        let endpoints: Vec<String> = hosts
            .iter()
            .map(|h| format!("http://{}:2379", h.ip()))
            .collect();
        let macs = hosts.iter().map(mac_of).collect();
        let mut lab = Lab {
            candidates: (0..n).map(|_| None).collect(),
            net,
            hosts,
            observer,
            vip,
            macs,
            mode,
            aws: None,
            timing: Timing::default(),
            shed_etcd_leadership: true,
            realtime: true,
            health_delay: Duration::ZERO,
            sick: (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect(),
            leaving: (0..n).map(|_| watch::channel(false).0).collect(),
            endpoints,
            _etcd: etcd,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            addr_log: Vec::new(),
            probes: Arc::new(Mutex::new(Vec::new())),
            arp_rounds: Arc::new(Mutex::new(Vec::new())),
            route_rounds: Arc::new(Mutex::new(Vec::new())),
            _router: router,
        };
        lab.wait_for_etcd();
        for i in 0..n {
            lab.start_listener(i);
            lab.start_addr_recorder(i);
        }
        lab.start_tcp_prober();
        lab.start_arp_prober();
        if matches!(mode, LabMode::Bgp { .. }) {
            lab.start_route_poller();
        }
        lab
    }

    /// S4 as the ARP observer saw it since `since`: never two MACs in one
    /// round, and enough rounds that this means something.
    pub fn assert_one_mac_at_a_time(&self, since: Instant) {
        let rounds = self.arp_round_count(since);
        let secs = since.elapsed().as_secs_f64();
        // 10 ms rounds; a busy 2-core machine may stretch them, not stop them.
        assert!(
            rounds as f64 > secs * 20.0,
            "the ARP observer ran only {rounds} rounds in {secs:.1} s"
        );
        let doubles = self.double_answers(since);
        assert!(
            doubles.is_empty(),
            "S4: {} ARP rounds with two MACs answering, first: {:?}",
            doubles.len(),
            doubles.first().map(|r| r
                .macs
                .iter()
                .map(|m| self.host_of_mac(m))
                .collect::<Vec<_>>())
        );
        eprintln!("ARP observer: {rounds} rounds in {secs:.1} s, none with two MACs");
    }

    /// Where the VIP lives on a candidate.
    pub fn vip_iface(&self) -> &'static str {
        match self.mode {
            LabMode::Arp | LabMode::Aws => "eth0",
            LabMode::Bgp { .. } => "lo",
        }
    }

    fn wait_for_etcd(&self) {
        let h = self.hosts[0].clone();
        let endpoints = self.endpoints.clone();
        let ok = wait_until(
            "etcd answers with a leader",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let (h, endpoints) = (h.clone(), endpoints.clone());
                h.in_netns(move || {
                    current_thread_runtime().block_on(async move {
                        let mut health = EtcdMemberHealth::new(EtcdAccess::plain(endpoints));
                        muster::vip::HealthCheck::healthy(&mut health).await
                    })
                })
            },
        );
        ok.expect("etcd cluster for the VIP lab");
    }

    /// Starts (or restarts) the manager on candidate `i`.
    pub fn start(&mut self, i: usize) {
        let host = self.hosts[i].clone();
        let (cmd_tx, mut cmd_rx) = watch::channel(Cmd::Run);
        let (role_tx, role_rx) = mpsc::channel();
        let cfg = VipConfig {
            vip: self.vip,
            holder_id: host.name().to_string(),
            // The local member first, as the agent does it.
            etcd: EtcdAccess::plain(self.endpoints_from(i)),
            timing: self.timing,
            shed_etcd_leadership: self.shed_etcd_leadership,
        };
        let (mode, router) = (self.mode, self.observer.ip());
        let (health_delay, sick) = (self.health_delay, self.sick[i].clone());
        let leaving = self.leaving[i].subscribe();
        let aws = match mode {
            LabMode::Aws => {
                let t = self
                    .aws
                    .clone()
                    .expect("Lab::aws is set before AWS candidates start");
                Some((t.instance_ids[i].clone(), t))
            }
            _ => None,
        };
        let realtime = self.realtime;
        let thread = std::thread::spawn(move || {
            let h = host.clone();
            h.in_netns(move || {
                if realtime {
                    // Root runs the tests; a refusal just leaves it normal.
                    let _ =
                        muster::vip::realtime::raise_this_thread(muster::vip::realtime::PRIORITY);
                }
                current_thread_runtime().block_on(async move {
                    let mover = match mode {
                        LabMode::Arp => AnyMover::Arp(
                            ArpMover::new(cfg.vip, Some("eth0"), host.ip())
                                .await
                                .expect("arp mover"),
                        ),
                        LabMode::Bgp { hold_time } => {
                            let settings = BgpSettings {
                                local_asn: NODE_ASN,
                                router_id: host.ip(),
                                hold_time,
                                peers: vec![BgpPeer {
                                    address: router,
                                    asn: ROUTER_ASN,
                                    port: 179,
                                }],
                            };
                            AnyMover::Bgp(
                                BgpMover::new(cfg.vip, &settings, Some("lo"))
                                    .await
                                    .expect("bgp mover"),
                            )
                        }
                        LabMode::Aws => {
                            let (instance_id, t) = aws.expect("aws target");
                            let mut opts = AwsOptions::new("us-east-1");
                            opts.endpoint = Some(t.endpoint);
                            let creds = Credentials::new(t.key, t.secret_key, None);
                            let client = AwsClient::new(opts, creds).expect("aws client");
                            let session = Arc::new(InstanceSession::with_client(client));
                            AnyMover::Aws(
                                AwsMover::new(
                                    cfg.vip,
                                    instance_id,
                                    session,
                                    Some("eth0"),
                                    host.ip(),
                                )
                                .await
                                .expect("aws mover"),
                            )
                        }
                    };
                    let health = LabHealth {
                        inner: EtcdMemberHealth::new(EtcdAccess::plain(vec![
                            "http://127.0.0.1:2379".into(),
                        ])),
                        delay: health_delay,
                        sick,
                    };
                    let manager = VipManager::new(cfg, mover, health)
                        .expect("vip manager")
                        .withdraw_when(leaving);
                    let _ = role_tx.send(manager.role());
                    let mut stop_rx = cmd_rx.clone();
                    let clean = async move {
                        let _ = stop_rx.wait_for(|c| *c == Cmd::Stop).await;
                    };
                    tokio::select! {
                        r = manager.run(clean) => r.expect("vip manager run"),
                        _ = cmd_rx.wait_for(|c| *c == Cmd::Kill) => {}
                    }
                })
            })
        });
        let role = role_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("manager started");
        self.candidates[i] = Some(Candidate {
            cmd: cmd_tx,
            role,
            thread: Some(thread),
        });
    }

    /// Makes candidate `i`'s health check fail (an apiserver gone bad)
    /// or pass again.
    pub fn set_sick(&self, i: usize, sick: bool) {
        self.sick[i].store(sick, Ordering::Relaxed);
    }

    /// Every member's client URL, host `i`'s own first.
    pub fn endpoints_from(&self, i: usize) -> Vec<String> {
        let mut e = self.endpoints.clone();
        e.rotate_left(i);
        e
    }

    /// Says that candidate `i`'s machine is leaving on purpose (or not).
    pub fn set_leaving(&self, i: usize, leaving: bool) {
        self.leaving[i].send_replace(leaving);
    }

    /// Clean shutdown of candidate `i` (returns when `run` has returned).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.candidates[i].take() {
            c.finish(Cmd::Stop);
        }
    }

    /// Crash of candidate `i`: its manager vanishes mid-flight; the address
    /// stays on the interface, as after SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.candidates[i].take() {
            c.finish(Cmd::Kill);
        }
    }

    /// The candidate whose etcd member leads, asked from the observer.
    pub fn etcd_leader(&self) -> Option<usize> {
        let endpoints = self.endpoints.clone();
        self.observer.in_netns(move || {
            current_thread_runtime().block_on(async move {
                for (i, e) in endpoints.iter().enumerate() {
                    let opts = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(300))
                        .with_timeout(Duration::from_millis(300));
                    let Ok(mut c) = etcd_client::Client::connect([e], Some(opts)).await else {
                        continue;
                    };
                    let Ok(s) = c.status().await else { continue };
                    if s.header().is_some_and(|h| h.member_id() == s.leader()) {
                        return Some(i);
                    }
                }
                None
            })
        })
    }

    /// Which candidates have the VIP on their interface now.
    pub fn holders_now(&self) -> Vec<usize> {
        (0..self.hosts.len()).filter(|&i| self.has_vip(i)).collect()
    }

    pub fn has_vip(&self, i: usize) -> bool {
        let out = self.hosts[i].ip_cmd(&["-4", "-o", "addr", "show", "dev", self.vip_iface()]);
        out.contains(&format!(" {}/32 ", self.vip))
    }

    /// Removes a leftover VIP (a crashed host's reboot clears it).
    pub fn wipe_vip(&self, i: usize) {
        // Not `ip_cmd`: the kernel may expire the address (its lifetime)
        // between the check and the delete.
        if self.has_vip(i) {
            let vip = format!("{}/32", self.vip);
            let _ = self.hosts[i].run("ip", &["addr", "del", &vip, "dev", self.vip_iface()]);
        }
    }

    /// The host whose address is `ip`.
    pub fn host_of_ip(&self, ip: Ipv4Addr) -> Option<usize> {
        self.hosts.iter().position(|h| h.ip() == ip)
    }

    /// Router rounds since `since` (BGP mode).
    pub fn route_rounds_since(&self, since: Instant) -> Vec<RouteRound> {
        let rounds = self.route_rounds.lock().expect("route rounds");
        rounds.iter().filter(|r| r.at >= since).cloned().collect()
    }

    pub fn last_route_round(&self) -> Option<RouteRound> {
        self.route_rounds
            .lock()
            .expect("route rounds")
            .last()
            .cloned()
    }

    /// Waits for exactly one running candidate to hold the VIP and for the
    /// observer to reach it there. Returns its index.
    pub fn wait_for_holder(&self, timeout: Duration) -> usize {
        let mut holder = None;
        wait_until(
            "one VIP holder that answers",
            timeout,
            Duration::from_millis(20),
            || {
                let roles: Vec<usize> = (0..self.hosts.len())
                    .filter(|&i| {
                        self.candidates[i]
                            .as_ref()
                            .is_some_and(|c| *c.role.borrow() == VipRole::Holder)
                    })
                    .collect();
                let answered = self.last_probe().and_then(|p| p.answered_by);
                holder = match (roles.as_slice(), answered) {
                    ([i], Some(name)) if self.hosts[*i].name() == name => Some(*i),
                    _ => None,
                };
                holder.is_some()
            },
        )
        .unwrap_or_else(|e| panic!("{e}; interfaces with the VIP: {:?}", self.holders_now()));
        holder.expect("holder")
    }

    pub fn last_probe(&self) -> Option<Probe> {
        self.probes.lock().expect("probes").last().cloned()
    }

    /// First TCP probe after `since` that `name` answered.
    pub fn first_answer_from(
        &self,
        since: Instant,
        pred: impl Fn(&str) -> bool,
    ) -> Option<Instant> {
        let probes = self.probes.lock().expect("probes");
        probes
            .iter()
            .find(|p| p.at >= since && p.answered_by.as_deref().is_some_and(&pred))
            .map(|p| p.at)
    }

    /// ARP rounds since `since` where two or more MACs answered.
    pub fn double_answers(&self, since: Instant) -> Vec<ArpRound> {
        let rounds = self.arp_rounds.lock().expect("arp rounds");
        rounds
            .iter()
            .filter(|r| r.at >= since && r.macs.len() > 1)
            .cloned()
            .collect()
    }

    pub fn arp_round_count(&self, since: Instant) -> usize {
        self.arp_rounds
            .lock()
            .expect("arp rounds")
            .iter()
            .filter(|r| r.at >= since)
            .count()
    }

    /// When the VIP last appeared on / vanished from candidate `i`'s
    /// interface after `since`.
    pub fn first_change(&self, i: usize, since: Instant, present: bool) -> Option<Instant> {
        let log = self.addr_log[i].lock().expect("addr log");
        log.iter()
            .find(|c| c.at >= since && c.present == present)
            .map(|c| c.at)
    }

    pub fn host_of_mac(&self, mac: &[u8; 6]) -> String {
        self.macs
            .iter()
            .position(|m| m == mac)
            .map(|i| self.hosts[i].name().to_string())
            .unwrap_or_else(|| arp::mac_string(mac))
    }

    fn start_listener(&mut self, i: usize) {
        let host = self.hosts[i].clone();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let h = host.clone();
            h.in_netns(move || {
                let listener = TcpListener::bind(("0.0.0.0", PORT)).expect("bind probe listener");
                listener
                    .set_nonblocking(true)
                    .expect("nonblocking listener");
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.write_all(host.name().as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        }));
    }

    fn start_addr_recorder(&mut self, i: usize) {
        let host = self.hosts[i].clone();
        let (stop, vip, iface) = (self.stop.clone(), self.vip, self.vip_iface());
        let log = Arc::new(Mutex::new(Vec::new()));
        self.addr_log.push(log.clone());
        self.threads.push(std::thread::spawn(move || {
            let h = host.clone();
            h.in_netns(move || {
                current_thread_runtime().block_on(async move {
                    let nl = Netlink::open().expect("netlink");
                    let iface = nl
                        .find_iface(Some(iface), host.ip())
                        .await
                        .expect("vip iface");
                    let mut last = false;
                    while !stop.load(Ordering::Relaxed) {
                        let present = nl.has(&iface, vip).await.expect("list addresses");
                        if present != last {
                            log.lock().expect("addr log").push(AddrChange {
                                at: Instant::now(),
                                present,
                            });
                            last = present;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
        }));
    }

    fn start_tcp_prober(&mut self) {
        let (obs, stop, vip, probes) = (
            self.observer.clone(),
            self.stop.clone(),
            self.vip,
            self.probes.clone(),
        );
        self.threads.push(std::thread::spawn(move || {
            obs.in_netns(move || {
                let addr = SocketAddr::from((vip, PORT));
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answered_by = probe_once(addr);
                    probes.lock().expect("probes").push(Probe {
                        at: Instant::now(),
                        answered_by,
                    });
                    if let Some(rest) = Duration::from_millis(10).checked_sub(started.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
        }));
    }

    fn start_arp_prober(&mut self) {
        self.threads.push(arp_observer::spawn(
            self.observer.clone(),
            self.vip,
            self.stop.clone(),
            self.arp_rounds.clone(),
        ));
    }
}

impl Lab {
    fn start_route_poller(&mut self) {
        let (stop, vip, rounds) = (self.stop.clone(), self.vip, self.route_rounds.clone());
        let socket = self.observer.dir().join("bird.ctl");
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                if let Some((next_hops, best)) = bird_routes(&socket, vip) {
                    rounds.lock().expect("route rounds").push(RouteRound {
                        at,
                        next_hops,
                        best,
                    });
                }
                if let Some(rest) = Duration::from_millis(20).checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        }));
    }
}

/// bird2 in the observer host: one passive eBGP session per candidate,
/// learnt routes exported into the observer's kernel table.
pub fn start_bird(observer: &Host, candidates: &[Host], hold_time: u16) -> Proc {
    let dir = observer.dir();
    let mut conf = format!(
        "router id {id};\nprotocol device {{ scan time 1; }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n",
        id = observer.ip()
    );
    for h in candidates {
        conf.push_str(&format!(
            "protocol bgp {name} {{ local {me} as {ROUTER_ASN}; neighbor {peer} as {NODE_ASN}; \
             passive on; hold time {hold}; ipv4 {{ import all; export none; }}; }}\n",
            name = h.name(),
            me = observer.ip(),
            peer = h.ip(),
            hold = hold_time.max(3),
        ));
    }
    let conf_path = dir.join("bird.conf");
    std::fs::write(&conf_path, conf).expect("write bird.conf");
    let socket = dir.join("bird.ctl");
    let bird = observer.spawn(
        "bird",
        &[
            "-f",
            "-c",
            &conf_path.to_string_lossy(),
            "-s",
            &socket.to_string_lossy(),
            "-P",
            &dir.join("bird.pid").to_string_lossy(),
        ],
        &[],
        "bird.log",
    );
    wait_until(
        "bird answers on its control socket",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || bird_routes(&socket, BGP_VIP).is_some(),
    )
    .unwrap_or_else(|e| panic!("{e}; bird log: {}", bird.log()));
    bird
}

/// Every route bird has for `vip`/32: the next hops, and the selected one.
/// `None` when bird does not answer.
pub fn bird_routes(
    socket: &std::path::Path,
    vip: Ipv4Addr,
) -> Option<(Vec<Ipv4Addr>, Option<Ipv4Addr>)> {
    let out = std::process::Command::new("birdc")
        .args([
            "-s",
            &socket.to_string_lossy(),
            "show",
            "route",
            "for",
            &format!("{vip}/32"),
        ])
        .output()
        .ok()?;
    // "Network not found" exits 1; only a missing greeting means no answer.
    let text = String::from_utf8_lossy(&out.stdout);
    text.starts_with("BIRD ").then(|| parse_bird_routes(&text))
}

/// `birdc show route` lists each route as a line `PREFIX unicast [proto
/// ...] * (100) ...` (the `*` marks the selected one) followed by `\tvia
/// ADDR on IFACE`.
pub fn parse_bird_routes(text: &str) -> (Vec<Ipv4Addr>, Option<Ipv4Addr>) {
    let (mut hops, mut best) = (Vec::new(), None);
    let mut selected = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("via ") {
            if let Some(ip) = rest.split_whitespace().next().and_then(|a| a.parse().ok()) {
                hops.push(ip);
                if selected {
                    best = Some(ip);
                }
            }
        } else if t.contains("unicast") {
            selected = t.contains(" * ");
        }
    }
    (hops, best)
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.candidates.iter_mut() {
            c.take();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connect with a short timeout (the segment's RTT is microseconds; a
/// stale neighbour entry makes SYNs vanish) and read the answering name.
fn probe_once(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(30)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
    let mut name = String::new();
    s.read_to_string(&mut name).ok()?;
    (!name.is_empty()).then_some(name)
}

/// p50 / p99 / max of a sample.
pub fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    assert!(!v.is_empty(), "no samples");
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99), v[v.len() - 1])
}
