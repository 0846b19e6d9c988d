//! Tier 1: the network-namespace harness itself (`support/netns.rs`).
//! Hosts reach each other, faults work, processes die with the Net, nothing
//! is left behind, leftovers of a crashed run are swept, and a real etcd in
//! one host answers another. Needs root, iproute2 and etcd; a missing tool
//! fails the test (`bash ci/install-deps.sh`), it never skips.

use crate::support::etcd_bin::etcd_bin;
use crate::support::netns;

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Net, Signal, pid_alive, wait_until};

const PROBE: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(20);

/// Namespace names from `ip netns list` (lines are `NAME` or `NAME (id: N)`).
fn ip_netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn root_links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("run ip -o link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_all_reach(hosts: &[netns::Host]) {
    for a in hosts {
        for b in hosts {
            assert!(a.reaches(b.ip(), PROBE), "{a:?} cannot reach {b:?}");
        }
    }
}

#[test]
fn setup_time_for_3_and_5_hosts() {
    for n in [3, 5] {
        let start = Instant::now();
        let net = Net::new("setup");
        let hosts: Vec<_> = (1..=n).map(|i| net.add_host(&format!("n{i}"))).collect();
        let setup = start.elapsed();
        assert_all_reach(&hosts);
        let start = Instant::now();
        drop(net);
        eprintln!(
            "netns: {n} hosts: setup {setup:.0?}, teardown {:.0?}",
            start.elapsed()
        );
    }
}

#[test]
fn hosts_reach_each_other_and_link_faults_cut_one_off() {
    let net = Net::new("smoke");
    let hosts: Vec<_> = ["a", "b", "c"].iter().map(|n| net.add_host(n)).collect();
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    assert_eq!(net.subnet(), format!("10.200.{}.0/24", a.ip().octets()[2]));
    assert_eq!(
        [a.ip().octets()[3], b.ip().octets()[3], c.ip().octets()[3]],
        [11, 12, 13]
    );
    assert_eq!(
        a.netns_path(),
        PathBuf::from("/run/netns").join(a.netns_name())
    );
    assert_all_reach(&hosts);

    // Nothing but the segment: no default route, no way out.
    // Commands run in the host's namespace (and only its network namespace).
    let ns = std::fs::metadata(a.netns_path()).expect("stat netns file");
    let out = a.run("readlink", &["/proc/self/ns/net"]);
    let link = String::from_utf8_lossy(&out.stdout);
    assert_eq!(link.trim(), format!("net:[{}]", ns.ino()));
    let out = a.run("readlink", &["/proc/self/ns/mnt"]);
    let root_mnt = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        root_mnt.to_string_lossy()
    );

    // The connected /24 and a default route to its .1, where nothing
    // answers (Kubernetes components want a default route to pick their
    // address): traffic still never leaves the test's network.
    let routes = a.ip_cmd(&["route", "show"]);
    let gateway = format!("default via {} dev eth0", {
        let [x, y, z, _] = a.ip().octets();
        Ipv4Addr::new(x, y, z, 1)
    });
    assert!(routes.contains(&gateway), "no {gateway}:\n{routes}");
    assert_eq!(
        routes.lines().count(),
        2,
        "the connected route and the default route only:\n{routes}"
    );
    let outside = Ipv4Addr::new(198, 51, 100, 1);
    assert!(!a.reaches(outside, PROBE), "a host reaches {outside}");

    c.link_down();
    assert!(
        !a.reaches(c.ip(), PROBE),
        "a still reaches c with c's link down"
    );
    assert!(
        !c.reaches(b.ip(), PROBE),
        "c still reaches b with its link down"
    );
    assert!(a.reaches(b.ip(), PROBE), "a and b must stay connected");

    c.link_up();
    let took = wait_until(
        "a reaches c after link_up",
        Duration::from_secs(5),
        POLL,
        || a.reaches(c.ip(), PROBE),
    )
    .expect("link_up restores the path");
    eprintln!("netns: a -> c back {took:.0?} after link_up");
    // c's own ARP entry for b went INCOMPLETE while the link was down; the
    // kernel re-probes on its 1 s timer, like on a real network.
    let took = wait_until(
        "c reaches b after link_up",
        Duration::from_secs(5),
        POLL,
        || c.reaches(b.ip(), PROBE),
    )
    .expect("link_up restores c's path to b");
    eprintln!("netns: c -> b back {took:.0?} after link_up");
}

#[test]
fn drop_kills_processes_and_leaves_nothing() {
    let net = Net::new("drop");
    let a = net.add_host("a");
    let b = net.add_host("b");
    let mut sleeper = a.spawn("sleep", &["300"], &[], "sleep.log");
    // A daemon that forks away from its parent is caught too.
    let pidfile = b.dir().join("orphan.pid");
    let script = format!("sleep 300 & echo $! > {}", pidfile.display());
    let mut parent = b.spawn("sh", &["-c", &script], &[("LC_ALL", "C")], "sh.log");
    parent
        .wait_timeout(Duration::from_secs(5))
        .expect("sh exits after forking");
    let orphan: i32 = std::fs::read_to_string(&pidfile)
        .expect("orphan pid file")
        .trim()
        .parse()
        .expect("orphan pid");
    assert!(pid_alive(orphan) && pid_alive(sleeper.pid()));
    assert_eq!(a.pids(), vec![sleeper.pid()]);
    assert_eq!(b.pids(), vec![orphan]);

    let names = net.netns_names();
    let prefix = net.name().to_string();
    let lock = format!("/run/muster-tests/subnet-{}.lock", a.ip().octets()[2]);
    let dir = a.dir().to_path_buf();
    assert!(std::path::Path::new(&lock).exists() && dir.exists());
    let listed = ip_netns_list();
    for n in &names {
        assert!(
            listed.contains(n),
            "{n} missing from `ip netns list`: {listed:?}"
        );
    }

    drop(net);

    let status = sleeper
        .wait_timeout(Duration::from_secs(2))
        .expect("sleep killed by Net drop");
    assert!(!status.success());
    assert!(
        !pid_alive(orphan),
        "forked-away sleep {orphan} survived the Net"
    );
    let listed = ip_netns_list();
    assert!(
        !listed.iter().any(|n| n.starts_with(&prefix)),
        "namespaces of {prefix} left: {listed:?}"
    );
    let links = root_links();
    assert!(
        !links.contains("v1-a") && !links.contains("v2-b"),
        "veth in the root namespace:\n{links}"
    );
    assert!(
        !std::path::Path::new(&lock).exists(),
        "lock file {lock} left"
    );
    assert!(!dir.exists(), "host dir {} left", dir.display());
}

#[test]
fn kill_restart_and_remove_host() {
    let net = Net::new("faults");
    let a = net.add_host("a");
    let b = net.add_host("b");
    std::fs::write(a.dir().join("state"), "kept").expect("write state");
    let mut first = a.spawn("sleep", &["300"], &[], "sleep.log");
    let mut second = a.spawn("sleep", &["300"], &[], "sleep.log");

    let signalled = a.kill_procs(Signal::SIGTERM);
    assert_eq!(signalled.len(), 2);
    assert!(first.wait_timeout(Duration::from_secs(2)).is_some());
    assert!(second.wait_timeout(Duration::from_secs(2)).is_some());

    // "Reboot with the disk kept": same namespace, address and dir.
    let mut again = a.spawn("sleep", &["300"], &[], "sleep.log");
    assert_eq!(
        std::fs::read_to_string(a.dir().join("state")).expect("state kept"),
        "kept"
    );
    a.kill_all();
    assert!(a.pids().is_empty());
    assert!(again.wait_timeout(Duration::from_secs(2)).is_some());

    let mut p = b.spawn("sleep", &["300"], &[], "sleep.log");
    p.kill(Signal::SIGKILL);
    assert!(p.wait_timeout(Duration::from_secs(2)).is_some());

    let mut victim = b.spawn("sleep", &["300"], &[], "sleep.log");
    net.remove_host(&b);
    assert!(b.is_removed());
    assert!(victim.wait_timeout(Duration::from_secs(2)).is_some());
    assert!(!ip_netns_list().iter().any(|n| n == b.netns_name()));
    assert!(
        b.dir().exists(),
        "a removed host's dir stays until the Net drops"
    );
    let c = net.add_host("c");
    assert!(c.reaches(a.ip(), PROBE) && a.reaches(c.ip(), PROBE));
}

const CRASH_HELPER_ENV: &str = "MUSTER_NETNS_CRASH_HELPER";

/// Not a test: run by `sweep_removes_leftovers_of_a_crashed_run` in a child
/// process, which builds a Net, reports it and waits to be SIGKILLed, so no
/// Drop runs: exactly what a crashed test run leaves behind.
#[test]
#[ignore = "helper process for sweep_removes_leftovers_of_a_crashed_run"]
fn crash_helper() {
    if std::env::var_os(CRASH_HELPER_ENV).is_none() {
        return;
    }
    let net = Net::new("crash");
    let h = net.add_host("a");
    let sleeper = h.spawn("sleep", &["300"], &[], "sleep.log");
    println!(
        "net={} pid={} dir={}",
        net.name(),
        sleeper.pid(),
        h.dir().display()
    );
    std::io::stdout().flush().expect("flush");
    let mut wait = String::new();
    let _ = std::io::stdin().read_line(&mut wait); // until killed
    std::process::abort(); // never clean up, even if stdin closes
}

#[test]
fn sweep_removes_leftovers_of_a_crashed_run() {
    let exe = std::env::current_exe().expect("test binary path");
    // libtest names tests by their path below the crate root: `netns_smoke::crash_helper`.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let mut helper = Command::new(exe)
        .args([
            "--exact",
            &format!("{module}::crash_helper"),
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_HELPER_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run crash helper");
    let stdout = helper.stdout.take().expect("helper stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("net="))
        .expect("crash helper printed no Net (see its stderr above)");
    let field = |key: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(key))
            .expect("helper output field")
            .to_string()
    };
    let (name, dir) = (field("net="), PathBuf::from(field("dir=")));
    let pid: i32 = field("pid=").parse().expect("pid");
    // While the helper lives its slot is locked: no concurrent sweep touches it.
    let ours = |n: &String| n.starts_with(&format!("{name}-"));
    assert_eq!(ip_netns_list().iter().filter(|n| ours(n)).count(), 2);
    assert!(pid_alive(pid) && dir.exists());

    helper.kill().expect("SIGKILL the helper");
    helper.wait().expect("reap the helper");
    assert!(pid_alive(pid), "the crashed run's sleep outlives it");

    netns::sweep_stale();

    assert!(
        !pid_alive(pid),
        "sleep {pid} of the crashed run survived the sweep"
    );
    let listed = ip_netns_list();
    assert!(
        !listed.iter().any(ours),
        "{name} survived the sweep: {listed:?}"
    );
    assert!(!dir.exists(), "{} survived the sweep", dir.display());
}

#[test]
fn etcd_in_one_host_answers_another() {
    let etcd = etcd_bin();
    let etcdctl = etcd.with_file_name("etcdctl");
    assert!(
        etcd.is_file() && etcdctl.is_file(),
        "etcd/etcdctl not found at {}: run bash ci/install-deps.sh (or set MUSTER_ETCD_BIN)",
        etcd.display()
    );
    let net = Net::new("etcd");
    let server = net.add_host("etcd");
    let client = net.add_host("client");
    let ip = server.ip();
    let data = server.dir().join("etcd");
    let (client_url, peer_url) = (format!("http://{ip}:2379"), format!("http://{ip}:2380"));
    let cluster = format!("etcd={peer_url}");
    let mut proc = server.spawn(
        &etcd,
        &[
            "--name=etcd",
            &format!("--data-dir={}", data.display()),
            &format!("--listen-client-urls={client_url}"),
            &format!("--advertise-client-urls={client_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster={cluster}"),
        ],
        &[],
        "etcd.log",
    );
    let endpoints = format!("--endpoints={client_url}");
    let mut last = String::new();
    let took = wait_until(
        "etcd endpoint health from another host",
        Duration::from_secs(15),
        POLL,
        || {
            let out = client.run(
                &etcdctl,
                &[
                    &endpoints,
                    "--dial-timeout=1s",
                    "--command-timeout=1s",
                    "endpoint",
                    "health",
                ],
            );
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            out.status.success()
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nlast etcdctl output: {last}\netcd log:\n{}",
            proc.log()
        )
    });
    eprintln!("netns: etcd healthy from another host after {took:.0?}");
    assert!(last.contains("is healthy"), "{last}");
    assert!(proc.is_running());
}

/// The fault campaign's slow disk (`support/slow_disk.rs`): synchronous
/// writes of a process in the group stall, and run at full speed again once
/// it is dropped. Fails on a machine without cgroup v1 blkio or with `/tmp`
/// not on a block device (the campaign then reports the fault as not
/// inflicted).
#[test]
fn a_slow_disk_stalls_synchronous_writes_until_it_is_lifted() {
    use crate::support::slow_disk::SlowDisk;
    let dir = std::env::temp_dir().join(format!("mt-slowdisk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let timed = |slow: bool| -> Duration {
        // The shell waits for a line, so the limit is in place before it writes.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "read go; dd if=/dev/zero of=f bs=4k count=20 oflag=dsync 2>/dev/null",
            ])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let limit = slow.then(|| {
            SlowDisk::apply(&dir, &[child.id() as i32], 20).expect("a slow disk on this machine")
        });
        let started = Instant::now();
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(b"go\n").expect("start the writes");
        }
        assert!(child.wait().expect("wait").success(), "dd failed");
        let took = started.elapsed();
        drop(limit);
        took
    };
    let before = timed(false);
    let slow = timed(true);
    let after = timed(false);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "20 synchronous 4 KiB writes: {before:?} before, {slow:?} at 20 IOPS, {after:?} after"
    );
    assert!(
        slow >= Duration::from_millis(500) && slow > before * 10,
        "the limit did not slow the writes: {before:?} -> {slow:?}"
    );
    assert!(after * 5 < slow, "the limit was not lifted: {after:?}");
}
