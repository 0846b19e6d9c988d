//! The memory and CPU time each part of the node uses, from systemd's
//! accounting.
//!
//! Every unit the agent runs (and the agent's own unit and containerd) has
//! its own cgroup, so `MemoryCurrent` is the memory of the whole part:
//! the program, its children and its page cache, as the kernel charges
//! it; `CPUUsageNSec` is the CPU time they have used. The agent reads both
//! every half minute and puts them in the status, so `muster status`, the
//! lab and the tier-2 tests can print what each node role uses at steady
//! state, and which part keeps a starved VM busy, without a shell on the
//! machine.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::debug;

use super::systemd::{SystemdSupervisor, UnitFootprint};
use crate::state::StatusBoard;

/// The units that make up a node, in the order a reader expects them.
pub const UNITS: &[&str] = &[
    "muster-agent.service",
    crate::etcd::runner::SERVICE,
    crate::kubernetes::control_plane::APISERVER,
    crate::kubernetes::control_plane::CONTROLLER_MANAGER,
    crate::kubernetes::control_plane::SCHEDULER,
    "containerd.service",
    crate::kubernetes::node::KUBELET,
    crate::kubernetes::node::KUBE_PROXY,
];

const EVERY: Duration = Duration::from_secs(30);

/// A unit's short name: `muster-` and `.service` dropped.
fn short_name(unit: &str) -> String {
    let short = unit.trim_end_matches(".service");
    short.strip_prefix("muster-").unwrap_or(short).to_string()
}

/// Per part, as the status carries it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub memory_mib: BTreeMap<String, u64>,
    pub cpu_ms: BTreeMap<String, u64>,
}

/// Readings per unit → MiB and CPU milliseconds per short name, leaving
/// out units that do not exist and values that are not accounted. Pure.
pub fn summarize(readings: &[(&str, UnitFootprint)]) -> Summary {
    let mut out = Summary::default();
    for (unit, f) in readings {
        let short = short_name(unit);
        if let Some(b) = f.memory_bytes {
            out.memory_mib
                .insert(short.clone(), b.div_ceil(1024 * 1024));
        }
        if let Some(ns) = f.cpu_nsec {
            out.cpu_ms.insert(short, ns / 1_000_000);
        }
    }
    out
}

/// Reads the units' memory and CPU time every half minute into the
/// status, for as long as the agent runs. Errors are logged at debug
/// level: a missing reading is not worth a warning on the console.
pub async fn report_footprint(board: StatusBoard) {
    let mut systemd = None;
    loop {
        if systemd.is_none() {
            match SystemdSupervisor::connect(None).await {
                Ok(s) => systemd = Some(s),
                Err(e) => debug!("memory footprint: {e}"),
            }
        }
        if let Some(s) = &systemd {
            let mut readings = Vec::with_capacity(UNITS.len());
            for unit in UNITS {
                match s.footprint(unit).await {
                    Ok(Some(f)) => readings.push((*unit, f)),
                    Ok(None) => {}
                    Err(e) => debug!("footprint of {unit}: {e}"),
                }
            }
            let summary = summarize(&readings);
            if let Err(e) = board.update(|st| {
                st.memory_mib = summary.memory_mib;
                st.cpu_ms = summary.cpu_ms;
                st.footprint_at_ms = crate::state::now_millis();
            }) {
                debug!("memory footprint: cannot write status: {e}");
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_become_mib_and_cpu_ms_per_short_name_and_unaccounted_ones_are_left_out() {
        let f = |memory_bytes, cpu_nsec| UnitFootprint {
            memory_bytes,
            cpu_nsec,
        };
        let got = summarize(&[
            (
                "muster-agent.service",
                f(Some(20 * 1024 * 1024), Some(1_500_000_000)),
            ),
            ("muster-etcd", f(Some(1), Some(999_999))),
            ("containerd.service", f(Some(30 * 1024 * 1024 + 1), None)),
            ("muster-kubelet", f(None, None)),
        ]);
        let map = |v: &[(&str, u64)]| -> BTreeMap<String, u64> {
            v.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(
            got.memory_mib,
            map(&[("agent", 20), ("etcd", 1), ("containerd", 31)])
        );
        assert_eq!(got.cpu_ms, map(&[("agent", 1500), ("etcd", 0)]));
    }
}
