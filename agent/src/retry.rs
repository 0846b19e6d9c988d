//! Capped exponential backoff for transient faults (DESIGN S6).
//!
//! One policy type for every caller (metadata, discovery, etcd): the caller
//! says which errors are transient; everything else fails at once. The
//! schedule itself is a pure function so tests can check it without sleeping.
//! Time is tokio's clock, so tests with a paused clock run instantly.
//!
//! Each wait is jittered ("equal jitter": half the delay, plus a random
//! part of the other half). Machines that boot together fail together: 100
//! agents whose first group listing timed out at once retried at once, in
//! step, and kept an overloaded API (moto in the mass-join bench) overloaded
//! until every one had given up (issue 18).

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// No single delay is longer than this.
    pub max_delay: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub total: Duration,
}

impl Backoff {
    /// A policy for boot-time metadata: quick first retries, 2 s cap, 30 s in all.
    pub const METADATA: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        total: Duration::from_secs(30),
    };

    /// The delay before retry number `attempt` (0-based): doubles from
    /// `initial`, never above `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max_delay)
    }
}

/// The outcome of a retried operation that did not succeed.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// The last error seen.
    pub last: E,
    /// How many attempts were made.
    pub attempts: u32,
    /// How long was spent in all.
    pub elapsed: Duration,
    /// True when the error was transient but the time budget ran out;
    /// false when the error was permanent and we stopped at once.
    pub exhausted: bool,
}

/// Runs `op` until it succeeds, fails permanently (`is_transient` false), or
/// the time budget is spent. Never sleeps past the budget.
pub async fn retry<T, E, F, Fut>(
    policy: Backoff,
    mut is_transient: impl FnMut(&E) -> bool,
    mut op: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let elapsed = start.elapsed();
                if !is_transient(&e) {
                    return Err(GaveUp {
                        last: e,
                        attempts: attempt + 1,
                        elapsed,
                        exhausted: false,
                    });
                }
                let delay = policy.delay(attempt);
                if elapsed + delay >= policy.total {
                    return Err(GaveUp {
                        last: e,
                        attempts: attempt + 1,
                        elapsed,
                        exhausted: true,
                    });
                }
                let delay = jittered(delay, random_u32());
                tracing::debug!(
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "transient fault, retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// `delay` spread by `draw` over [delay/2, delay]: equal jitter. Pure.
pub fn jittered(delay: Duration, draw: u32) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(f64::from(draw) / f64::from(u32::MAX))
}

/// A random draw for the jitter; a failing system RNG means no jitter
/// (the wait is then the full delay), never a failed retry.
fn random_u32() -> u32 {
    ring::rand::generate::<[u8; 4]>(&ring::rand::SystemRandom::new())
        .map(|r| u32::from_le_bytes(r.expose()))
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jittered_wait_lies_between_half_and_all_of_the_delay() {
        let d = Duration::from_millis(800);
        assert_eq!(jittered(d, 0), Duration::from_millis(400));
        assert_eq!(jittered(d, u32::MAX), d);
        let mid = jittered(d, u32::MAX / 2);
        assert!(
            mid > Duration::from_millis(590) && mid < Duration::from_millis(610),
            "{mid:?}"
        );
        // Two draws from the system give two different waits (2^-32 odds
        // of a tie).
        assert_ne!(random_u32(), random_u32());
    }

    #[test]
    fn delays_double_and_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            total: Duration::from_secs(10),
        };
        let got: Vec<u128> = (0..6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let r: Result<u32, GaveUp<&str>> = retry(
            Backoff::METADATA,
            |_| true,
            |attempt| async move { if attempt < 3 { Err("503") } else { Ok(attempt) } },
        )
        .await;
        assert_eq!(r.expect("succeeds on the 4th attempt"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_stop_at_once() {
        let r: Result<(), _> = retry(
            Backoff::METADATA,
            |e: &&str| *e != "404",
            |_| async { Err("404") },
        )
        .await;
        let gave_up = r.expect_err("404 is permanent");
        assert_eq!(gave_up.attempts, 1);
        assert!(!gave_up.exhausted);
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_budget_bounds_transient_retries() {
        let policy = Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            total: Duration::from_secs(5),
        };
        let start = tokio::time::Instant::now();
        let r: Result<(), _> = retry(policy, |_| true, |_| async { Err("timeout") }).await;
        let gave_up = r.expect_err("never succeeds");
        assert!(gave_up.exhausted);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "must not sleep past the budget"
        );
        assert!(gave_up.attempts >= 4);
    }
}
