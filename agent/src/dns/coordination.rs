//! How the agents agree on DNS through etcd: every node registers its name
//! and address, and one elected node (the publisher) writes the zone, so a
//! 500-node cluster makes one writer's API calls, not 500.
//!
//! Keys: `/muster/dns/nodes/<hostname>` → `{"ip":…,"controlPlane":…}` (no
//! lease: a node that is merely slow keeps its record; its machine leaving
//! the group removes it), and `/muster/dns/publisher` → the publisher's
//! address under a lease it keeps alive.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use serde::{Deserialize, Serialize};

use crate::vip::election::{Expect, KeyView};
use crate::vip::lease::{EtcdAccess, LeaseError, Store};

pub const NODES_PREFIX: &str = "/muster/dns/nodes/";
pub const PUBLISHER_KEY: &str = "/muster/dns/publisher";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node registers about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    pub ip: IpAddr,
    pub control_plane: bool,
}

/// The API name's targets: the VIP when there is one, else every
/// registered control-plane node still in the group. Pure.
pub fn api_targets(
    vip: Option<IpAddr>,
    entries: &BTreeMap<String, NodeEntry>,
    group: &BTreeSet<IpAddr>,
) -> BTreeSet<IpAddr> {
    match vip {
        Some(vip) => [vip].into(),
        None => entries
            .values()
            .filter(|e| e.control_plane && group.contains(&e.ip))
            .map(|e| e.ip)
            .collect(),
    }
}

/// The nodes that get a name: registered and still in the group. Pure.
pub fn named_nodes(
    entries: &BTreeMap<String, NodeEntry>,
    group: &BTreeSet<IpAddr>,
) -> BTreeMap<String, IpAddr> {
    entries
        .iter()
        .filter(|(_, e)| group.contains(&e.ip))
        .map(|(h, e)| (h.clone(), e.ip))
        .collect()
}

/// Registrations whose machine left the group: forgotten by the publisher
/// (a node that is still there re-registers on its next tick). Pure.
pub fn departed(entries: &BTreeMap<String, NodeEntry>, group: &BTreeSet<IpAddr>) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, e)| !group.contains(&e.ip))
        .map(|(h, _)| h.clone())
        .collect()
}

/// This node's link to etcd for DNS.
pub struct Coordinator {
    client: Client,
    election: Store,
    me: String,
    lease: Option<i64>,
}

impl Coordinator {
    pub async fn connect(access: &EtcdAccess, me: String) -> Result<Coordinator, LeaseError> {
        let election =
            Store::connect(access, PUBLISHER_KEY.to_string(), me.clone(), CALL_TIMEOUT).await?;
        let client = Client::connect(
            access.endpoints.clone(),
            Some(access.options(crate::vip::lease::CONNECT_TIMEOUT)),
        )
        .await
        .map_err(|source| LeaseError::Rpc {
            endpoints: access.endpoints.join(","),
            op: "connect",
            source,
        })?;
        Ok(Coordinator {
            client,
            election,
            me,
            lease: None,
        })
    }

    fn rpc(&self, op: &'static str) -> impl FnOnce(etcd_client::Error) -> LeaseError + '_ {
        move |source| LeaseError::Rpc {
            endpoints: "dns registrations".into(),
            op,
            source,
        }
    }

    /// Writes this node's entry unless it is already there as it should be.
    pub async fn register(&mut self, hostname: &str, entry: &NodeEntry) -> Result<(), LeaseError> {
        let key = format!("{NODES_PREFIX}{hostname}");
        let value = serde_json::to_string(entry).unwrap_or_default();
        let current = self
            .client
            .get(key.as_str(), None)
            .await
            .map_err(self.rpc("get"))?;
        if current.kvs().first().map(|kv| kv.value()) != Some(value.as_bytes()) {
            self.client
                .put(key, value, None)
                .await
                .map_err(self.rpc("put"))?;
        }
        Ok(())
    }

    pub async fn forget(&mut self, hostname: &str) -> Result<(), LeaseError> {
        let key = format!("{NODES_PREFIX}{hostname}");
        self.client
            .delete(key, None)
            .await
            .map_err(self.rpc("delete"))?;
        Ok(())
    }

    /// Every registration; unreadable entries are skipped.
    pub async fn entries(&mut self) -> Result<BTreeMap<String, NodeEntry>, LeaseError> {
        let r = self
            .client
            .get(NODES_PREFIX, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(self.rpc("get"))?;
        Ok(r.kvs()
            .iter()
            .filter_map(|kv| {
                let host = kv.key_str().ok()?.strip_prefix(NODES_PREFIX)?.to_string();
                Some((host, serde_json::from_slice(kv.value()).ok()?))
            })
            .collect())
    }

    /// One election step: `Ok(None)` when this node publishes, else the
    /// publisher's address (`Some("")` while nobody does).
    pub async fn elect(&mut self, lease_ttl_secs: i64) -> Result<Option<String>, LeaseError> {
        match self.election.read().await? {
            KeyView::Held { holder, lease, .. }
                if holder == self.me && Some(lease) == self.lease =>
            {
                if self.election.keep_alive(lease).await? {
                    Ok(None)
                } else {
                    self.lease = None;
                    Ok(Some(String::new()))
                }
            }
            // Ours from a previous run of this agent, or someone else's:
            // wait for its lease to end.
            KeyView::Held { holder, .. } => Ok(Some(holder)),
            KeyView::Absent => {
                let lease = match self.lease {
                    Some(l) if self.election.keep_alive(l).await? => l,
                    _ => self.election.grant(lease_ttl_secs).await?.0,
                };
                self.lease = Some(lease);
                match self.election.claim(Expect::Absent, lease).await? {
                    Some(_) => Ok(None),
                    None => Ok(Some(String::new())),
                }
            }
        }
    }

    /// Gives up publishing at once (clean shutdown).
    pub async fn resign(&mut self) {
        if let Some(lease) = self.lease.take() {
            let _ = self.election.revoke(lease).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> BTreeMap<String, NodeEntry> {
        let e = |ip: &str, cp| NodeEntry {
            ip: ip.parse().expect("ip"),
            control_plane: cp,
        };
        [
            ("cp-1".to_string(), e("10.0.0.1", true)),
            ("cp-2".to_string(), e("10.0.0.2", true)),
            ("w-1".to_string(), e("10.0.0.3", false)),
        ]
        .into()
    }

    #[test]
    fn the_api_name_is_the_vip_or_the_control_plane_still_in_the_group() {
        let group: BTreeSet<IpAddr> = ["10.0.0.1", "10.0.0.3"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        let vip = "10.0.0.100".parse().ok();
        assert_eq!(
            api_targets(vip, &entries(), &group),
            [vip.expect("vip")].into()
        );
        assert_eq!(
            api_targets(None, &entries(), &group),
            ["10.0.0.1".parse().expect("ip")].into()
        );
        assert_eq!(
            named_nodes(&entries(), &group).keys().collect::<Vec<_>>(),
            ["cp-1", "w-1"]
        );
        assert_eq!(departed(&entries(), &group), ["cp-2"]);
    }
}
