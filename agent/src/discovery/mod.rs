//! discover — who are this machine's peers?
//!
//! Sources: a static list from the config, DNS, the cloud's group API (AWS
//! autoscaling group, GCE managed instance group). Every source yields the
//! same [`Peer`] records; role assignment orders them (see `roles`).

pub mod aws_asg;
pub mod dns_srv;
pub mod error;
pub mod gce_mig;
pub mod group;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Where a peer is in its machine lifecycle, as the source reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// Booting (AWS `Pending`, GCE `CREATING`/`VERIFYING`...).
    Pending,
    /// Running and in service.
    InService,
    /// On its way out (terminating, stopping, detaching, unhealthy).
    Leaving,
    /// The source does not say (static lists, DNS).
    Unknown,
}

/// One member of this machine's group (this machine included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// Stable identity: the instance id, or the address for static/DNS peers.
    pub id: String,
    pub address: Ipv4Addr,
    /// Launch time in milliseconds since the Unix epoch, when the source knows it.
    pub launched_at_ms: Option<u64>,
    pub lifecycle: Lifecycle,
}
pub mod source;
pub mod static_list;

/// The addresses of the group's machines that are not on their way out:
/// what the control plane's Node clean-up and the DNS publisher count as
/// "still here".
pub fn live_addresses(peers: &[Peer]) -> std::collections::BTreeSet<std::net::IpAddr> {
    peers
        .iter()
        .filter(|p| p.lifecycle != Lifecycle::Leaving)
        .map(|p| std::net::IpAddr::V4(p.address))
        .collect()
}
