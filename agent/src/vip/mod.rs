//! The floating API endpoint (DESIGN phase 7, invariant S4): candidates
//! elect one VIP holder on etcd; the holder answers for the VIP through a
//! [`Mover`] and drops it by itself as soon as it cannot prove its claim.
//!
//! * `election` — pure: timing rules, the candidate's decision.
//! * `lease`    — etcd I/O: the key, txns, lease.
//! * `health`   — may this node campaign?
//! * `mover` — making the VIP answer here: `netlink` + `arp` (L2 mode),
//!   `bgp` (routers), `aws` (secondary private IP).
//!
//! The argument for "never two holders" is in `docs/design/vip.md`.

pub mod address;
pub mod arp;
pub mod aws;
pub mod bgp;
pub mod election;
pub mod gce;
pub mod health;
pub mod lease;
pub mod mover;
pub mod realtime;
/// The VIP as an address on an interface: the shared netlink wrapper.
pub use crate::netlink;
pub mod renewals;
pub mod setup;

use std::net::Ipv4Addr;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{Instrument, debug, error, info, info_span, warn};

use election::{ANNOUNCE_AT, HealthStreak, Next, Proof, Timing, TimingError, Verdict};
pub use health::{EtcdMemberHealth, HealthCheck};
use lease::Store;
pub use lease::{EtcdAccess, LeaseError};
pub use mover::{AnyMover, ArpMover, Mover, MoverError, Takeover};
pub use renewals::{RenewalLog, RenewalSummary};

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error(transparent)]
    Mover(#[from] MoverError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("vip {vip}: could not remove the address on shutdown: {source}")]
    Release { vip: Ipv4Addr, source: MoverError },
    #[error("mode aws needs the instance's region, and the metadata has none")]
    NoRegion,
    #[error("vip: cannot run the manager's thread: {0}")]
    Thread(std::io::Error),
}

/// What one node needs to take part in the election of one VIP.
#[derive(Debug, Clone)]
pub struct VipConfig {
    pub vip: Ipv4Addr,
    /// Unique per node (instance id); written into the election key.
    pub holder_id: String,
    /// The cluster's etcd: the local member's client URL first, then the
    /// others. Used one at a time; a failed call moves to the next (see
    /// `lease::Store`). The local member must be first for
    /// `shed_etcd_leadership`.
    pub etcd: EtcdAccess,
    pub timing: Timing,
    /// While holding, move etcd leadership off this node's member (see
    /// `lease::Store::shed_leadership`). On for stacked control planes.
    pub shed_etcd_leadership: bool,
}

/// This node's part, as seen from outside (status, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipRole {
    /// Not healthy or etcd unreachable: not campaigning.
    StandBy,
    /// Watching the holder, ready to take over.
    Candidate,
    /// The VIP answers here.
    Holder,
}

impl VipRole {
    /// As `muster status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            VipRole::StandBy => "standby",
            VipRole::Candidate => "candidate",
            VipRole::Holder => "holder",
        }
    }
}

/// Runs the election for one VIP on this node. See [`VipManager::run`].
pub struct VipManager<M, H> {
    cfg: VipConfig,
    mover: M,
    health: H,
    role: watch::Sender<VipRole>,
    renewals: RenewalLog,
    /// True while this machine is leaving on purpose ([`Self::withdraw_when`]).
    leaving: Option<watch::Receiver<bool>>,
}

enum End {
    Shutdown,
    Lost,
    /// The mover could not take the address.
    MoverFailed,
}

/// The claim of a holder: its lease, its etcd revision, what it has proven.
struct Claim {
    lease: i64,
    revision: i64,
    proof: Proof,
}

/// Outcome of one renewal round, with the send time both calls share.
struct Round {
    sent: Instant,
    touch: Result<bool, LeaseError>,
    keep_alive: Result<bool, LeaseError>,
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

/// A candidate's test: healthy, and not leaving on purpose (then the
/// health check is not asked).
async fn may_serve(leaving: &Option<watch::Receiver<bool>>, health: &mut impl HealthCheck) -> bool {
    !leaving.as_ref().is_some_and(|rx| *rx.borrow()) && health.healthy().await
}

/// Resolves once this machine is leaving; never without a signal (or once
/// its sender is gone: the agent is stopping, which `shutdown` covers).
async fn leaving_now(leaving: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = leaving
        && rx.wait_for(|l| *l).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

impl<M: Mover, H: HealthCheck> VipManager<M, H> {
    /// Refuses timings that cannot keep S4.
    pub fn new(cfg: VipConfig, mover: M, health: H) -> Result<Self, VipError> {
        cfg.timing.check()?;
        let (role, _) = watch::channel(VipRole::StandBy);
        Ok(VipManager {
            cfg,
            mover,
            health,
            role,
            renewals: RenewalLog::default(),
            leaving: None,
        })
    }

    /// While `leaving` says true (the group is terminating this machine on
    /// purpose), a holder hands the VIP on at once (address first, then
    /// the lease revoked, so a candidate's next poll takes it) and the node
    /// campaigns no more. Without it, the holder would hand on only when
    /// its apiserver failed its checks after the etcd member left: seconds
    /// of no API, 16-20 s under TCG.
    pub fn withdraw_when(mut self, leaving: watch::Receiver<bool>) -> Self {
        self.leaving = Some(leaving);
        self
    }

    /// Follows this node's role as it changes.
    pub fn role(&self) -> watch::Receiver<VipRole> {
        self.role.subscribe()
    }

    /// How long this node's renewal rounds take while it holds the VIP.
    pub fn renewals(&self) -> RenewalLog {
        self.renewals.clone()
    }

    /// Takes part in the election until `shutdown` resolves. On shutdown a
    /// holder removes the address first, then revokes its lease, so another
    /// node takes over at once. etcd faults are weather: logged and retried.
    /// Dropping the future instead (a crash) leaves the address to the next
    /// start, which removes it before anything else.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<(), VipError> {
        let span = info_span!("vip", vip = %self.cfg.vip, id = %self.cfg.holder_id);
        async move {
            let mut shutdown = std::pin::pin!(shutdown);
            let shutdown: Shutdown = shutdown.as_mut();
            self.run_inner(shutdown).await
        }
        .instrument(span)
        .await
    }

    async fn run_inner(&mut self, mut shutdown: Shutdown<'_>) -> Result<(), VipError> {
        // An earlier run may have crashed holding the address: S4 first.
        self.release_until_done().await;
        let key = lease::key_for(self.cfg.vip);
        let call_timeout = self.cfg.timing.hold_for / 2;
        let mut store = None;
        loop {
            let st = match &store {
                Some(st) => Store::clone(st),
                None => {
                    let me = self.cfg.holder_id.clone();
                    let connect = Store::connect(&self.cfg.etcd, key.clone(), me, call_timeout);
                    tokio::select! {
                        _ = shutdown.as_mut() => return Ok(()),
                        r = connect => match r {
                            Ok(st) => store.insert(st).clone(),
                            Err(e) => {
                                warn!("{e}");
                                self.role.send_replace(VipRole::StandBy);
                                if pause(&mut shutdown, Duration::from_millis(500)).await { return Ok(()); }
                                continue;
                            }
                        },
                    }
                }
            };
            let Some(claim) = self.campaign(&st, &mut shutdown).await else {
                return Ok(());
            };
            match self.hold(&st, claim, &mut shutdown).await? {
                End::Shutdown => return Ok(()),
                End::Lost | End::MoverFailed => self.role.send_replace(VipRole::Candidate),
            };
        }
    }

    /// Candidate: returns a won claim, or `None` on shutdown.
    async fn campaign(&mut self, st: &Store, shutdown: &mut Shutdown<'_>) -> Option<Claim> {
        let t = self.cfg.timing;
        let mut seen = None;
        let mut failing = false;
        let mut health: Option<(bool, Instant)> = None;
        loop {
            let key = tokio::select! {
                _ = shutdown.as_mut() => return None,
                r = st.read() => r,
            };
            // S4: the moment the answer *arrived* (never when the read was
            // sent): only then is every revision it shows already committed.
            let now = Instant::now();
            let key = match key {
                Ok(k) => k,
                Err(e) => {
                    log_fault(&mut failing, &e);
                    self.role.send_replace(VipRole::StandBy);
                    if pause(shutdown, t.poll_every * 4).await {
                        return None;
                    }
                    continue;
                }
            };
            failing = false;
            let seen_now = election::observe(seen, &key, now);
            seen = Some(seen_now);
            let me = self.cfg.holder_id.as_str();
            // Health costs a call: ask only when it could change the step.
            let mut step = election::next(me, true, &key, seen_now, now, &t);
            if matches!(step, Next::Campaign(_)) {
                let healthy = may_serve(&self.leaving, &mut self.health).await;
                health = Some((healthy, Instant::now()));
                if !healthy {
                    step = election::next(me, false, &key, seen_now, now, &t);
                }
            }
            match step {
                Next::Campaign(expect) => {
                    self.role.send_replace(VipRole::Candidate);
                    if let Some(claim) = self.try_claim(st, expect).await {
                        return Some(claim);
                    }
                    // Lost the race or etcd refused: never retry at once.
                    // The manager runs at real-time priority, where a loop
                    // that does not sleep would starve the node (etcd
                    // included) instead of just wasting a core.
                    if pause(shutdown, t.poll_every).await {
                        return None;
                    }
                }
                Next::RevokeStale { lease } => {
                    info!(lease, "vip: revoking this node's claim from an earlier run");
                    if let Err(e) = st.revoke(lease).await {
                        log_fault(&mut failing, &e);
                        if pause(shutdown, t.poll_every * 4).await {
                            return None;
                        }
                    }
                }
                Next::Wait { until } => {
                    // Only for what status shows (a worker, whose etcd never
                    // runs, is no candidate): asked at most every 5 s.
                    let healthy = match health {
                        Some((h, at)) if at.elapsed() < HEALTH_SHOWN_FOR => h,
                        _ => {
                            let h = may_serve(&self.leaving, &mut self.health).await;
                            health = Some((h, Instant::now()));
                            h
                        }
                    };
                    self.role.send_replace(if healthy {
                        VipRole::Candidate
                    } else {
                        VipRole::StandBy
                    });
                    tokio::select! {
                        _ = shutdown.as_mut() => return None,
                        _ = sleep_until(until) => {}
                    }
                }
                Next::StandBy => {
                    self.role.send_replace(VipRole::StandBy);
                    if pause(shutdown, t.poll_every * 4).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Grant a lease, then the txn. `None`: someone else got there first.
    async fn try_claim(&mut self, st: &Store, expect: election::Expect) -> Option<Claim> {
        let t = self.cfg.timing;
        let lease_sent = Instant::now();
        let (lease, ttl) = match st.grant(t.lease_ttl_secs()).await {
            Ok(g) => g,
            Err(e) => {
                warn!("{e}");
                return None;
            }
        };
        if let Err(e) = t.check_lease(ttl) {
            // etcd's minimum TTL (1.5 election timeouts) is above what the
            // margin allows, or below it: holding would break S4.
            error!("{e}; not campaigning with this lease");
            let _ = st.revoke(lease).await;
            return None;
        }
        let touch_sent = Instant::now();
        match st.claim(expect, lease).await {
            Ok(Some(revision)) => Some(Claim {
                lease,
                revision,
                proof: Proof {
                    touch_sent,
                    lease_sent,
                    ttl,
                },
            }),
            Ok(None) => {
                debug!(?expect, "vip: lost the race for the key");
                let _ = st.revoke(lease).await;
                None
            }
            Err(e) => {
                warn!("{e}");
                let _ = st.revoke(lease).await;
                None
            }
        }
    }

    /// Holder: answer for the VIP while the claim is proven.
    async fn hold(
        &mut self,
        st: &Store,
        mut claim: Claim,
        shutdown: &mut Shutdown<'_>,
    ) -> Result<End, VipError> {
        let t = self.cfg.timing;
        if !matches!(
            election::verdict(&claim.proof, Instant::now(), &t),
            Verdict::Hold { .. }
        ) {
            warn!("vip: the claim took too long to win; not using it");
            let _ = st.revoke(claim.lease).await;
            return Ok(End::Lost);
        }
        let takeover = Takeover {
            revision: claim.revision,
            address_lifetime: t.address_lifetime(),
        };
        let _shedder = self
            .cfg
            .shed_etcd_leadership
            .then(|| AbortOnDrop(tokio::spawn(shed_loop(st.clone(), t.renew_every))));
        let (mover, health, role) = (&mut self.mover, &mut self.health, &self.role);
        // Each proof of the claim renews the address's kernel lifetime, so
        // the kernel removes it even if this process stops running (S4).
        let (proved, mut proofs) = watch::channel(());
        // The mover's whole part, raced against the claim's deadline: a
        // cloud API call may take a second, and renewals must go on while
        // it runs. Resolves only if taking the address fails.
        let lease = claim.lease;
        let mut moving = Box::pin(async move {
            mover.acquire(takeover).await?;
            let acquired = Instant::now();
            role.send_replace(VipRole::Holder);
            info!(lease, revision = takeover.revision, "vip: holding");
            // acquire sent the first announcement; repeat for lost packets.
            let mut announcements = ANNOUNCE_AT.iter().skip(1).map(|at| acquired + *at);
            let mut next_announcement = announcements.next();
            proofs.mark_unchanged();
            loop {
                tokio::select! {
                    _ = sleep_until(next_announcement.unwrap_or(acquired)), if next_announcement.is_some() => {
                        if let Err(e) = mover.announce().await {
                            warn!("vip: announcement: {e}");
                        }
                        next_announcement = announcements.next();
                    }
                    changed = proofs.changed() => {
                        if changed.is_err() {
                            return std::future::pending::<Result<(), MoverError>>().await;
                        }
                        if let Err(e) = mover.refresh().await {
                            warn!("vip: cannot renew the address's lifetime: {e}");
                        }
                    }
                }
            }
        });
        let renewals = self.renewals.clone();
        let mut leaving = self.leaving.clone();
        let mut streak = HealthStreak::new(t.unhealthy_release_after());
        let mut failing = false;
        let mut next_round = Instant::now() + t.renew_every;
        let mut round = Box::pin(renew(st, claim.lease, next_round));
        // The health check runs beside the renewals, not inside them: a
        // slow answer (an apiserver's /readyz may take seconds under load)
        // must not hold back the proofs the claim's deadline counts from.
        let mut check = Box::pin(check_health(health, next_round));
        let end = loop {
            let deadline = claim.proof.deadline(&t);
            tokio::select! {
                biased;
                _ = sleep_until(deadline) => {
                    warn!("vip: cannot prove the claim any more: dropping the address (S4)");
                    break End::Lost;
                }
                _ = shutdown.as_mut() => break End::Shutdown,
                _ = leaving_now(&mut leaving) => {
                    info!("vip: this machine is leaving on purpose: handing the VIP on");
                    break End::Lost;
                }
                r = &mut moving => {
                    if let Err(e) = r {
                        error!("vip: cannot take the address: {e}; handing the claim back");
                    }
                    break End::MoverFailed;
                }
                r = &mut round => {
                    renewals.record(r.sent.elapsed());
                    let lost = match (&r.touch, &r.keep_alive) {
                        (Ok(false), _) => Some("the key names another holder"),
                        (_, Ok(false)) => Some("the lease is gone"),
                        _ => None,
                    };
                    if let Some(why) = lost {
                        warn!("vip: lost the claim ({why}): dropping the address");
                        break End::Lost;
                    }
                    // Each proof moves on its own: a touch may get through
                    // while the keep-alive did not, or the other way round.
                    if matches!(r.touch, Ok(true)) {
                        claim.proof.touch_sent = r.sent;
                        proved.send_replace(());
                    }
                    if matches!(r.keep_alive, Ok(true)) {
                        claim.proof.lease_sent = r.sent;
                    }
                    match (r.touch, r.keep_alive) {
                        (Ok(_), Ok(_)) => failing = false,
                        (Err(e), _) | (_, Err(e)) => log_fault(&mut failing, &e),
                    }
                    next_round = (r.sent + t.renew_every).max(Instant::now());
                    round = Box::pin(renew(st, claim.lease, next_round));
                }
                (asked, healthy) = &mut check => {
                    if streak.record(healthy) {
                        warn!("vip: this node is unhealthy: handing the VIP on");
                        break End::Lost;
                    }
                    let next = (asked + t.renew_every).max(Instant::now());
                    drop(check); // ends its borrow of `health`
                    check = Box::pin(check_health(health, next));
                }
            }
        };
        // Ends their borrows of the mover and the health check.
        drop(check);
        drop(round);
        drop(moving);
        // S4: the address goes first, the lease after.
        self.release_until_done().await;
        self.role.send_replace(VipRole::Candidate);
        match timeout(Duration::from_secs(1), st.revoke(claim.lease)).await {
            Ok(Ok(())) => debug!("vip: lease revoked"),
            Ok(Err(e)) => debug!("vip: lease not revoked ({e}); it expires by itself"),
            Err(_) => debug!("vip: lease revoke timed out; it expires by itself"),
        }
        Ok(match end {
            End::MoverFailed => {
                // Let another node try before this one campaigns again.
                sleep(t.takeover_after).await;
                End::Lost
            }
            other => other,
        })
    }

    /// Removes the address, retrying until the mover succeeds: while it
    /// cannot, nothing else is safe to do.
    async fn release_until_done(&mut self) {
        let mut attempt = 0u32;
        loop {
            match self.mover.release().await {
                Ok(()) => return,
                Err(e) => {
                    if attempt.is_multiple_of(20) {
                        error!("vip: cannot remove the address, retrying: {e}");
                    }
                    attempt += 1;
                    sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One renewal round at `at`: touch and keep-alive at once.
async fn renew(st: &Store, lease: i64, at: Instant) -> Round {
    sleep_until(at).await;
    let sent = Instant::now();
    let (touch, keep_alive) = tokio::join!(st.touch(lease), st.keep_alive(lease));
    Round {
        sent,
        touch,
        keep_alive,
    }
}

/// One health check at `at`: when it was asked, and the answer.
async fn check_health<H: HealthCheck>(health: &mut H, at: Instant) -> (Instant, bool) {
    sleep_until(at).await;
    let asked = Instant::now();
    (asked, health.healthy().await)
}

/// How long a health answer stands for the candidate/standby shown in status.
const HEALTH_SHOWN_FOR: Duration = Duration::from_secs(5);

/// A fresh holder's first check whether its etcd member leads: after its
/// first renewals went through (three at `renew_every` = 200 ms), so they do
/// not meet the brief proposal drops of a leadership move (moving at once
/// made the VIP flap to a third node right after a takeover), yet early
/// enough that a crash soon after a takeover rarely costs both the holder
/// and the etcd leader (the new holder's txn would wait for re-election).
const SHED_FIRST: Duration = Duration::from_millis(600);
/// How often a holder checks again (the leader may come back to it).
const SHED_EVERY: Duration = Duration::from_secs(2);

/// While holding: keep the etcd leader on another machine. The first
/// check waits for three renewals at the configured pace (at least
/// [`SHED_FIRST`]), so slower timers do not move leadership mid-takeover.
async fn shed_loop(st: Store, renew_every: Duration) {
    let mut wait = SHED_FIRST.max(renew_every * 3);
    loop {
        sleep(wait).await;
        wait = SHED_EVERY.max(renew_every * 2);
        match st.shed_leadership().await {
            Ok(Some(to)) => {
                info!(to = %format!("{to:x}"), "vip: moved etcd leadership off the VIP holder")
            }
            Ok(None) => {}
            Err(e) => debug!("vip: etcd leadership check: {e}"),
        }
    }
}

/// A task that ends with its owner.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps, or returns true early on shutdown.
async fn pause(shutdown: &mut Shutdown<'_>, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.as_mut() => true,
        _ = sleep(d) => false,
    }
}

/// Logs the first fault of a streak as a warning, the rest at debug.
fn log_fault(failing: &mut bool, e: &LeaseError) {
    if *failing {
        debug!("{e}");
    } else {
        warn!("{e}");
        *failing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lead spawns `run` on the agent's multi-thread runtime.
    #[allow(dead_code)]
    fn run_is_send(m: VipManager<ArpMover, EtcdMemberHealth>) {
        fn is_send<T: Send>(_: T) {}
        is_send(m.run(async {}));
    }

    #[test]
    fn unsafe_timing_is_refused_before_anything_runs() {
        let t = Timing {
            takeover_after: Duration::from_millis(500),
            ..Timing::default()
        };
        let cfg = VipConfig {
            vip: Ipv4Addr::new(10, 0, 0, 200),
            holder_id: "a".into(),
            etcd: EtcdAccess::plain(vec!["http://127.0.0.1:2379".into()]),
            timing: t,
            shed_etcd_leadership: false,
        };
        struct NoMove;
        impl Mover for NoMove {
            async fn acquire(&mut self, _: Takeover) -> Result<(), MoverError> {
                Ok(())
            }
            async fn announce(&mut self) -> Result<(), MoverError> {
                Ok(())
            }
            async fn release(&mut self) -> Result<(), MoverError> {
                Ok(())
            }
        }
        let health = || async { true };
        assert!(matches!(
            VipManager::new(cfg, NoMove, health),
            Err(VipError::Timing(_))
        ));
    }
}
