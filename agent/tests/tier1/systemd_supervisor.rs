//! Tier 1: the systemd supervisor against a real systemd (booted with
//! systemd-nspawn, `support/nspawn.rs`). The units' processes run inside the
//! container, so the programs are ones the minimal Debian root has.
//! Needs root and the test root from `bash ci/install-deps.sh`; without it
//! the tests fail with that instruction, they never skip.

use crate::support::nspawn;

use std::time::{Duration, Instant};

use muster::service::systemd::{SystemdError, SystemdSupervisor, UnitStatus};
use muster::service::{CpuShare, ServiceError, ServiceSpec};
use nspawn::Container;

fn spec(name: &str, program: &str, args: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cpu: CpuShare::Normal,
    }
}

async fn supervisor(c: &Container) -> SystemdSupervisor {
    SystemdSupervisor::connect(Some(&c.bus_address))
        .await
        .expect("connect to the container's systemd")
}

/// Polls the unit until `done` holds, at most `limit`.
async fn wait_status(
    sup: &SystemdSupervisor,
    name: &str,
    limit: Duration,
    done: impl Fn(&UnitStatus) -> bool,
) -> UnitStatus {
    let start = Instant::now();
    loop {
        let status = sup.status(name).await.expect("status");
        match status {
            Some(s) if done(&s) => return s,
            other if start.elapsed() > limit => panic!("{name}: still {other:?} after {limit:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_a_transient_unit_once_finds_it_again_and_stops_it() {
    let c = Container::boot().await;
    eprintln!("container boot: {:?}", c.boot_time);
    let sup = supervisor(&c).await;
    let sleeper = spec("sleeper", "/bin/sleep", &["300"]);

    let t = Instant::now();
    assert!(
        sup.ensure_running(&sleeper).await.expect("start"),
        "first start starts it"
    );
    eprintln!(
        "ensure_running (StartTransientUnit + job wait): {:?}",
        t.elapsed()
    );
    assert!(sup.is_running("sleeper").await.expect("is_running"));
    // Checked with plain D-Bus calls, not through the supervisor.
    assert_eq!(
        c.unit_active_state("sleeper.service")
            .await
            .expect("D-Bus")
            .as_deref(),
        Some("active")
    );
    let status = sup
        .status("sleeper")
        .await
        .expect("status")
        .expect("loaded");
    assert!(status.transient, "{status}");
    assert_eq!(status.sub_state, "running", "{status}");
    // The footprint report's D-Bus reads work. This host runs cgroup v1,
    // where the container gets no memory controller, so systemd may report
    // memory as "not accounted" (None) here; the tier-2 VMs (cgroup v2)
    // check that real figures come back.
    let footprint = sup
        .footprint("sleeper")
        .await
        .expect("MemoryCurrent, CPUUsageNSec")
        .expect("the unit exists");
    eprintln!("sleeper footprint: {footprint:?}");
    assert_eq!(
        sup.footprint("no-such-unit").await.expect("footprint"),
        None
    );

    let t = Instant::now();
    assert!(
        !sup.ensure_running(&sleeper).await.expect("second start"),
        "running: a no-op"
    );
    eprintln!("ensure_running when already running: {:?}", t.elapsed());

    // A restarted agent (a new connection) finds the unit by name.
    drop(sup);
    let again = supervisor(&c).await;
    assert!(again.is_running("sleeper").await.expect("is_running"));
    assert!(
        !again
            .ensure_running(&sleeper)
            .await
            .expect("start after reconnect"),
        "still a no-op"
    );

    again.stop("sleeper").await.expect("stop");
    assert!(!again.is_running("sleeper").await.expect("is_running"));
    // Stopped transient units are unloaded by systemd; either way not active.
    let state = c.unit_active_state("sleeper.service").await.expect("D-Bus");
    assert!(
        matches!(state.as_deref(), None | Some("inactive")),
        "{state:?}"
    );
    again
        .stop("sleeper")
        .await
        .expect("stopping a stopped service is fine");

    // It can be started again after a stop (the unloaded name is reusable).
    assert!(again.ensure_running(&sleeper).await.expect("restart"));
    again.stop("sleeper").await.expect("stop");
}

/// Decided behaviour: the start itself succeeds (the program was executed),
/// systemd restarts the crashing program, hits its start limit and leaves the
/// unit `failed`; `is_running` is then false, and `ensure_running` resets the
/// failed unit and starts the service again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_program_is_restarted_then_failed_then_reset_by_the_next_start() {
    let c = Container::boot().await;
    let sup = supervisor(&c)
        .await
        .with_restart_delay(Duration::from_millis(100));

    assert!(
        sup.ensure_running(&spec("crasher", "/bin/false", &[]))
            .await
            .expect("start job succeeds")
    );
    let failed = wait_status(&sup, "crasher", Duration::from_secs(20), |s| {
        s.active_state == "failed"
    })
    .await;
    assert_eq!(failed.exec_main_status, 1, "{failed}");
    assert!(
        failed.n_restarts >= 1,
        "systemd restarted it before giving up: {failed}"
    );
    assert!(!sup.is_running("crasher").await.expect("is_running"));
    assert_eq!(
        c.unit_active_state("crasher.service")
            .await
            .expect("D-Bus")
            .as_deref(),
        Some("failed")
    );

    // Whether systemd sees the exec succeed before the exit is a race; the
    // outcome must not depend on it.
    for n in 0..10 {
        let quick = spec(&format!("quick-crash-{n}"), "/bin/false", &[]);
        assert!(
            sup.ensure_running(&quick)
                .await
                .expect("an instant exit still counts as started")
        );
    }

    // The same name with a program that works: reset, start, running.
    assert!(
        sup.ensure_running(&spec("crasher", "/bin/sleep", &["300"]))
            .await
            .expect("start after failure")
    );
    let status = sup
        .status("crasher")
        .await
        .expect("status")
        .expect("loaded");
    assert_eq!(
        (status.active_state.as_str(), status.n_restarts),
        ("active", 0),
        "{status}"
    );
    sup.stop("crasher").await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_a_clear_error_and_leaves_nothing_running() {
    let c = Container::boot().await;
    let sup = supervisor(&c).await;
    let err = sup
        .ensure_running(&spec("ghost", "/nonexistent/etcd", &[]))
        .await
        .expect_err("cannot exec");
    let text = err.to_string();
    assert!(
        matches!(&err, ServiceError::Systemd(SystemdError::JobFailed { result, .. }) if result == "failed"),
        "{text}"
    );
    // Which unit, and systemd's exit status 203 (EXEC) say what went wrong.
    assert!(
        text.contains("ghost.service") && text.contains("exit status 203"),
        "{text}"
    );
    assert!(
        !sup.is_running("ghost").await.expect("is_running"),
        "not left in a restart loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_file_of_the_same_name_is_never_replaced() {
    let c = Container::boot().await;
    let sup = supervisor(&c).await;
    // apt-daily.service ships as a unit file in the root and is not running.
    let err = sup
        .ensure_running(&spec("apt-daily", "/bin/sleep", &["300"]))
        .await
        .expect_err("a unit file");
    assert!(
        matches!(
            &err,
            ServiceError::Systemd(SystemdError::NotTransient { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("apt-daily.service"), "{err}");
    // A running unit file service counts as running, whoever started it.
    assert!(
        !sup.ensure_running(&spec("dbus", "/bin/sleep", &["300"]))
            .await
            .expect("dbus runs")
    );
}

#[tokio::test]
async fn an_unreachable_bus_is_a_connect_error_naming_the_address() {
    let err = SystemdSupervisor::connect(Some("unix:path=/nonexistent/system_bus_socket"))
        .await
        .expect_err("no bus");
    assert!(
        matches!(&err, ServiceError::Systemd(SystemdError::Connect { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("/nonexistent/system_bus_socket"),
        "{err}"
    );
}

/// The harness itself: containers side by side do not share a cgroup. When
/// they did, a container shutting down trimmed the other's fresh unit
/// cgroups, and its starts failed with exit status 219 (CGROUP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_going_away_leaves_its_neighbour_intact() {
    let a = Container::boot().await;
    let b = Container::boot().await;
    let sup = supervisor(&a).await;
    assert!(
        sup.ensure_running(&spec("before", "/bin/sleep", &["300"]))
            .await
            .expect("start")
    );
    let shutdown = tokio::task::spawn_blocking(move || drop(b));
    for n in 0..40 {
        let name = format!("during-{n}");
        assert!(
            sup.ensure_running(&spec(&name, "/bin/sleep", &["300"]))
                .await
                .expect("start while the neighbour stops")
        );
    }
    shutdown.await.expect("neighbour shut down");
    assert!(sup.is_running("before").await.expect("is_running"));
    assert!(
        sup.ensure_running(&spec("after", "/bin/sleep", &["300"]))
            .await
            .expect("start after the neighbour left")
    );
}
