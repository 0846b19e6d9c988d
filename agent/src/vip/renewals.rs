//! How long the holder's renewal rounds take: the figure that decides
//! whether `apiEndpoint.timing` fits the machine. A round whose answer
//! takes longer than `hold_for` (minus the renewal interval) costs the
//! claim, so status and `/metrics` show the recent distribution.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rounds kept for the quantiles: about 100 s at the default 200 ms.
const WINDOW: usize = 512;

/// Renewal latencies of this node's holds, shared between the manager
/// (which records) and whoever reports them.
#[derive(Debug, Clone, Default)]
pub struct RenewalLog {
    inner: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    recent_ms: VecDeque<u32>,
    total: u64,
    max_ms: u32,
}

/// The recent distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenewalSummary {
    /// Rounds since the agent started.
    pub count: u64,
    /// Over the last rounds (at most 512).
    pub p50_ms: u32,
    pub p99_ms: u32,
    /// Since the agent started.
    pub max_ms: u32,
}

impl RenewalLog {
    pub fn record(&self, took: Duration) {
        let ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
        let Ok(mut log) = self.inner.lock() else {
            return;
        };
        if log.recent_ms.len() == WINDOW {
            log.recent_ms.pop_front();
        }
        log.recent_ms.push_back(ms);
        log.total += 1;
        log.max_ms = log.max_ms.max(ms);
    }

    /// `None` until a first round was recorded.
    pub fn summary(&self) -> Option<RenewalSummary> {
        let log = self.inner.lock().ok()?;
        if log.total == 0 {
            return None;
        }
        let mut sorted: Vec<u32> = log.recent_ms.iter().copied().collect();
        sorted.sort_unstable();
        Some(RenewalSummary {
            count: log.total,
            p50_ms: quantile(&sorted, 0.50),
            p99_ms: quantile(&sorted, 0.99),
            max_ms: log.max_ms,
        })
    }
}

/// Nearest-rank quantile of a sorted, non-empty slice.
fn quantile(sorted: &[u32], q: f64) -> u32 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_the_window_and_the_all_time_max() {
        let log = RenewalLog::default();
        assert_eq!(log.summary(), None);
        log.record(Duration::from_millis(900));
        for ms in 1..=WINDOW as u64 {
            log.record(Duration::from_millis(ms));
        }
        let s = log.summary().expect("recorded");
        assert_eq!(s.count, WINDOW as u64 + 1);
        // The 900 ms round fell out of the window but stays the maximum.
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (256, 507, 900));
    }
}
