//! Tier 1, the fault campaign of issue 14: randomized scenarios on real
//! agents and etcd in namespaces, each from a seed and replayable from it.
//! A scenario boots 3 or 5 control-plane machines (plus 0–2 workers and
//! spare slots) in a random order with random delays, then runs 3–6 faults
//! at random, overlapping moments: SIGKILL of an agent, power-off with the
//! disk kept, a machine destroyed and replaced, a link cut (one machine, or
//! a minority), the VIP holder frozen (SIGSTOP) or starved by CPU hogs, a
//! slow disk (the machine's writes limited to 10 IOPS through a blkio
//! cgroup, so etcd's fsyncs stall: `support/slow_disk.rs`); everything is
//! restored at the end. A fault the machine cannot inflict is named in the
//! run's summary as NOT inflicted. Half the runs discover their peers
//! through a GCE managed instance group (the Compute fake in the observer
//! host, `support/gce_group.rs`) instead of a static list; those also get
//! stale discovery: for a while the group API answers as the group was
//! 1–8 s earlier (a replaced machine still listed, its replacement not yet).
//!
//! Checked from outside the agents, on every run:
//! * S1: every status that names an etcd cluster names the same one;
//! * S2: a writer puts a new key every 100 ms through etcdctl (quorum
//!   writes); every key etcd acknowledged is there at the end;
//! * S4: an ARP observer (who-has every 10 ms) never sees two MACs for
//!   longer than the stated hand-over window (`frozen_holder_overlap`
//!   plus one probe);
//! * S3, from etcd's own history (`support/etcd_history.rs`: the changes
//!   every member logs): no removal of a voter left the remaining voters
//!   without a quorum of machines that were up at that moment (powered,
//!   linked, not destroyed, as the campaign itself did it);
//! * S5: no log holds the cluster secret or a private key;
//! * S7: once every machine runs again, the cluster is back at its size
//!   (all configured voters healthy, no learner, no other member listed:
//!   neither a dead one nor one over size) within 120 s.
//!
//! `FAULT_CAMPAIGN_RUNS=N` (default 2, as in CI) runs N seeds from
//! `FAULT_CAMPAIGN_SEED` (default: a fixed base, so CI is repeatable);
//! a failing run prints the command that replays exactly its seed, and
//! the campaign goes on to the end, then names every failing seed
//! (`FAULT_CAMPAIGN_DRY=1` prints the scenarios without running them); a
//! failing run copies every machine's logs to
//! `$TMPDIR/muster-fault-campaign-SEED/`. Seeds
//! that once failed are replayed by `fault_campaign_regressions`.

use crate::support::arp_observer::{self, ArpRound};
use crate::support::cluster::{self, Cluster};
use crate::support::etcd_history;
use crate::support::fake_compute::FakeCompute;
use crate::support::gce_group::{Served, add_instance, attach, serve_in};
use crate::support::netns::{Host, wait_until};
use crate::support::rng::Rng;
use crate::support::slow_disk::SlowDisk;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use muster::vip::election::Timing;
use nix::sys::signal::Signal;

/// What happens to whom. `Holder` faults pick the VIP holder at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillAgent(usize),
    PowerOff(usize),
    Replace(usize),
    CutLink(usize),
    CutMinority,
    FreezeHolder,
    StarveHolder,
    /// fsync stalls: the machine's writes limited to a few IOPS.
    SlowDisk(usize),
    /// The group API answers as the group was this many ms ago (GCE runs).
    StaleDiscovery(u64),
}

/// One scenario, a pure function of its seed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scenario {
    seed: u64,
    control_plane: usize,
    workers: usize,
    boot_order: Vec<usize>,
    boot_delays_ms: Vec<u64>,
    /// (start after the cluster formed, fault, how long it lasts), by start.
    faults: Vec<(u64, Fault, u64)>,
    /// Discovery through a GCE managed instance group (the Compute fake,
    /// which can lag) instead of a static list.
    gce_group: bool,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng(seed);
    let control_plane = if rng.below(3) == 0 { 5 } else { 3 };
    let workers = rng.below(3) as usize;
    let machines = control_plane + workers;
    let mut boot_order: Vec<usize> = (0..machines).collect();
    for i in (1..machines).rev() {
        boot_order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let boot_delays_ms = (0..machines).map(|_| rng.below(1500)).collect();
    let count = 3 + rng.below(4);
    let mut at = 0;
    let mut replaced = 0;
    let mut faults = Vec::new();
    for _ in 0..count {
        at += 1_000 + rng.below(5_000);
        let target = rng.below(machines as u64) as usize;
        let fault = match rng.below(8) {
            0 => Fault::KillAgent(target),
            1 => Fault::PowerOff(target),
            // One machine lost for good per run: more could take quorum
            // with them, which no system survives.
            2 if replaced == 0 => {
                replaced += 1;
                Fault::Replace(target)
            }
            3 => Fault::CutLink(target),
            4 => Fault::CutMinority,
            5 => Fault::FreezeHolder,
            6 => Fault::StarveHolder,
            _ => Fault::SlowDisk(target),
        };
        faults.push((at, fault, 1_000 + rng.below(5_000)));
    }
    // Drawn last, so that the draws above (and the seeds already reported)
    // stay what they were.
    let gce_group = rng.chance(50);
    if gce_group {
        let lag = 1_000 + rng.below(7_000);
        let fault = (
            1_000 + rng.below(at),
            Fault::StaleDiscovery(lag),
            2_000 + rng.below(8_000),
        );
        faults.push(fault);
        faults.sort_by_key(|f| f.0);
    }
    Scenario {
        seed,
        control_plane,
        workers,
        boot_order,
        boot_delays_ms,
        faults,
        gce_group,
    }
}

#[test]
fn scenarios_are_a_function_of_their_seed() {
    assert_eq!(scenario(7), scenario(7));
    assert_ne!(scenario(7), scenario(8));
    let s = scenario(7);
    let mut order = s.boot_order.clone();
    order.sort();
    assert_eq!(order, (0..s.control_plane + s.workers).collect::<Vec<_>>());
    let replaced = (0..500)
        .map(scenario)
        .map(|s| {
            s.faults
                .iter()
                .filter(|(_, f, _)| matches!(f, Fault::Replace(_)))
                .count()
        })
        .max();
    assert_eq!(
        replaced,
        Some(1),
        "at most one machine lost for good per run"
    );
}

/// Writes a new key every 100 ms; remembers which etcd acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(obs: Host, pki: std::path::PathBuf, endpoints: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u32;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let out = etcdctl(&obs, &pki, &endpoints)
                    .args(["put", &format!("/campaign/w{n:06}"), "x"])
                    .output();
                if out.is_ok_and(|o| o.status.success()) {
                    a.lock().expect("acked").push(n);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked.lock().expect("acked").clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn etcdctl(obs: &Host, pki: &std::path::Path, endpoints: &str) -> std::process::Command {
    let mut cmd = obs.command(crate::support::etcd_bin::etcdctl_bin());
    cmd.arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", pki.join("ca.crt").display()))
        .arg(format!("--cert={}", pki.join("client.crt").display()))
        .arg(format!("--key={}", pki.join("client.key").display()))
        .arg("--dial-timeout=1s")
        .arg("--command-timeout=2s");
    cmd
}

/// A broken invariant, with what was seen.
#[derive(Debug)]
struct Violation(String);

/// Undo steps for the faults still in force, by machine.
enum Undo {
    StartAgent(usize),
    LinkUp(usize),
    LinksUp(Vec<usize>),
    Thaw(usize),
    StopHogs(Vec<crate::support::netns::Proc>),
    Unthrottle(SlowDisk),
    Fresh,
    None,
}

struct Run {
    c: Cluster,
    seed: u64,
    /// Voters the cluster is configured for.
    size: usize,
    vip: Ipv4Addr,
    machines: Vec<usize>,
    ids: BTreeSet<String>,
    /// Faults this machine could not inflict, and why.
    not_inflicted: Vec<String>,
    /// The GCE group, in GCE runs.
    gce: Option<Gce>,
    /// When each machine went down (powered off, destroyed, cut off) or
    /// came back: the truth S3 is checked against.
    timeline: Vec<(SystemTime, usize, bool)>,
}

/// A GCE run's group: the Compute fake, served from the observer host.
struct Gce {
    fake: FakeCompute,
    served: Option<Served>,
    /// Instance name by machine index.
    names: std::collections::BTreeMap<usize, String>,
}

impl Gce {
    /// A new instance of the group, with its host.
    fn add(&mut self, c: &mut Cluster) -> usize {
        let name = format!("fc-{}", self.names.len() + 1);
        let (i, _) = add_instance(c, &self.fake, &name);
        self.names.insert(i, name);
        i
    }

    fn set_status(&self, i: usize, status: &str) {
        if let Some(name) = self.names.get(&i) {
            self.fake.with(|s| {
                if let Some(x) = s.instances.iter_mut().find(|x| &x.name == name) {
                    x.status = status.into();
                }
            });
        }
    }
}

/// Writes per second a slow disk allows (an fsync of etcd's WAL is one or
/// two): a cloud disk out of burst credits, or worse.
const SLOW_DISK_WRITE_IOPS: u32 = 10;

impl Run {
    fn holder(&self) -> Option<usize> {
        self.c
            .vip_holders(self.vip, &self.machines)
            .first()
            .copied()
    }

    fn went(&mut self, machine: usize, up: bool) {
        self.timeline.push((SystemTime::now(), machine, up));
    }

    /// Whether the machine at `ip` was up (powered, linked, not destroyed)
    /// at `at`; machines never touched by a fault were.
    fn was_up(&self, ip: Ipv4Addr, at: SystemTime) -> bool {
        let Some(machine) = self.c.nodes.iter().position(|n| n.host.ip() == ip) else {
            return true;
        };
        self.timeline
            .iter()
            .rfind(|(t, m, _)| *m == machine && *t <= at)
            .is_none_or(|(_, _, up)| *up)
    }

    fn sample_ids(&mut self) {
        for &i in &self.machines {
            if let Some(id) = self.c.etcd_view(i).map(|v| v.cluster_id) {
                self.ids.insert(id);
            }
        }
    }

    fn inflict(&mut self, fault: Fault) -> Undo {
        let pick = |i: usize, m: &[usize]| m[i % m.len()];
        match fault {
            Fault::KillAgent(i) => {
                let i = pick(i, &self.machines);
                self.c.kill_agent(i, Signal::SIGKILL);
                Undo::StartAgent(i)
            }
            Fault::PowerOff(i) => {
                let i = pick(i, &self.machines);
                self.c.power_off(i);
                self.went(i, false);
                if let Some(g) = &self.gce {
                    g.set_status(i, "TERMINATED");
                }
                Undo::StartAgent(i)
            }
            Fault::Replace(i) => {
                let i = pick(i, &self.machines);
                self.c.destroy(i);
                self.went(i, false);
                self.machines.retain(|m| *m != i);
                let new = match self.gce.as_mut() {
                    // The group deletes the instance and creates another.
                    Some(g) => {
                        if let Some(name) = g.names.get(&i) {
                            g.fake.with(|s| s.instances.retain(|x| &x.name != name));
                        }
                        g.add(&mut self.c)
                    }
                    None => self.c.add_host(),
                };
                self.went(new, true);
                self.c.start_agent(new);
                self.machines.push(new);
                Undo::None
            }
            Fault::CutLink(i) => {
                let i = pick(i, &self.machines);
                self.c.nodes[i].host.link_down();
                self.went(i, false);
                Undo::LinkUp(i)
            }
            Fault::CutMinority => {
                // A minority of the control plane: one of three, two of five.
                let cut: Vec<usize> = self
                    .machines
                    .iter()
                    .copied()
                    .take((self.size - 1) / 2)
                    .collect();
                for &i in &cut {
                    self.c.nodes[i].host.link_down();
                    self.went(i, false);
                }
                Undo::LinksUp(cut)
            }
            Fault::FreezeHolder => match self.holder() {
                Some(h) => {
                    if let Some(a) = self.c.nodes[h].agent.as_mut() {
                        a.kill(Signal::SIGSTOP);
                    }
                    Undo::Thaw(h)
                }
                None => Undo::None,
            },
            Fault::SlowDisk(i) => {
                let i = pick(i, &self.machines);
                let host = &self.c.nodes[i].host;
                match SlowDisk::apply(host.dir(), &host.pids(), SLOW_DISK_WRITE_IOPS) {
                    Ok(slow) => Undo::Unthrottle(slow),
                    Err(e) => {
                        // Said in the run's summary: a fault not inflicted
                        // is not reported as survived.
                        self.not_inflicted.push(format!("SlowDisk: {e}"));
                        Undo::None
                    }
                }
            }
            Fault::StaleDiscovery(lag_ms) => match &self.gce {
                Some(g) => {
                    g.fake.with(|s| s.list_lag = Duration::from_millis(lag_ms));
                    Undo::Fresh
                }
                None => {
                    self.not_inflicted
                        .push("StaleDiscovery: a static list cannot lag".into());
                    Undo::None
                }
            },
            Fault::StarveHolder => match self.holder() {
                Some(h) => {
                    let host = &self.c.nodes[h].host;
                    let hogs = (0..2)
                        .map(|n| {
                            host.spawn(
                                "sh",
                                &["-c", "while :; do :; done"],
                                &[],
                                format!("hog{n}.log"),
                            )
                        })
                        .collect();
                    Undo::StopHogs(hogs)
                }
                None => Undo::None,
            },
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::StartAgent(i) if self.machines.contains(&i) => {
                if let Some(g) = &self.gce {
                    g.set_status(i, "RUNNING");
                }
                self.went(i, true);
                self.c.start_agent(i)
            }
            Undo::Fresh => {
                if let Some(g) = &self.gce {
                    g.fake.with(|s| s.list_lag = Duration::ZERO);
                }
            }
            Undo::LinkUp(i) if self.machines.contains(&i) => {
                self.c.nodes[i].host.link_up();
                self.went(i, true);
            }
            Undo::LinksUp(cut) => {
                for i in cut {
                    if self.machines.contains(&i) {
                        self.c.nodes[i].host.link_up();
                        self.went(i, true);
                    }
                }
            }
            Undo::Thaw(i) if self.machines.contains(&i) => {
                if let Some(a) = self.c.nodes[i].agent.as_mut() {
                    a.kill(Signal::SIGCONT);
                }
            }
            Undo::StopHogs(hogs) => drop(hogs),
            Undo::Unthrottle(slow) => drop(slow),
            _ => {}
        }
    }
}

fn run(s: &Scenario) -> Result<String, Violation> {
    let machines = s.control_plane + s.workers;
    let slots = (machines + 2) as u8;
    let mut vip = Ipv4Addr::UNSPECIFIED;
    let c = Cluster::with_discovery(
        &format!("fc{:x}", s.seed & 0xfff),
        s.control_plane as u8,
        |net| {
            vip = net.spare_ip(0);
            let prefix = net.subnet().trim_end_matches("0/24").to_string();
            let peers: Vec<String> = (0..slots)
                .map(|i| format!("\"{prefix}{}\"", 11 + i))
                .collect();
            let discovery = if s.gce_group {
                "discovery:\n  cloudGroup:\n    provider: gce\n".to_string()
            } else {
                format!("discovery:\n  static:\n    peers: [{}]\n", peers.join(", "))
            };
            format!("{discovery}apiEndpoint:\n  vip: {vip}\n  mode: arp\n  interface: eth0\n")
        },
    );
    let mut run = Run {
        c,
        seed: s.seed,
        size: s.control_plane,
        vip,
        machines: (0..machines).collect(),
        ids: BTreeSet::new(),
        not_inflicted: Vec::new(),
        timeline: Vec::new(),
        gce: s.gce_group.then(|| Gce {
            fake: FakeCompute::new(&[]),
            served: None,
            names: Default::default(),
        }),
    };
    for _ in 0..machines {
        match run.gce.as_mut() {
            Some(g) => {
                g.fake.with(|s| s.target_size = machines as u32);
                g.add(&mut run.c);
            }
            None => {
                run.c.add_host();
            }
        }
    }
    let obs = run.c.net.add_host("obs");
    if let Some(g) = run.gce.as_mut() {
        let served = serve_in(&obs, &g.fake);
        attach(&mut run.c, &served);
        g.served = Some(served);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rounds: Arc<Mutex<Vec<ArpRound>>> = Arc::new(Mutex::new(Vec::new()));
    let observer = arp_observer::spawn(obs.clone(), vip, stop.clone(), rounds.clone());

    for (&i, &delay) in s.boot_order.iter().zip(&s.boot_delays_ms) {
        std::thread::sleep(Duration::from_millis(delay));
        run.c.start_agent(i);
    }
    // Formed: some machine reports the configured size, all healthy. Which
    // machines hold the seats is the agents' business (under load a slow
    // first member may be replaced by a worker), and a run that never forms
    // is a violation reported like the others, not a harness panic.
    let size = s.control_plane;
    let at_size = |run: &Run| {
        run.machines.iter().any(|&i| {
            run.c
                .etcd_view(i)
                .is_some_and(|v| v.healthy_voters == size && v.learners == 0 && v.listed == size)
        })
    };
    if let Err(e) = wait_until(
        "the first cluster formed",
        Duration::from_secs(90),
        Duration::from_millis(300),
        || at_size(&run),
    ) {
        stop.store(true, Ordering::Relaxed);
        let _ = observer.join();
        return Err(Violation(format!(
            "S7 (formation): {e}\nseed {:#x}\n{}",
            s.seed,
            machine_states(&run).join("\n")
        )));
    }
    run.sample_ids();
    // The writer uses node 0's client certificate, from the observer host.
    let pki = obs.dir().join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    for f in ["ca.crt", "client.crt", "client.key"] {
        std::fs::copy(
            run.c.nodes[0].host.dir().join("state/pki").join(f),
            pki.join(f),
        )
        .expect("copy client certificate");
    }
    let endpoints: Vec<String> = (0..slots)
        .map(|i| {
            let prefix = run.c.net.subnet().trim_end_matches("0/24").to_string();
            format!("https://{prefix}{}:2379", 11 + i)
        })
        .collect();
    let mut writer = Writer::start(obs.clone(), pki, endpoints.join(","));

    // Faults at their moments; each undone when its time is up.
    let start = Instant::now();
    let mut pending: Vec<(u64, Undo)> = Vec::new();
    let mut log = Vec::new();
    for &(at, fault, lasts) in &s.faults {
        while let Some(due) = pending.iter().position(|(t, _)| *t <= at) {
            let (t, undo) = pending.remove(due);
            sleep_until(start, t, &mut run);
            run.undo(undo);
        }
        sleep_until(start, at, &mut run);
        let undo = run.inflict(fault);
        log.push(format!(
            "{:.1}s {fault:?} for {lasts} ms",
            at as f64 / 1000.0
        ));
        pending.push((at + lasts, undo));
    }
    pending.sort_by_key(|(t, _)| *t);
    for (t, undo) in pending {
        sleep_until(start, t, &mut run);
        run.undo(undo);
    }

    // S7: back to size once every machine runs.
    let settled = Instant::now();
    let back = wait_until(
        "the cluster back at its size",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            run.sample_ids();
            run.machines.iter().any(|&i| {
                run.c.etcd_view(i).is_some_and(|v| {
                    v.healthy_voters == size && v.learners == 0 && v.listed == size
                })
            })
        },
    );
    let healed = settled.elapsed();
    let acked = writer.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = observer.join();

    let mut problems = Vec::new();
    if let Err(e) = back {
        problems.push(format!("S7: {e}"));
    }
    if run.ids.len() > 1 {
        problems.push(format!("S1: clusters {:?}", run.ids));
    }
    // S2: every acknowledged key is there (read from any member that
    // answers; right after healing one may still be catching up).
    let mut stored: Option<BTreeSet<String>> = None;
    let _ = wait_until(
        "a member answers a read",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            stored = run.machines.iter().find_map(|&i| {
                let out = run
                    .c
                    .etcdctl(i, &["get", "--prefix", "/campaign/", "--keys-only"]);
                out.status.success().then(|| {
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect()
                })
            });
            stored.is_some()
        },
    );
    let read_ok = stored.is_some();
    let stored = stored.unwrap_or_default();
    let lost: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|n| !stored.contains(&format!("/campaign/w{n:06}")))
        .collect();
    if !read_ok || !lost.is_empty() || acked.is_empty() {
        problems.push(format!(
            "S2: {} acknowledged, {} lost (first {:?}); read ok: {}",
            acked.len(),
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>(),
            read_ok
        ));
    }
    // S4: two MACs no longer than the stated window (plus one probe).
    let (doubles, longest) = arp_observer::double_answers(&rounds.lock().expect("rounds"));
    let window = Timing::default().frozen_holder_overlap() + Duration::from_millis(20);
    if longest > window {
        problems.push(format!(
            "S4: two MACs answered for {longest:?} (window {window:?}; {doubles} rounds)"
        ));
    }
    // S3, from etcd's own history: no removal of a voter left the others
    // without a quorum of machines that were up.
    let etcd_logs: Vec<std::path::PathBuf> = run
        .c
        .nodes
        .iter()
        .map(|n| n.host.dir().join("state/services/muster-etcd.log"))
        .collect();
    let history = etcd_history::read(&etcd_logs.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    let broken = etcd_history::removals_that_broke_quorum(&history, |ip, at| run.was_up(ip, at));
    if !broken.is_empty() {
        problems.push(format!("S3: removals that broke quorum: {broken:?}"));
    }
    let (learners_added, voters_added, removed) = etcd_history::counts(&history);
    // S5: no secret in any log of any machine.
    for node in &run.c.nodes {
        for log in logs_under(node.host.dir()) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(cluster::SECRET) || text.contains("PRIVATE KEY") {
                problems.push(format!("S5: a secret in {}", log.display()));
            }
        }
    }
    let not_inflicted = if run.not_inflicted.is_empty() {
        String::new()
    } else {
        format!("; NOT inflicted: {}", run.not_inflicted.join("; "))
    };
    let summary = format!(
        "seed {:#x}: {} control plane + {} workers, {} group; faults: {}{not_inflicted}; back to size {healed:.1?} after the last fault ended; etcd history: {learners_added} learners added, {voters_added} promoted, {removed} removed, S3 checked at each removal; {} writes acknowledged, {} lost; {} ARP rounds, {doubles} with two MACs (longest {longest:?})",
        s.seed,
        s.control_plane,
        s.workers,
        if s.gce_group { "GCE" } else { "static" },
        log.join(", "),
        acked.len(),
        lost.len(),
        rounds.lock().expect("rounds").len()
    );
    if problems.is_empty() {
        Ok(summary)
    } else {
        // The evidence: what each machine says of itself now.
        Err(Violation(format!(
            "{}\n{summary}\n{}",
            problems.join("\n"),
            machine_states(&run).join("\n")
        )))
    }
}

/// Copies every log of every machine (agent, etcd, supervisor) out of the
/// run's directories, which go when the run ends, and says where: the
/// evidence of a failing run.
fn keep_logs(run: &Run, seed: u64) -> String {
    let to = std::env::temp_dir().join(format!("muster-fault-campaign-{seed:#x}"));
    for (i, node) in run.c.nodes.iter().enumerate() {
        for log in logs_under(node.host.dir()) {
            let name = log.file_name().unwrap_or_default();
            let dest = to.join(format!("h{}", i + 1));
            if std::fs::create_dir_all(&dest).is_ok() {
                let _ = std::fs::copy(&log, dest.join(name));
            }
        }
    }
    format!("logs kept in {}", to.display())
}

/// What each machine says of itself now, and where its logs were kept.
fn machine_states(run: &Run) -> Vec<String> {
    let mut states: Vec<String> = run
        .machines
        .iter()
        .map(|&i| {
            let s = run.c.status(i).unwrap_or_default();
            format!(
                "  h{}: role {} phase {} etcd {} message {}",
                i + 1,
                s["role"],
                s["phase"],
                s["etcd"]["members"],
                s["message"]
            )
        })
        .collect();
    states.push(keep_logs(run, run.seed));
    states
}

/// Sleeps until `at_ms` after `start`, sampling the cluster ids meanwhile.
fn sleep_until(start: Instant, at_ms: u64, run: &mut Run) {
    let due = start + Duration::from_millis(at_ms);
    while Instant::now() < due {
        run.sample_ids();
        std::thread::sleep(
            due.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
        );
    }
}

fn logs_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn fault_campaign() {
    let runs: u64 = std::env::var("FAULT_CAMPAIGN_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let base: u64 = std::env::var("FAULT_CAMPAIGN_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        // CI's two runs from here draw every fault kind between them.
        .unwrap_or(0x5eed_02c6);
    let started = Instant::now();
    // Every run goes on after a violation, so that a long campaign reports
    // all its failing seeds at once.
    let mut failed = Vec::new();
    let mut drawn: std::collections::BTreeMap<String, usize> = Default::default();
    for n in 0..runs {
        let seed = base + n;
        let s = scenario(seed);
        for (_, fault, _) in &s.faults {
            let kind = format!("{fault:?}");
            let kind = kind.split('(').next().unwrap_or(&kind).to_string();
            *drawn.entry(kind).or_default() += 1;
        }
        if std::env::var_os("FAULT_CAMPAIGN_DRY").is_some() {
            eprintln!("{s:?}");
            continue;
        }
        match run(&s) {
            Ok(summary) => eprintln!("campaign run {}/{runs}: {summary}", n + 1),
            Err(Violation(what)) => {
                eprintln!(
                    "campaign run {}/{runs} broke an invariant:\n{what}\nreplay: FAULT_CAMPAIGN_SEED={seed:#x} FAULT_CAMPAIGN_RUNS=1 cargo nextest run -p muster-agent --test tier1 -E 'test(=fault_campaign::fault_campaign)' --no-capture",
                    n + 1
                );
                failed.push(seed);
            }
        }
    }
    eprintln!(
        "campaign: {runs} runs from seed {base:#x} in {:.0?}; faults drawn: {drawn:?}; runs that broke an invariant: {}",
        started.elapsed(),
        failed.len()
    );
    let seeds: Vec<String> = failed.iter().map(|s| format!("{s:#x}")).collect();
    assert!(
        failed.is_empty(),
        "{} of {runs} runs broke an invariant (seeds {}); each failing run printed its replay command above",
        failed.len(),
        seeds.join(", ")
    );
}

/// Seeds that once broke an invariant, replayed on every run. 0xc0de0006:
/// a powered-off voter of three was removed after the grace, then another
/// was lost for good: quorum gone for ever (fixed by add before remove).
/// A replay depends on timing (the removal raced the second loss by 0.3 s
/// and no longer always wins it), so the same sequence is also pinned down
/// step by step in `heal::an_unreachable_voter_keeps_its_seat_…`, which
/// fails without the fix (tried).
fn regressions() -> Vec<Scenario> {
    // Written out, not regenerated: new fault kinds change what a seed
    // draws, and the regression must stay the sequence that failed.
    vec![Scenario {
        seed: 0xc0de_0006,
        control_plane: 3,
        workers: 0,
        boot_order: vec![0, 2, 1],
        boot_delays_ms: vec![1056, 1159, 324],
        faults: vec![
            (1852, Fault::PowerOff(1), 4976),
            (5194, Fault::Replace(0), 5574),
            (9722, Fault::PowerOff(0), 1499),
            (10987, Fault::CutMinority, 2965),
            (12244, Fault::StarveHolder, 1672),
        ],
        gce_group: false,
    }]
}

#[test]
fn fault_campaign_regressions() {
    for s in regressions() {
        match run(&s) {
            Ok(summary) => eprintln!("regression: {summary}"),
            Err(Violation(what)) => {
                panic!(
                    "regression seed {:#x} broke an invariant again:\n{what}",
                    s.seed
                )
            }
        }
    }
}
