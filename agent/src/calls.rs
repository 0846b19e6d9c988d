//! Counts of the calls whose rate grows with the fleet: group listings
//! (cloud API calls: AWS Auto Scaling and EC2, the GCE Compute API) and
//! etcd connections (each one a TLS handshake on a member). `/metrics`
//! shows them, so a fleet's total call rate is the sum over its agents
//! (issue 18: the cost of a mass join was every agent probing every peer).

use std::sync::atomic::{AtomicU64, Ordering};

static GROUP_LISTS: AtomicU64 = AtomicU64::new(0);
static ETCD_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// The counts since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Peer listings through the discovery source (one or two API calls
    /// each for a cloud group; a name lookup for static and DNS lists).
    pub group_lists: u64,
    /// Connections opened to an etcd member (probes, health checks, the
    /// local member).
    pub etcd_connections: u64,
}

pub fn group_listed() {
    GROUP_LISTS.fetch_add(1, Ordering::Relaxed);
}

pub fn etcd_connected() {
    ETCD_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
}

pub fn snapshot() -> Counts {
    Counts {
        group_lists: GROUP_LISTS.load(Ordering::Relaxed),
        etcd_connections: ETCD_CONNECTIONS.load(Ordering::Relaxed),
    }
}
