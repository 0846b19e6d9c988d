//! Benchmark (tier 1): crash failover of the VIP holder, 50 times.
//!
//! Three candidate hosts, each with a real etcd 3.5 member (the agent's
//! production timers: heartbeat 100 ms, election 1000 ms) and a VIP manager
//! (ARP mode, default `election::Timing`), plus an observer on the same
//! bridge. Each round, 1-3 s after a holder is established:
//! SIGKILL-equivalent of the holder's manager (its
//! future is dropped; the address stays on its interface) and its link
//! cut; failover = kill → first TCP answer through the VIP from another
//! host (probes every 10 ms). The crashed host then "reboots": address
//! gone, link up, manager restarted, and the next round starts.
//! Double-holder observations: ARP rounds (who-has VIP every 10 ms) in
//! which two different MACs answered, over the whole run.
//!
//! Run: `cargo bench -p muster-agent --bench vip_failover` (root; etcd from
//! `bash ci/install-deps.sh`). `VIP_BENCH_ROUNDS=N` changes the count;
//! `VIP_BENCH_SHED=0` lets the holder keep etcd leadership (for comparison).
//! `VIP_BENCH_MODE=bgp` runs the same crashes in BGP mode: the VIP on lo,
//! announced to bird2 in the observer host, reached through bird's route
//! (the crashed holder's route stays until bird's hold timer, 9 s, fires;
//! the newest holder's wins by MED), and also counts router polls that saw
//! two routes.
//! `VIP_BENCH_HOGS=N` runs N busy-looping processes for the whole run (the
//! starved node of issue 14); `VIP_BENCH_RT=0` runs the managers at normal
//! priority instead of the agent's real-time VIP thread.
//! Prints figures; asserts nothing about time.

#[path = "../tests/support/arp_observer.rs"]
#[allow(dead_code)]
mod arp_observer;
#[path = "../tests/support/etcd_bin.rs"]
#[allow(dead_code)]
mod etcd_bin;
#[path = "../tests/support/netns.rs"]
mod netns;
#[path = "../tests/support/vip_lab.rs"]
mod vip_lab;

use std::time::{Duration, Instant};

use muster::vip::VipRole;
use netns::wait_until;
use vip_lab::{Lab, LabMode, percentiles};

const WAIT: Duration = Duration::from_secs(30);

fn main() {
    let rounds: usize = std::env::var("VIP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let shed = std::env::var("VIP_BENCH_SHED")
        .map(|v| v != "0")
        .unwrap_or(true);
    let mode = match std::env::var("VIP_BENCH_MODE").as_deref() {
        Ok("bgp") => LabMode::Bgp { hold_time: 9 },
        Ok("arp") | Err(_) => LabMode::Arp,
        Ok(other) => panic!("VIP_BENCH_MODE={other}: use arp or bgp"),
    };
    let hogs: usize = std::env::var("VIP_BENCH_HOGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let realtime = std::env::var("VIP_BENCH_RT")
        .map(|v| v != "0")
        .unwrap_or(true);
    let _hogs = Hogs::start(hogs);
    let mut lab = Lab::with_mode("vipbench", 3, mode);
    lab.shed_etcd_leadership = shed;
    lab.realtime = realtime;
    eprintln!(
        "{hogs} CPU hog(s); VIP threads at {} priority",
        if realtime { "real-time" } else { "normal" }
    );
    let since = Instant::now();
    for i in 0..3 {
        lab.start(i);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut all = Vec::new();
    let mut kills = Vec::new();
    let (mut with_leader, mut without_leader) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        lab.wait_for_holder(WAIT);
        // Crashes come at any moment, not right after a takeover: hold for
        // 1-3 s (deterministic jitter) so the kill lands at a random phase
        // of the renewal cycle.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(1000 + x % 2000));
        let old = lab.wait_for_holder(WAIT);
        let old_name = lab.hosts[old].name().to_string();
        let leader_too = lab.etcd_leader() == Some(old);

        lab.kill(old);
        lab.hosts[old].link_down();
        let killed = Instant::now();
        kills.push(killed);
        wait_until(
            "the VIP answers from another host",
            WAIT,
            Duration::from_millis(5),
            || lab.first_answer_from(killed, |n| n != old_name).is_some(),
        )
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let failover = lab
            .first_answer_from(killed, |n| n != old_name)
            .expect("answer")
            - killed;
        all.push(failover);
        if leader_too {
            with_leader.push(failover)
        } else {
            without_leader.push(failover)
        }
        eprintln!(
            "round {:2} (+{:.1?}): {old_name} crashed{} -> answered after {failover:.2?}",
            round + 1,
            killed - since,
            if leader_too {
                " (with the etcd leader)"
            } else {
                ""
            }
        );

        // Reboot: a fresh boot has no VIP on its interface.
        lab.wipe_vip(old);
        lab.hosts[old].link_up();
        lab.start(old);
        wait_until(
            "the rebooted host is a candidate again",
            WAIT,
            Duration::from_millis(20),
            || {
                lab.candidates[old]
                    .as_ref()
                    .is_some_and(|c| *c.role.borrow() == VipRole::Candidate)
            },
        )
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    let double_rounds = lab.double_answers(since);
    let doubles = double_rounds.len();
    // Where each double answer fell: names the hosts and how long after the
    // last kill, so a double can be told from a crash's hand-over.
    for d in &double_rounds {
        let names: Vec<&str> = d
            .macs
            .iter()
            .filter_map(|m| lab.macs.iter().position(|x| x == m))
            .map(|i| lab.hosts[i].name())
            .collect();
        let last_kill = kills.iter().rev().find(|k| **k <= d.at);
        eprintln!(
            "double answer at +{:.3?}: {names:?}; {}",
            d.at - since,
            last_kill.map_or("before any kill".to_string(), |k| format!(
                "{:.3?} after the last kill",
                d.at - *k
            ))
        );
    }
    let arp_rounds = lab.arp_round_count(since);
    let show = |name: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("{name}: no samples");
        } else {
            let (p50, p99, max) = percentiles(v.to_vec());
            println!(
                "{name} ({} samples): p50 {p50:.2?}, p99 {p99:.2?}, max {max:.2?}",
                v.len()
            );
        }
    };
    println!(
        "vip_failover ({mode:?}): {rounds} crash failovers (kill -> first answer from another host), etcd leadership shed by the holder: {shed}; {hogs} CPU hog(s); VIP threads real-time: {realtime}"
    );
    show("  all", &all);
    show("  holder's host also led etcd", &with_leader);
    show("  etcd leader elsewhere", &without_leader);
    println!(
        "  double-holder observations: {doubles} of {arp_rounds} ARP rounds had two MACs answering"
    );
    if matches!(mode, LabMode::Bgp { .. }) {
        let routes = lab.route_rounds_since(since);
        let two = routes.iter().filter(|r| r.next_hops.len() > 1).count();
        println!(
            "  router: {two} of {} polls listed two routes (a cut-off holder's, until the hold timer)",
            routes.len()
        );
    }
}

/// Busy-looping processes, killed when dropped.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start(n: usize) -> Hogs {
        Hogs(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a CPU hog")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
