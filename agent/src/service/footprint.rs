//! The memory each part of the node uses, from systemd's accounting.
//!
//! Every unit the agent runs (and the agent's own unit and containerd) has
//! its own cgroup, so `MemoryCurrent` is the memory of the whole part:
//! the program, its children and its page cache, as the kernel charges
//! it. The agent reads it every half minute and puts it in the status, so
//! `muster status`, the lab and the tier-2 tests can print the memory of
//! each node role at steady state without a shell on the machine.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::debug;

use super::systemd::SystemdSupervisor;
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

/// Readings in bytes per unit → MiB per short name (`muster-` and
/// `.service` dropped), leaving out units that do not exist or are not
/// accounted. Pure.
pub fn summarize(readings: &[(&str, Option<u64>)]) -> BTreeMap<String, u64> {
    readings
        .iter()
        .filter_map(|(unit, bytes)| {
            let short = unit.trim_end_matches(".service");
            let short = short.strip_prefix("muster-").unwrap_or(short);
            bytes.map(|b| (short.to_string(), b.div_ceil(1024 * 1024)))
        })
        .collect()
}

/// Reads the units' memory every half minute into the status, for as long
/// as the agent runs. Errors are logged at debug level: a missing reading
/// is not worth a warning on the console.
pub async fn report_memory(board: StatusBoard) {
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
                match s.memory_current(unit).await {
                    Ok(bytes) => readings.push((*unit, bytes)),
                    Err(e) => debug!("memory footprint of {unit}: {e}"),
                }
            }
            let memory = summarize(&readings);
            if let Err(e) = board.update(|st| st.memory_mib = memory) {
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
    fn readings_become_mib_per_short_name_and_absent_units_are_left_out() {
        let got = summarize(&[
            ("muster-agent.service", Some(20 * 1024 * 1024)),
            ("muster-etcd", Some(1)),
            ("containerd.service", Some(30 * 1024 * 1024 + 1)),
            ("muster-kubelet", None),
        ]);
        let want: BTreeMap<String, u64> = [("agent", 20), ("etcd", 1), ("containerd", 31)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(got, want);
    }
}
