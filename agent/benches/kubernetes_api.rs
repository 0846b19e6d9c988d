//! Benchmark: the Kubernetes API through the VIP, with real agents, real
//! etcd 3.5 and real Kubernetes v1.28.7 in network namespaces (tier 1).
//!
//! 1. `KUBE_BENCH_STARTS` times (default 10): three agents started together
//!    on empty disks -> the API answers `/readyz` through the VIP.
//! 2. In the last of those clusters, `KUBE_BENCH_CRASHES` times (default
//!    30): the VIP holder is powered off (every process of the host is
//!    SIGKILLed) -> the API answers through the VIP again (the "API gap");
//!    then the host boots again and the cluster settles before the next
//!    round.
//! 3. Memory of what runs on a control-plane node (RSS).
//!
//! The API is probed every 50 ms from another host with the admin
//! kubeconfig the agent wrote (`kube` client, 1 s per request). Prints
//! figures; asserts nothing about time.
//!
//!     cargo bench -p muster-agent --bench kubernetes_api

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::kubernetes::kube_bin;
use support::netns::{Host, wait_until};
use support::vip_lab::percentiles;

const PROBE_EVERY: Duration = Duration::from_millis(50);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Three agents with Kubernetes, started together.
fn cluster(hint: &str) -> (Cluster, Ipv4Addr) {
    let mut vip = Ipv4Addr::UNSPECIFIED;
    let mut c = Cluster::with_discovery(hint, 3, |net| {
        vip = net.spare_ip(0);
        let prefix = net.subnet().trim_end_matches("0/24").to_string();
        format!(
            "discovery:\n  static:\n    peers: [\"{prefix}11\", \"{prefix}12\", \"{prefix}13\"]\n\
             apiEndpoint:\n  vip: {vip}\n  mode: arp\n  interface: eth0\n"
        )
    });
    c.kubernetes_bin = Some(kube_bin());
    for _ in 0..3 {
        c.add_host();
    }
    (c, vip)
}

/// `/readyz` through the VIP from `host`, with `kubeconfig`.
fn api_ready(host: &Host, kubeconfig: &Path) -> bool {
    let path = kubeconfig.to_path_buf();
    host.in_netns(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            match muster::kubernetes::client::from_kubeconfig(&path, Duration::from_secs(1)).await {
                Ok(c) => muster::kubernetes::client::ready(&c, Duration::from_secs(1)).await,
                Err(_) => false,
            }
        })
    })
}

fn wait_api(c: &Cluster, from: usize, within: Duration) -> Duration {
    let t = Instant::now();
    let conf = c.kubernetes_dir(from).join("admin.conf");
    wait_until("the API through the VIP", within, PROBE_EVERY, || {
        api_ready(&c.nodes[from].host, &conf)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    t.elapsed()
}

/// RSS in MiB of the processes in `host` whose command line contains `needle`.
fn rss_mib(host: &Host, needle: &str) -> f64 {
    host.pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                // Arguments are NUL-separated: compare with spaces.
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1024.0
}

fn ms(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let starts = env("KUBE_BENCH_STARTS", 10).max(1);
    let crashes = env("KUBE_BENCH_CRASHES", 30);

    let mut start_times = Vec::new();
    let mut last = None;
    for run in 0..starts {
        let (mut c, vip) = cluster(&format!("kb{run}"));
        let t = Instant::now();
        for i in 0..3 {
            c.start_agent(i);
        }
        wait_api(&c, 0, Duration::from_secs(300));
        let took = t.elapsed();
        eprintln!(
            "start {:2}: API ready through the VIP after {}",
            run + 1,
            ms(took)
        );
        start_times.push(took);
        last = Some((c, vip));
    }
    let (mut c, vip) = last.expect("a cluster");

    let mut gaps = Vec::new();
    for round in 0..crashes {
        wait_api(&c, 0, Duration::from_secs(120));
        // Let the cluster settle (VIP held for a while, etcd healthy).
        std::thread::sleep(Duration::from_millis(1500));
        let holders = c.vip_holders(vip, &[0, 1, 2]);
        let [holder] = holders[..] else {
            panic!("round {round}: VIP holders {holders:?}");
        };
        let from = (holder + 1) % 3;
        c.power_off(holder);
        let gap = wait_api(&c, from, Duration::from_secs(120));
        eprintln!(
            "crash {:2}: h{} powered off -> API through the VIP after {}",
            round + 1,
            holder + 1,
            ms(gap)
        );
        gaps.push(gap);
        c.start_agent(holder);
        c.wait_for_cluster(&[0, 1, 2], 3, Duration::from_secs(120));
        wait_api(&c, holder, Duration::from_secs(120));
    }

    println!("kubernetes_api ({} starts, {} crashes):", starts, crashes);
    let (p50, p99, max) = percentiles(start_times.clone());
    println!(
        "  3 agents started -> API ready through the VIP: median {}, p99 {}, max {}",
        ms(p50),
        ms(p99),
        ms(max)
    );
    if !gaps.is_empty() {
        let (p50, p99, max) = percentiles(gaps.clone());
        println!(
            "  VIP holder powered off -> API through the VIP again: p50 {}, p99 {}, max {}",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    // Memory at steady state: every component of a restarted host runs
    // again (the controllers start once its apiserver is ready).
    std::thread::sleep(Duration::from_secs(30));
    for i in 0..3 {
        let host = &c.nodes[i].host;
        println!(
            "  h{} RSS: agent {:.1} MiB, kube-apiserver {:.1} MiB, controller-manager {:.1} MiB, scheduler {:.1} MiB, etcd {:.1} MiB",
            i + 1,
            rss_mib(host, "muster agent"),
            rss_mib(host, "kube-apiserver"),
            rss_mib(host, "kube-controller-manager"),
            rss_mib(host, "kube-scheduler"),
            rss_mib(host, "etcd --name"),
        );
    }
}
