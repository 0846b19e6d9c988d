//! assign roles — which machines run etcd, the control plane, or workloads.
//!
//! `auto` (the default): order the group's members totally — launch time,
//! then id — and give the first ones the etcd / control-plane roles. The order
//! is the same on every machine that sees the same members, which is what
//! lets them agree without talking (see docs/design/bootstrap.md). A running
//! cluster always decides first: that part lives in `formation`.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::discovery::Peer;

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Control plane; also an etcd member when etcd is stacked.
    ControlPlane,
    /// A dedicated etcd member (etcd placement `dedicated`).
    Etcd,
    /// Runs workloads only.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Etcd => "etcd",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shape the config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub control_plane_count: usize,
    /// `None`: etcd runs on the control-plane nodes (stacked).
    /// `Some(n)`: `n` dedicated etcd nodes.
    pub dedicated_etcd_count: Option<usize>,
}

impl Topology {
    /// How many etcd members the cluster wants.
    pub fn etcd_members(&self) -> usize {
        self.dedicated_etcd_count
            .unwrap_or(self.control_plane_count)
    }

    /// Does a node with this role run an etcd member?
    pub fn runs_etcd(&self, role: Role) -> bool {
        match role {
            Role::Etcd => true,
            Role::ControlPlane => self.dedicated_etcd_count.is_none(),
            Role::Worker => false,
        }
    }
}

/// The total order every agent uses: earliest launch first (unknown launch
/// times last), then id. Ties on launch time are common (one scaling action
/// launches many instances at the same instant), so the id breaks them.
/// Peers without a launch time (static lists, DNS) go by address as a
/// number: their id is the address as text, where 10.0.0.100 would come
/// before 10.0.0.11.
pub fn compare(a: &Peer, b: &Peer) -> Ordering {
    let launch = |p: &Peer| p.launched_at_ms.unwrap_or(u64::MAX);
    launch(a)
        .cmp(&launch(b))
        .then_with(|| match (a.launched_at_ms, b.launched_at_ms) {
            (None, None) => a.address.cmp(&b.address),
            _ => Ordering::Equal,
        })
        .then_with(|| a.id.cmp(&b.id))
}

/// The members that may hold roles, in the total order. Machines on their way
/// out are not candidates.
pub fn candidates(view: &[Peer]) -> Vec<&Peer> {
    let mut c: Vec<&Peer> = view.iter().filter(|p| p.lifecycle.is_up()).collect();
    c.sort_by(|a, b| compare(a, b));
    c.dedup_by(|a, b| a.id == b.id);
    c
}

/// The role `auto` gives the node `me` in `view`: dedicated etcd nodes first,
/// then control plane, then workers. `None` when `me` is not in the view.
pub fn auto_role(topology: Topology, view: &[Peer], me: &str) -> Option<Role> {
    let position = candidates(view).iter().position(|p| p.id == me)?;
    let etcd = topology.dedicated_etcd_count.unwrap_or(0);
    Some(if position < etcd {
        Role::Etcd
    } else if position < etcd + topology.control_plane_count {
        Role::ControlPlane
    } else {
        Role::Worker
    })
}

/// The first etcd members of `view` in the total order: the set that forms a
/// new cluster when none exists (`formation` decides when that may happen).
pub fn formation_set(topology: Topology, view: &[Peer]) -> Vec<Peer> {
    candidates(view)
        .into_iter()
        .take(topology.etcd_members())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Lifecycle;
    use std::net::Ipv4Addr;

    fn peer(id: &str, launched: Option<u64>) -> Peer {
        Peer {
            id: id.into(),
            address: Ipv4Addr::new(10, 0, 0, 1),
            launched_at_ms: launched,
            lifecycle: Lifecycle::InService,
        }
    }

    #[test]
    fn order_is_launch_time_then_id_with_unknown_times_last() {
        let view = vec![
            peer("c", Some(5)),
            peer("b", None),
            peer("a", Some(5)),
            peer("d", Some(1)),
        ];
        let ids: Vec<_> = candidates(&view).iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids, ["d", "a", "c", "b"]);
    }

    #[test]
    fn static_peers_go_by_address_as_a_number() {
        let at = |last: u8| Peer {
            id: format!("10.0.0.{last}"),
            address: Ipv4Addr::new(10, 0, 0, last),
            launched_at_ms: None,
            lifecycle: Lifecycle::Unknown,
        };
        let view = vec![at(100), at(11), at(9), at(12)];
        let ids: Vec<_> = candidates(&view).iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids, ["10.0.0.9", "10.0.0.11", "10.0.0.12", "10.0.0.100"]);
    }

    #[test]
    fn stacked_topology_gives_first_three_the_control_plane() {
        let t = Topology {
            control_plane_count: 3,
            dedicated_etcd_count: None,
        };
        let view: Vec<_> = ["e", "d", "c", "b", "a"]
            .iter()
            .map(|id| peer(id, Some(1)))
            .collect();
        let roles: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|id| auto_role(t, &view, id))
            .collect();
        assert_eq!(
            roles,
            [
                Some(Role::ControlPlane),
                Some(Role::ControlPlane),
                Some(Role::ControlPlane),
                Some(Role::Worker),
                Some(Role::Worker)
            ]
        );
        assert!(t.runs_etcd(Role::ControlPlane));
        assert_eq!(formation_set(t, &view).len(), 3);
        assert_eq!(auto_role(t, &view, "zz"), None);
    }

    #[test]
    fn dedicated_etcd_comes_first_and_control_plane_does_not_run_etcd() {
        let t = Topology {
            control_plane_count: 3,
            dedicated_etcd_count: Some(3),
        };
        let view: Vec<_> = (0..8).map(|i| peer(&format!("n{i}"), Some(i))).collect();
        let roles: Vec<_> = (0..8)
            .map(|i| auto_role(t, &view, &format!("n{i}")))
            .collect();
        assert_eq!(roles[..3], [Some(Role::Etcd); 3]);
        assert_eq!(roles[3..6], [Some(Role::ControlPlane); 3]);
        assert_eq!(roles[6..], [Some(Role::Worker); 2]);
        assert!(!t.runs_etcd(Role::ControlPlane));
        let ids: Vec<_> = formation_set(t, &view).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["n0", "n1", "n2"]);
    }

    #[test]
    fn leaving_machines_are_not_candidates_and_duplicates_count_once() {
        let mut gone = peer("a", Some(0));
        gone.lifecycle = Lifecycle::Leaving;
        let view = vec![
            gone,
            peer("b", Some(1)),
            peer("b", Some(1)),
            peer("c", Some(2)),
        ];
        let ids: Vec<_> = candidates(&view).iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids, ["b", "c"]);
    }
}
