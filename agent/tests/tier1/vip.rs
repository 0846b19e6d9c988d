//! Tier 1: the VIP election (invariant S4) with real etcd 3.5, real netlink
//! and real ARP, 3 candidate hosts and an observer on one bridge.
//!
//! The managers run in-process (`support/vip_lab.rs`), one per host namespace;
//! a "crash" drops the manager's future mid-flight, which leaves the address
//! on the interface exactly as SIGKILL of the agent would. Failover times
//! are printed, not asserted (`cargo bench --bench vip_failover` measures
//! them); what is asserted is who holds the VIP, in which order, and that
//! the ARP observer never sees two MACs answer.

use crate::support::netns;
use crate::support::vip_lab;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use muster::vip::election::KERNEL_EXPIRY_LATE;
use muster::vip::{ArpMover, Mover, Takeover, VipRole};
use netns::{Net, wait_until};
use vip_lab::Lab;

/// One lab at a time: three etcd members and a dozen threads each, on a
/// 2-core machine; parallel labs would only measure each other.
static SERIAL: Mutex<()> = Mutex::new(());

const ELECT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn crash_of_the_holder_moves_the_vip_to_another_host() {
    let _serial = serial();
    let mut lab = Lab::new("vipcrash", 3);
    let since = Instant::now();
    for i in 0..3 {
        lab.start(i);
    }
    let old = lab.wait_for_holder(ELECT);
    let old_name = lab.hosts[old].name().to_string();

    lab.kill(old);
    lab.hosts[old].link_down();
    let killed = Instant::now();
    let answered = wait_until("the VIP answers from another host", ELECT, POLL, || {
        lab.first_answer_from(killed, |n| n != old_name).is_some()
    })
    .expect("failover after a crash");
    let new = lab.wait_for_holder(ELECT);
    assert_ne!(new, old);
    let live: Vec<usize> = lab
        .holders_now()
        .into_iter()
        .filter(|&i| i != old)
        .collect();
    assert_eq!(live, vec![new], "exactly one live host has the VIP");
    eprintln!(
        "crash of {old_name} -> VIP answers from {} after {answered:.2?}",
        lab.hosts[new].name()
    );
    lab.assert_one_mac_at_a_time(since);
}

#[test]
fn a_partitioned_holder_drops_the_vip_itself_and_does_not_take_it_back() {
    let _serial = serial();
    let mut lab = Lab::new("vipsplit", 3);
    let since = Instant::now();
    for i in 0..3 {
        lab.start(i);
    }
    let old = lab.wait_for_holder(ELECT);
    let ttl = lab.timing.lease_ttl;

    lab.hosts[old].link_down();
    let cut = Instant::now();
    // S4: gone from its own interface before its lease could expire.
    wait_until(
        "the partitioned holder drops the VIP",
        ttl,
        Duration::from_millis(5),
        || lab.first_change(old, cut, false).is_some(),
    )
    .expect("the cut-off holder steps down by itself within the lease TTL");
    let mut new = None;
    wait_until("another host takes the VIP", ELECT, POLL, || {
        new = (0..3).find(|&j| j != old && lab.first_change(j, cut, true).is_some());
        new.is_some()
    })
    .expect("takeover by the majority side");
    let new = new.expect("new holder");
    let dropped = lab.first_change(old, cut, false).expect("drop time");
    let taken = lab.first_change(new, cut, true).expect("take time");
    assert!(
        dropped < taken,
        "S4: {} took the VIP before the old holder dropped it",
        lab.hosts[new].name()
    );
    eprintln!(
        "partition: holder dropped after {:.2?}, {} took over after {:.2?} (gap {:.2?})",
        dropped - cut,
        lab.hosts[new].name(),
        taken - cut,
        taken - dropped
    );

    // The cable stays out 10 s, as in the issue; then back in.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed()));
    lab.hosts[old].link_up();
    let back = Instant::now();
    wait_until(
        "the returning node rejoins as a candidate",
        ELECT,
        POLL,
        || {
            lab.candidates[old]
                .as_ref()
                .is_some_and(|c| *c.role.borrow() == VipRole::Candidate)
        },
    )
    .expect("returning node sees etcd again");
    // Observe a few renewal periods with everyone connected.
    std::thread::sleep(lab.timing.takeover_after * 3);
    assert_eq!(
        lab.first_change(old, back, true),
        None,
        "the returning node took the VIP back"
    );
    // One holder, on the majority side. It need not still be `new`: an etcd
    // leadership move right after a takeover can drop a renewal, and the
    // VIP may then pass to the third node (seen under load; S4 still holds).
    let holders = lab.holders_now();
    assert_eq!(holders.len(), 1, "exactly one holder: {holders:?}");
    assert_ne!(holders[0], old, "the returning node holds the VIP");
    assert_ne!(lab.wait_for_holder(ELECT), old);
    lab.assert_one_mac_at_a_time(since);
}

#[test]
fn a_clean_stop_hands_over_without_waiting_for_the_lease_to_expire() {
    let _serial = serial();
    let mut lab = Lab::new("vipstop", 3);
    let since = Instant::now();
    for i in 0..3 {
        lab.start(i);
    }
    let old = lab.wait_for_holder(ELECT);
    let old_name = lab.hosts[old].name().to_string();

    let stop = Instant::now();
    lab.stop(old);
    assert!(
        !lab.has_vip(old),
        "a stopped holder leaves no address behind"
    );
    let answered = wait_until("the VIP answers from another host", ELECT, POLL, || {
        lab.first_answer_from(stop, |n| n != old_name).is_some()
    })
    .expect("failover after a clean stop");
    let new = lab.wait_for_holder(ELECT);
    let dropped = lab.first_change(old, stop, false).expect("drop time");
    let taken = lab.first_change(new, stop, true).expect("take time");
    assert!(
        dropped < taken,
        "S4: address removed before the next holder added it"
    );
    eprintln!(
        "clean stop of {old_name} -> VIP answers from {} after {answered:.2?}",
        lab.hosts[new].name()
    );
    // Revoked, not expired: the new holder was in before the old lease
    // could have run out.
    assert!(
        taken - stop < lab.timing.lease_ttl,
        "handover took {:.2?}, as long as a lease expiry ({:?})",
        taken - stop,
        lab.timing.lease_ttl
    );
    // The new holder keeps it while the others watch.
    std::thread::sleep(lab.timing.takeover_after * 2);
    assert_eq!(lab.wait_for_holder(ELECT), new);
    lab.assert_one_mac_at_a_time(since);
}

/// A health check that answers slower than the hold time allows between
/// proofs (an apiserver's `/readyz` under load) must not cost the claim:
/// the renewals that prove it run beside the check, not after it. With
/// the check inside each round, a 600 ms check against the default 700 ms
/// hold dropped the VIP at the first renewal.
#[test]
fn a_holder_whose_health_check_is_slow_but_healthy_keeps_the_vip() {
    let _serial = serial();
    let mut lab = Lab::new("vipslowhealth", 3);
    lab.health_delay = lab.timing.hold_for.mul_f64(6.0 / 7.0);
    for i in 0..3 {
        lab.start(i);
    }
    let holder = lab.wait_for_holder(ELECT);
    let held = Instant::now();
    // Many renewal rounds and health checks long: ten hold times.
    std::thread::sleep(lab.timing.hold_for * 10);
    assert_eq!(
        lab.first_change(holder, held, false),
        None,
        "the holder dropped the VIP although every health check said healthy"
    );
    assert_eq!(lab.holders_now(), vec![holder]);
    lab.assert_one_mac_at_a_time(held);
}

/// Three managers, a holder; `tell` gives the holder its reason to go
/// (`why`, for the output). Checks that another host takes the VIP, that
/// the address was dropped before the next holder added it (S4), and that
/// the old holder stays out; prints how long each took.
fn a_holder_told_to_go_hands_the_vip_on(hint: &str, why: &str, tell: impl Fn(&Lab, usize)) {
    let _serial = serial();
    let mut lab = Lab::new(hint, 3);
    let since = Instant::now();
    for i in 0..3 {
        lab.start(i);
    }
    let old = lab.wait_for_holder(ELECT);
    let told = Instant::now();
    tell(&lab, old);
    wait_until("another host holds the VIP", ELECT, POLL, || {
        lab.holders_now().iter().any(|&i| i != old)
    })
    .unwrap_or_else(|e| panic!("{e}: the VIP did not move off a holder that is {why}"));
    let new = lab.wait_for_holder(ELECT);
    assert_ne!(new, old);
    let dropped = lab.first_change(old, told, false).expect("drop time");
    let taken = lab.first_change(new, told, true).expect("take time");
    assert!(
        dropped < taken,
        "S4: address removed before the next holder added it"
    );
    let answered = lab
        .first_answer_from(told, |n| n != lab.hosts[old].name())
        .map(|at| at - told);
    eprintln!(
        "holder {} {why} -> dropped after {:.2?}, {} took over after {:.2?}, answered after {answered:.2?} \
         (a lease expiry would take {:?})",
        lab.hosts[old].name(),
        dropped - told,
        lab.hosts[new].name(),
        taken - told,
        lab.timing.lease_ttl
    );
    std::thread::sleep(lab.timing.takeover_after * 2);
    assert_eq!(
        lab.holders_now(),
        vec![new],
        "the host that is {why} stays out"
    );
    lab.assert_one_mac_at_a_time(since);
}

/// The other side of the health check: a holder whose check keeps
/// failing (its apiserver went bad, its etcd member is fine) hands the VIP
/// on, drops the address before the next holder adds it, and does not
/// campaign again while it stays unhealthy.
#[test]
fn a_holder_that_stays_unhealthy_hands_the_vip_on() {
    a_holder_told_to_go_hands_the_vip_on("vipsick", "unhealthy", |lab, old| {
        lab.set_sick(old, true)
    });
}

/// A machine the group terminates on purpose hands the VIP on at once
/// (issue 15): its health check still passes here, so only the leaving
/// signal can move the VIP (in the agent, the apiserver would fail its
/// checks only after the etcd member left, 16-20 s of no API under TCG).
/// The address goes first, a candidate takes it on its next poll (the
/// lease was revoked, not left to expire), and the leaving machine does
/// not campaign again.
#[test]
fn a_leaving_holder_hands_the_vip_on_at_once_and_stays_out() {
    a_holder_told_to_go_hands_the_vip_on("vipleave", "leaving", |lab, old| {
        lab.set_leaving(old, true)
    });
}

#[test]
fn a_restarted_agent_removes_a_leftover_vip_before_anything_else() {
    let _serial = serial();
    let mut lab = Lab::new("viprestart", 3);
    lab.start(1);
    assert_eq!(lab.wait_for_holder(ELECT), 1);
    // Host 0 "crashed earlier while holding": the address is still there.
    // Off the wire while we set that up, so the observer sees no conflict.
    lab.hosts[0].link_down();
    lab.hosts[0].ip_cmd(&["addr", "add", &format!("{}/32", lab.vip), "dev", "eth0"]);
    let restart = Instant::now();
    lab.start(0);
    wait_until(
        "the leftover VIP is removed",
        ELECT,
        Duration::from_millis(5),
        || !lab.has_vip(0),
    )
    .expect("restart removes the leftover address");
    lab.hosts[0].link_up();
    let since = Instant::now();
    std::thread::sleep(lab.timing.takeover_after * 2);
    assert_eq!(lab.holders_now(), vec![1], "host 1 keeps the VIP");
    assert_eq!(
        lab.first_change(0, restart, true)
            .and_then(|t| (t > since).then_some(t)),
        None
    );
    lab.assert_one_mac_at_a_time(since);
}

#[test]
fn the_arp_mover_adds_and_removes_the_address_idempotently() {
    let _serial = serial();
    let net = Net::new("vipmover");
    let host = net.add_host("a");
    let vip = net.spare_ip(1);
    let ip = host.ip();
    host.in_netns(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut mover = ArpMover::new(vip, None, ip)
                .await
                .expect("finds eth0 by the node's address");
            assert_eq!(mover.iface().name, "eth0");
            assert!(!mover.holds().await.expect("list"));
            let takeover = Takeover {
                revision: 1,
                address_lifetime: Duration::from_secs(1),
            };
            mover.acquire(takeover).await.expect("add");
            mover.acquire(takeover).await.expect("add again is fine");
            assert!(mover.holds().await.expect("list"));
            mover.announce().await.expect("announce");
            mover.release().await.expect("remove");
            mover.release().await.expect("remove again is fine");
            assert!(!mover.holds().await.expect("list"));

            // S4's backstop: the kernel removes the address when its
            // lifetime runs out, unless each proof renews it.
            mover.acquire(takeover).await.expect("add");
            let renewed = tokio::time::Instant::now();
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                mover.refresh().await.expect("renew");
            }
            assert!(
                mover.holds().await.expect("list"),
                "renewed for {:?}",
                renewed.elapsed()
            );
            let mut lateness = Vec::new();
            for _ in 0..5 {
                mover.refresh().await.expect("renew");
                let last = tokio::time::Instant::now();
                while mover.holds().await.expect("list") {
                    assert!(
                        last.elapsed() < Duration::from_secs(3),
                        "the kernel never removed it"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let gone = last.elapsed();
                assert!(
                    gone >= Duration::from_millis(950),
                    "removed early: {gone:?}"
                );
                lateness.push(gone.saturating_sub(Duration::from_secs(1)));
                mover.acquire(takeover).await.expect("add again");
            }
            lateness.sort();
            eprintln!("kernel removed the 1 s address this late (5 runs, sorted): {lateness:?}");
            // The kernel's own rounding is the stated bound; on a busy host
            // its lifetime worker can also wait for a CPU (471 ms once,
            // beside an image build). So the median must keep the bound,
            // and no run may miss by a whole second (the rounding itself
            // broken).
            assert!(
                lateness[lateness.len() / 2] <= KERNEL_EXPIRY_LATE + Duration::from_millis(100),
                "the median is later than the stated bound: {lateness:?}"
            );
            assert!(
                lateness.iter().all(|l| *l < Duration::from_secs(1)),
                "a run was a second late or more: {lateness:?}"
            );
            mover.release().await.expect("remove");
            let missing = ArpMover::new(vip, Some("nope0"), ip).await;
            assert!(
                matches!(missing, Err(e) if e.to_string().contains("no interface named nope0"))
            );
        })
    });
    assert!(!host.ip_cmd(&["-o", "addr"]).contains(&vip.to_string()));
}
