//! Who holds the VIP, decided without I/O: the timing rules of the claim on
//! etcd and the candidate's next step. `docs/design/vip.md` gives the
//! argument; this module is where its numbers and inequalities live.
//!
//! Two clocks never meet here: every instant is the *local* monotonic clock
//! of the node deciding. Other nodes' time is only ever bounded through the
//! drift allowance in [`Timing::check`].

use std::time::Duration;

use tokio::time::Instant;

/// The timers of the election. All durations are local-clock durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// The holder renews (touch + lease keep-alive) this often.
    pub renew_every: Duration,
    /// The holder drops the VIP when its last confirmed touch was sent this
    /// long ago (`W_h`).
    pub hold_for: Duration,
    /// A candidate takes over once the key's revision has not changed for
    /// this long by its own clock (`W_f`).
    pub takeover_after: Duration,
    /// Lease TTL asked of etcd; etcd may grant more (never less).
    pub lease_ttl: Duration,
    /// The holder drops the VIP this long before its lease can expire.
    pub lease_margin: Duration,
    /// How often a candidate reads the key.
    pub poll_every: Duration,
    /// Bound on the rate difference of two nodes' clocks (0.01 = 1 %).
    pub drift: f64,
    /// Time allowed between a holder's deadline and the address being gone
    /// (timer lateness, the netlink call).
    pub act_budget: Duration,
}

impl Timing {
    /// The kernel lifetime of the holder's address, renewed with every
    /// proof (`Netlink::add_expiring`): whole seconds (the kernel's unit),
    /// at least `hold_for`, so the kernel never removes the address before
    /// the holder itself would. It bounds how long a holder that stopped
    /// running keeps the address: the kernel checks lifetimes on a timer
    /// that may fire up to `KERNEL_EXPIRY_LATE` after the deadline.
    pub fn address_lifetime(&self) -> Duration {
        let ms = self.hold_for.as_millis().max(1);
        Duration::from_secs(ms.div_ceil(1000) as u64)
    }

    /// The worst overlap of a frozen holder's address with its successor's:
    /// its lifetime (plus the kernel's lateness) against the successor's
    /// `takeover_after`, both counted from the last proof. Zero when the
    /// takeover waits longer than the address can live.
    pub fn frozen_holder_overlap(&self) -> Duration {
        (self.address_lifetime() + KERNEL_EXPIRY_LATE).saturating_sub(self.takeover_after)
    }
}

/// How late Linux removes an expired IPv4 address: its lifetime check runs
/// on a timer rounded up to a whole second when that is within
/// `ADDRCONF_TIMER_FUZZ` (HZ/4) of the expiry (net/ipv4/devinet.c,
/// `check_lifetime`). Measured in tests/tier1/vip.rs. On a busy host the
/// worker that runs that check can also wait for a CPU: once 471 ms late
/// beside an image build on 2 cores. That margin is not part of this bound.
pub const KERNEL_EXPIRY_LATE: Duration = Duration::from_millis(250);

impl Default for Timing {
    fn default() -> Self {
        Timing {
            renew_every: Duration::from_millis(200),
            hold_for: Duration::from_millis(700),
            takeover_after: Duration::from_millis(1000),
            lease_ttl: Duration::from_secs(2),
            lease_margin: Duration::from_millis(500),
            poll_every: Duration::from_millis(50),
            drift: 0.01,
            act_budget: Duration::from_millis(200),
        }
    }
}

/// A [`Timing`] that cannot keep S4 or cannot ever hold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "vip timing: hold_for {hold:?} (+{drift} drift) + act_budget {budget:?} must stay below takeover_after {takeover:?} (-{drift} drift), or two nodes could hold the VIP"
    )]
    TakeoverTooSoon {
        hold: Duration,
        takeover: Duration,
        budget: Duration,
        drift: f64,
    },
    #[error(
        "vip timing: lease_margin {margin:?} must exceed the drift over a ttl of {ttl:?} plus act_budget {budget:?}"
    )]
    LeaseMarginTooSmall {
        margin: Duration,
        ttl: Duration,
        budget: Duration,
    },
    #[error(
        "vip timing: renew_every {renew:?} must be well inside hold_for {hold:?} (at most half)"
    )]
    RenewTooSlow { renew: Duration, hold: Duration },
    #[error("vip timing: drift {0} must be in [0, 0.1)")]
    Drift(f64),
}

impl Timing {
    /// The inequalities of `docs/design/vip.md`, "Why never two holders".
    pub fn check(&self) -> Result<(), TimingError> {
        if !(0.0..0.1).contains(&self.drift) {
            return Err(TimingError::Drift(self.drift));
        }
        // Worst case: the holder's clock runs slow (its hold_for lasts
        // longer in real time), the candidate's runs fast (its wait is
        // shorter), and the holder's timer fires act_budget late.
        let holder_real = self.hold_for.div_f64(1.0 - self.drift) + self.act_budget;
        let candidate_real = self.takeover_after.div_f64(1.0 + self.drift);
        if holder_real >= candidate_real {
            return Err(TimingError::TakeoverTooSoon {
                hold: self.hold_for,
                takeover: self.takeover_after,
                budget: self.act_budget,
                drift: self.drift,
            });
        }
        self.check_lease(self.lease_ttl)?;
        if self.renew_every * 2 > self.hold_for {
            return Err(TimingError::RenewTooSlow {
                renew: self.renew_every,
                hold: self.hold_for,
            });
        }
        Ok(())
    }

    /// The lease rule for the TTL etcd actually granted.
    pub fn check_lease(&self, ttl: Duration) -> Result<(), TimingError> {
        let needed = ttl.mul_f64(self.drift) + self.act_budget;
        if self.lease_margin <= needed || self.lease_margin >= ttl {
            return Err(TimingError::LeaseMarginTooSmall {
                margin: self.lease_margin,
                ttl,
                budget: self.act_budget,
            });
        }
        Ok(())
    }

    /// The timers `apiEndpoint.timing` asks for; unset ones keep their
    /// default. Not checked: call [`Timing::check`].
    pub fn from_settings(s: &crate::config::VipTimingSettings) -> Timing {
        let d = Timing::default();
        let or = |v: Option<crate::config::ConfigDuration>, default: Duration| {
            v.map_or(default, |v| v.0)
        };
        Timing {
            renew_every: or(s.renew_every, d.renew_every),
            hold_for: or(s.hold_for, d.hold_for),
            takeover_after: or(s.takeover_after, d.takeover_after),
            lease_ttl: or(s.lease_ttl, d.lease_ttl),
            lease_margin: or(s.lease_margin, d.lease_margin),
            poll_every: or(s.poll_every, d.poll_every),
            drift: d.drift,
            act_budget: or(s.act_budget, d.act_budget),
        }
    }

    /// The TTL to ask etcd for, in whole seconds (etcd's unit), at least 1.
    pub fn lease_ttl_secs(&self) -> i64 {
        (self.lease_ttl.as_millis().div_ceil(1000) as i64).max(1)
    }

    /// Expected crash failover, for logs and docs: the candidate's wait
    /// minus the age of the last touch, plus one poll.
    pub fn crash_failover_bounds(&self) -> (Duration, Duration) {
        (
            self.takeover_after.saturating_sub(self.renew_every),
            self.takeover_after + self.poll_every,
        )
    }
}

/// What the holder has proven, as send times of requests that succeeded.
/// A send time is earlier than the moment etcd acted on the request, so
/// every deadline computed from it is conservative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// Send time of the last touch that etcd confirmed.
    pub touch_sent: Instant,
    /// Send time of the last grant or keep-alive that etcd confirmed.
    pub lease_sent: Instant,
    /// The lease TTL etcd granted.
    pub ttl: Duration,
}

impl Proof {
    /// The instant by which the VIP must be gone unless renewed: the
    /// earlier of the touch rule and the lease rule.
    pub fn deadline(&self, t: &Timing) -> Instant {
        let by_touch = self.touch_sent + t.hold_for;
        let by_lease = self.lease_sent + self.ttl.saturating_sub(t.lease_margin);
        by_touch.min(by_lease)
    }
}

/// The holder's answer to "may I still answer for the VIP at `now`?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Yes, until this instant at the latest.
    Hold { until: Instant },
    /// No: drop the address now.
    StepDown,
}

pub fn verdict(proof: &Proof, now: Instant, t: &Timing) -> Verdict {
    let until = proof.deadline(t);
    if now < until {
        Verdict::Hold { until }
    } else {
        Verdict::StepDown
    }
}

/// The election key as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyView {
    Absent,
    Held {
        holder: String,
        lease: i64,
        mod_revision: i64,
    },
}

/// The last key state a candidate saw change, and when (its clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// `None`: the key was absent.
    pub mod_revision: Option<i64>,
    /// When the read that first showed it *returned*. Not when it was sent:
    /// a slow read can show a touch committed after the request left, and
    /// the wait must not start before that commit (S4).
    pub since: Instant,
}

/// Updates what a candidate has seen: the clock restarts whenever the key
/// changes (a touch, a new holder, a deletion). `now`: when the read
/// returned.
pub fn observe(prev: Option<Seen>, key: &KeyView, now: Instant) -> Seen {
    let rev = match key {
        KeyView::Absent => None,
        KeyView::Held { mod_revision, .. } => Some(*mod_revision),
    };
    match prev {
        Some(seen) if seen.mod_revision == rev => seen,
        _ => Seen {
            mod_revision: rev,
            since: now,
        },
    }
}

/// What a txn must find to let a candidate in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key is unchanged since this revision (its holder went silent).
    ModRevision(i64),
}

/// A candidate's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try to take the key with a txn that expects this state.
    Campaign(Expect),
    /// The key names this node under a lease it does not hold (an earlier
    /// run of the agent): revoke that lease, then look again.
    RevokeStale { lease: i64 },
    /// Someone else holds it; look again at `until` at the latest.
    Wait { until: Instant },
    /// Not healthy: no campaign.
    StandBy,
}

/// The candidate's decision. `seen` must already include `key` (see
/// [`observe`]).
pub fn next(me: &str, healthy: bool, key: &KeyView, seen: Seen, now: Instant, t: &Timing) -> Next {
    if let KeyView::Held { holder, lease, .. } = key
        && holder == me
    {
        // Not healthy does not matter: this is cleanup of our own claim.
        return Next::RevokeStale { lease: *lease };
    }
    if !healthy {
        return Next::StandBy;
    }
    match key {
        KeyView::Absent => Next::Campaign(Expect::Absent),
        KeyView::Held { mod_revision, .. } => {
            let silent_until = seen.since + t.takeover_after;
            if now >= silent_until {
                Next::Campaign(Expect::ModRevision(*mod_revision))
            } else {
                Next::Wait {
                    until: silent_until.min(now + t.poll_every),
                }
            }
        }
    }
}

/// The fewest consecutive failed health checks after which a holder hands
/// the VIP on.
pub const UNHEALTHY_RELEASE_AFTER: u32 = 3;

impl Timing {
    /// Consecutive failed health checks (one per renewal) after which a
    /// holder hands the VIP on: about as long as its claim would last
    /// (`hold_for`), and at least [`UNHEALTHY_RELEASE_AFTER`]. Slow
    /// machines' longer timers then also ride out a starting apiserver's
    /// brief unreadiness instead of moving the VIP.
    pub fn unhealthy_release_after(&self) -> u32 {
        let rounds = self.hold_for.as_millis() / self.renew_every.as_millis().max(1);
        u32::try_from(rounds)
            .unwrap_or(u32::MAX)
            .max(UNHEALTHY_RELEASE_AFTER)
    }
}

/// Counts consecutive failed health checks; one success resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthStreak {
    failed: u32,
    release_after: u32,
}

impl Default for HealthStreak {
    fn default() -> Self {
        HealthStreak::new(UNHEALTHY_RELEASE_AFTER)
    }
}

impl HealthStreak {
    pub fn new(release_after: u32) -> HealthStreak {
        HealthStreak {
            failed: 0,
            release_after,
        }
    }

    /// Records a check; true when the holder should release.
    pub fn record(&mut self, healthy: bool) -> bool {
        self.failed = if healthy {
            0
        } else {
            self.failed.saturating_add(1)
        };
        self.failed >= self.release_after
    }
}

/// When to send gratuitous ARP after taking over, from the moment the
/// address was added: at once, then again in case the first was lost or a
/// switch was still learning.
pub const ANNOUNCE_AT: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(250),
    Duration::from_millis(1000),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn default_timing_is_safe_and_meets_the_failover_target() {
        let t = Timing::default();
        t.check().expect("default timing keeps S4");
        let (_, max) = t.crash_failover_bounds();
        assert!(max <= Duration::from_millis(1500), "{max:?}");
    }

    #[test]
    fn timing_that_lets_a_candidate_in_before_the_holder_drops_is_refused() {
        let t = Timing {
            takeover_after: Duration::from_millis(800),
            ..Timing::default()
        };
        assert!(matches!(
            t.check(),
            Err(TimingError::TakeoverTooSoon { .. })
        ));
        let t = Timing {
            hold_for: Duration::from_millis(1000),
            ..Timing::default()
        };
        assert!(matches!(
            t.check(),
            Err(TimingError::TakeoverTooSoon { .. })
        ));
        let t = Timing {
            drift: 0.5,
            ..Timing::default()
        };
        assert!(matches!(t.check(), Err(TimingError::Drift(_))));
        let t = Timing {
            renew_every: Duration::from_millis(400),
            ..Timing::default()
        };
        assert!(matches!(t.check(), Err(TimingError::RenewTooSlow { .. })));
    }

    #[test]
    fn lease_margin_must_cover_drift_and_action_and_stay_below_the_ttl() {
        let t = Timing::default();
        assert!(t.check_lease(Duration::from_secs(2)).is_ok());
        assert!(t.check_lease(Duration::from_secs(20)).is_ok());
        // 30 s * 1 % = 300 ms of drift + 200 ms to act eat the 500 ms margin.
        assert!(t.check_lease(Duration::from_secs(30)).is_err());
        assert!(t.check_lease(Duration::from_millis(400)).is_err());
    }

    #[test]
    fn ttl_is_asked_in_whole_seconds_rounded_up() {
        let mut t = Timing::default();
        assert_eq!(t.lease_ttl_secs(), 2);
        t.lease_ttl = Duration::from_millis(1500);
        assert_eq!(t.lease_ttl_secs(), 2);
        t.lease_ttl = Duration::ZERO;
        assert_eq!(t.lease_ttl_secs(), 1);
    }

    #[test]
    fn the_deadline_is_the_earlier_of_touch_and_lease_rules() {
        let t = Timing::default();
        let now = t0();
        let p = Proof {
            touch_sent: now,
            lease_sent: now,
            ttl: Duration::from_secs(2),
        };
        assert_eq!(p.deadline(&t), now + t.hold_for);
        // Keep-alives failing while touches succeed: the lease rule binds.
        let p = Proof {
            touch_sent: now + Duration::from_secs(5),
            lease_sent: now,
            ttl: Duration::from_secs(2),
        };
        assert_eq!(p.deadline(&t), now + Duration::from_millis(1500));
        assert_eq!(
            verdict(&p, now + Duration::from_millis(1499), &t),
            Verdict::Hold {
                until: p.deadline(&t)
            }
        );
        assert_eq!(
            verdict(&p, now + Duration::from_millis(1500), &t),
            Verdict::StepDown
        );
    }

    #[test]
    fn a_candidate_waits_for_a_silent_holder_and_then_expects_that_revision() {
        let t = Timing::default();
        let start = t0();
        let key = KeyView::Held {
            holder: "a".into(),
            lease: 7,
            mod_revision: 40,
        };
        let seen = observe(None, &key, start);
        assert!(matches!(
            next("b", true, &key, seen, start, &t),
            Next::Wait { .. }
        ));
        let later = start + t.takeover_after;
        assert_eq!(
            next("b", true, &key, seen, later, &t),
            Next::Campaign(Expect::ModRevision(40))
        );
        // A touch (new revision) restarts the clock.
        let touched = KeyView::Held {
            holder: "a".into(),
            lease: 7,
            mod_revision: 41,
        };
        let seen2 = observe(Some(seen), &touched, later);
        assert_eq!(seen2.since, later);
        assert!(matches!(
            next("b", true, &touched, seen2, later, &t),
            Next::Wait { .. }
        ));
        // The same revision again does not.
        assert_eq!(
            observe(Some(seen2), &touched, later + t.takeover_after),
            seen2
        );
    }

    #[test]
    fn waits_never_oversleep_the_takeover_moment_or_the_poll() {
        let t = Timing::default();
        let start = t0();
        let key = KeyView::Held {
            holder: "a".into(),
            lease: 7,
            mod_revision: 3,
        };
        let seen = observe(None, &key, start);
        let now = start + t.takeover_after - Duration::from_millis(10);
        assert_eq!(
            next("b", true, &key, seen, now, &t),
            Next::Wait {
                until: start + t.takeover_after
            }
        );
        assert_eq!(
            next("b", true, &key, seen, start, &t),
            Next::Wait {
                until: start + t.poll_every
            }
        );
    }

    #[test]
    fn absent_key_means_campaign_if_healthy_and_standby_if_not() {
        let t = Timing::default();
        let now = t0();
        let seen = observe(None, &KeyView::Absent, now);
        assert_eq!(
            next("b", true, &KeyView::Absent, seen, now, &t),
            Next::Campaign(Expect::Absent)
        );
        assert_eq!(
            next("b", false, &KeyView::Absent, seen, now, &t),
            Next::StandBy
        );
        let key = KeyView::Held {
            holder: "a".into(),
            lease: 7,
            mod_revision: 3,
        };
        let seen = observe(None, &key, now);
        assert_eq!(
            next("b", false, &key, seen, now + Duration::from_secs(9), &t),
            Next::StandBy
        );
    }

    #[test]
    fn our_own_name_under_a_lease_we_do_not_hold_is_revoked() {
        let t = Timing::default();
        let now = t0();
        let key = KeyView::Held {
            holder: "b".into(),
            lease: 99,
            mod_revision: 3,
        };
        let seen = observe(None, &key, now);
        assert_eq!(
            next("b", false, &key, seen, now, &t),
            Next::RevokeStale { lease: 99 }
        );
    }

    #[test]
    fn slow_timers_tolerate_failed_checks_for_about_the_hold_time() {
        assert_eq!(Timing::default().unhealthy_release_after(), 3);
        let tcg = Timing {
            renew_every: Duration::from_secs(1),
            hold_for: Duration::from_secs(6),
            ..Timing::default()
        };
        assert_eq!(tcg.unhealthy_release_after(), 6);
        let mut s = HealthStreak::new(6);
        for _ in 0..5 {
            assert!(!s.record(false));
        }
        assert!(s.record(false));
    }

    #[test]
    fn three_failed_health_checks_in_a_row_release_and_one_success_resets() {
        let mut s = HealthStreak::default();
        assert!(!s.record(false));
        assert!(!s.record(false));
        assert!(!s.record(true));
        assert!(!s.record(false));
        assert!(!s.record(false));
        assert!(s.record(false));
    }

    /// S4 by brute force over the worst clock skews: whatever moment the
    /// holder's last touch was sent and however late the candidate saw it,
    /// the holder's address is gone (deadline + act_budget, holder clock
    /// slow) before the candidate's takeover (candidate clock fast).
    #[test]
    fn holder_always_drops_before_any_candidate_may_take_over() {
        let t = Timing::default();
        for seen_lag_ms in [0u64, 1, 5, 50, 300] {
            for holder_rate in [1.0 - t.drift, 1.0, 1.0 + t.drift] {
                for cand_rate in [1.0 - t.drift, 1.0, 1.0 + t.drift] {
                    // Real time, seconds, from the touch's send.
                    let holder_gone =
                        t.hold_for.as_secs_f64() / holder_rate + t.act_budget.as_secs_f64();
                    let cand_takes =
                        seen_lag_ms as f64 / 1000.0 + t.takeover_after.as_secs_f64() / cand_rate;
                    assert!(
                        holder_gone < cand_takes,
                        "lag {seen_lag_ms} ms, rates {holder_rate}/{cand_rate}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_address_outlives_the_hold_and_bounds_a_frozen_holder() {
        let t = Timing::default();
        assert_eq!(t.address_lifetime(), Duration::from_secs(1));
        assert!(t.address_lifetime() >= t.hold_for);
        assert_eq!(t.frozen_holder_overlap(), Duration::from_millis(250));
        let slow = Timing {
            hold_for: Duration::from_millis(2_100),
            takeover_after: Duration::from_secs(4),
            ..t
        };
        assert_eq!(slow.address_lifetime(), Duration::from_secs(3));
        assert_eq!(slow.frozen_holder_overlap(), Duration::ZERO);
    }
}
