//! network — boot phase 9: the pod network. Built: `kubernetes.cni:
//! bridge` (`bridge.rs` renders the CNI config from the node's podCIDR,
//! `routes.rs` plans the routes to the other nodes' pods; the node round in
//! `kubernetes::node` applies both; `after_reboot.rs` clears what the CNI
//! plugins kept for sandboxes of an earlier boot). Cilium and Calico are not run here:
//! their images cannot be pulled on the build machines.

pub mod after_reboot;
pub mod bridge;
pub mod routes;

use crate::netlink::{Netlink, NetlinkError};
use routes::RouteChange;

/// Carries out one planned route change.
pub async fn apply_route(change: &RouteChange) -> Result<(), NetlinkError> {
    let nl = Netlink::open()?;
    match *change {
        RouteChange::Add { pod_cidr, gateway } => {
            nl.replace_route(pod_cidr.network(), pod_cidr.prefix_len(), gateway)
                .await
        }
        RouteChange::Remove { pod_cidr, gateway } => {
            nl.delete_route(pod_cidr.network(), pod_cidr.prefix_len(), gateway)
                .await
        }
    }
}
