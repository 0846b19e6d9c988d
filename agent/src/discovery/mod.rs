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
    /// On its way out for good (terminating, deleting, detaching,
    /// unhealthy and about to be replaced).
    Leaving,
    /// Stopped or suspended, disk kept: it may start again (GCE
    /// `TERMINATED`, `SUSPENDED`...). Down, so it takes no role now, but
    /// still in its group: its etcd seat is kept like an unreachable
    /// voter's (fault campaign seed 0x323591372c: a stopped member taken
    /// for gone was removed, came back as a learner, and a second loss
    /// before its promotion left two voters without quorum).
    Stopped,
    /// The source does not say (static lists, DNS).
    Unknown,
}

impl Lifecycle {
    /// Whether the machine runs and may hold a role (or be probed) now.
    pub fn is_up(self) -> bool {
        !matches!(self, Lifecycle::Leaving | Lifecycle::Stopped)
    }
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

/// The group's addresses, split by whether the machine is on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupAddresses {
    /// Machines that stay ([`live_addresses`]).
    pub live: std::collections::BTreeSet<std::net::IpAddr>,
    /// Machines being terminated on purpose (`Lifecycle::Leaving`).
    pub leaving: std::collections::BTreeSet<std::net::IpAddr>,
}

impl GroupAddresses {
    pub fn of(peers: &[Peer]) -> GroupAddresses {
        GroupAddresses {
            live: live_addresses(peers),
            leaving: peers
                .iter()
                .filter(|p| p.lifecycle == Lifecycle::Leaving)
                .map(|p| std::net::IpAddr::V4(p.address))
                .collect(),
        }
    }
}

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
