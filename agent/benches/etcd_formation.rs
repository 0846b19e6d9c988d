//! Benchmark (tier 1, real etcd, real agents in network namespaces):
//!
//! * 3 agents started together → 3 healthy voting etcd members (the
//!   agents' own status and etcd agree), over several runs;
//! * a member's machine destroyed and a new one started → the new agent is a
//!   healthy voting member;
//! * the agent's resident memory in steady state.
//!
//! Run: `cargo bench -p muster-agent --bench etcd_formation` (root; needs
//! `bash ci/install-deps.sh`). Prints medians: these are figures, not
//! assertions — a shared 2-core machine is too noisy for timed asserts.

#[path = "../tests/support/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "../tests/support/etcd_bin.rs"]
mod etcd_bin;
#[path = "../tests/support/http_get.rs"]
#[allow(dead_code)]
mod http_get;
#[path = "../tests/support/netns.rs"]
mod netns;
#[path = "support/proc_stats.rs"]
mod proc_stats;

use std::time::{Duration, Instant};

use proc_stats::rss_kib;

use cluster::Cluster;

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (
        v[v.len() / 2],
        v[(v.len() * 9).div_ceil(10) - 1],
        v[v.len() - 1],
    )
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);

    let mut formation = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let mut c = Cluster::new("bform", 3, 3);
        for _ in 0..3 {
            c.add_host();
        }
        let start = Instant::now();
        for i in 0..3 {
            c.start_agent(i);
        }
        c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(60));
        formation.push(start.elapsed());
        std::thread::sleep(Duration::from_secs(2));
        if let Some(pid) = c.nodes[0].agent.as_ref().map(|p| p.pid()) {
            rss.extend(rss_kib(pid));
        }
    }
    let (p50, p90, max) = median(formation);
    println!(
        "3 agents started together -> 3 healthy voting members: median {p50:.2?}, p90 {p90:.2?}, max {max:.2?} ({runs} runs)"
    );
    if !rss.is_empty() {
        rss.sort();
        println!(
            "agent RSS in steady state (this build): median {} KiB, max {} KiB",
            rss[rss.len() / 2],
            rss[rss.len() - 1]
        );
    }

    let mut replacement = Vec::new();
    let replace_runs = runs.div_ceil(2);
    for _ in 0..replace_runs {
        let mut c = Cluster::new("brepl", 4, 3);
        for i in 0..3 {
            c.add_host();
            c.start_agent(i);
        }
        c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(60));
        c.destroy(0);
        let new = c.add_host();
        let start = Instant::now();
        c.start_agent(new);
        c.wait_for_cluster(&[1, 2, new], 3, Duration::from_secs(120));
        replacement.push(start.elapsed());
    }
    let (p50, p90, max) = median(replacement);
    println!(
        "member's machine gone, new agent started -> healthy voting member (static peers, 3 s replacement grace): \
         median {p50:.2?}, p90 {p90:.2?}, max {max:.2?} ({replace_runs} runs)"
    );
}
