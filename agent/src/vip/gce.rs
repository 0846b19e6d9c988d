//! GCE mode: VPCs have no shared L2, so gratuitous ARP moves nothing. The
//! VIP is an alias IP range (a /32) of the holder's network interface,
//! moved with `instances.updateNetworkInterface`; the holder also puts the
//! /32 on its own interface so the kernel accepts the traffic (the Google
//! guest agent would add a local route; the image does not run it).
//!
//! Unlike AWS, Google refuses a range that another interface still has
//! (`IP_IN_USE_BY_ANOTHER_RESOURCE`), and a stopped instance keeps its
//! ranges. So the new holder first takes the VIP off every other instance
//! that lists it (stale-holder eviction: a crashed or powered-off holder
//! never gives it back), then adds it to its own interface. Each change is
//! guarded by the interface's fingerprint (412 when someone changed it in
//! between: read again, redo) and is done when its zonal operation is.
//!
//! `release` only removes the local address: quick and local, as S4 wants.
//! The VPC may route the VIP here until the next holder moves it, and this
//! node answers none of it.
//!
//! Limits (Google's): an alias range comes from the interface's subnet, so
//! every control-plane instance must sit in the VIP's subnet (one region;
//! zones of that region are fine).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::address::LocalAddress;
use super::mover::{Mover, MoverError, Takeover};
use crate::cloud::gce::alias::{self, AliasRange, InstanceNics, InstanceRef, Nic};
use crate::cloud::gce::{GceClient, GceError};

/// How long one alias change may take before the takeover is given up
/// (Google documents no bound; moves take seconds, see docs/design/vip.md).
const OPERATION_LIMIT: Duration = Duration::from_secs(90);
/// Reads and writes of one interface before a fingerprint race is an error.
const FINGERPRINT_ATTEMPTS: u32 = 4;
/// Evict-then-take rounds before a range still in use is an error.
const TAKE_ATTEMPTS: u32 = 3;

/// The interface of `instance` that carries `node_ip`, else its first (pure).
pub fn own_nic(instance: &InstanceNics, node_ip: Ipv4Addr) -> Result<&Nic, String> {
    instance
        .nics
        .iter()
        .find(|n| n.network_ip == Some(node_ip))
        .or_else(|| instance.nics.first())
        .ok_or_else(|| format!("instance {} has no network interface", instance.instance))
}

/// Every interface of another instance that still lists `vip` (pure).
pub fn stale_holders(
    instances: &[InstanceNics],
    own: &InstanceRef,
    vip: Ipv4Addr,
) -> Vec<(InstanceRef, String)> {
    instances
        .iter()
        .filter(|i| i.instance != *own)
        .flat_map(|i| {
            i.nics
                .iter()
                .filter(|n| n.holds(vip))
                .map(|n| (i.instance.clone(), n.name.clone()))
        })
        .collect()
}

/// Whether Google refused a range because another interface has it.
pub fn in_use_elsewhere(e: &GceError) -> bool {
    match e {
        GceError::Api {
            reason, message, ..
        } => {
            reason.as_deref().is_some_and(|r| r.contains("IN_USE"))
                || message.contains("already being used")
                || message.contains("already in use")
        }
        _ => false,
    }
}

/// Where this instance is, read once from the metadata server.
pub async fn locate(client: &GceClient) -> Result<InstanceRef, GceError> {
    let project = client.metadata_value("project/project-id").await?;
    let zone = client.metadata_value("instance/zone").await?;
    let name = client.metadata_value("instance/name").await?;
    let zone = alias::zone_name(&zone).ok_or_else(|| GceError::Config {
        what: format!("the metadata server's instance/zone {zone:?} names no zone"),
    })?;
    Ok(InstanceRef {
        project,
        zone,
        name,
    })
}

/// Sets the alias ranges of `instance`'s interface `nic` to
/// `change(current)`, re-reading on fingerprint conflicts; `None` from
/// `change` means nothing to do. Waits for the operation.
async fn edit(
    client: &GceClient,
    instance: &InstanceRef,
    nic_name: &str,
    change: impl Fn(&Nic) -> Option<Vec<AliasRange>>,
) -> Result<bool, GceError> {
    let call = "instances.updateNetworkInterface";
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = alias::get(client, instance).await?;
        let nic = current
            .nics
            .iter()
            .find(|n| n.name == nic_name)
            .ok_or_else(|| GceError::Parse {
                call: "instances.get".into(),
                url: instance.to_string(),
                cause: format!("no network interface {nic_name}"),
            })?;
        let Some(ranges) = change(nic) else {
            return Ok(false);
        };
        let op = match alias::update(client, instance, nic, &ranges).await {
            Ok(op) => op,
            // Someone changed the interface since we read it.
            Err(e) if e.status() == Some(412) && attempt < FINGERPRINT_ATTEMPTS => {
                debug!(%instance, "vip: fingerprint changed under us; reading again");
                continue;
            }
            Err(e) => return Err(e),
        };
        match alias::wait(client, &instance.project, op, call, OPERATION_LIMIT).await {
            Err(e) if e.status() == Some(412) && attempt < FINGERPRINT_ATTEMPTS => continue,
            other => return other.map(|()| true),
        }
    }
}

/// Moves `vip` onto `own`'s interface (the one carrying `node_ip`): first
/// off every other instance that lists it, then onto this one, each change
/// waited for. Returns how many stale holders were evicted.
pub async fn take(
    client: &GceClient,
    own: &InstanceRef,
    node_ip: Ipv4Addr,
    vip: Ipv4Addr,
) -> Result<usize, GceError> {
    let nic_name = {
        let current = alias::get(client, own).await?;
        own_nic(&current, node_ip)
            .map_err(|cause| GceError::Parse {
                call: "instances.get".into(),
                url: own.to_string(),
                cause,
            })?
            .name
            .clone()
    };
    let mut evicted = 0;
    let mut round = 0;
    loop {
        round += 1;
        let all = alias::list_all(client, &own.project).await?;
        for (instance, nic) in stale_holders(&all, own, vip) {
            info!(%instance, nic, "vip: taking the VIP off another instance");
            let changed = edit(client, &instance, &nic, |n| {
                n.holds(vip).then(|| n.without(vip))
            })
            .await?;
            evicted += usize::from(changed);
        }
        let taken = edit(client, own, &nic_name, |n| {
            (!n.holds(vip)).then(|| n.with(vip))
        })
        .await;
        match taken {
            Ok(_) => return Ok(evicted),
            // A holder appeared (or an eviction had not settled): again.
            Err(e) if in_use_elsewhere(&e) && round < TAKE_ATTEMPTS => {
                debug!("vip: the VIP is still in use elsewhere: {e}");
            }
            Err(e) => return Err(e),
        }
    }
}

/// See the module docs.
pub struct GceMover {
    vip: Ipv4Addr,
    node_ip: Ipv4Addr,
    address: LocalAddress,
    client: Arc<GceClient>,
    own: Option<InstanceRef>,
}

impl GceMover {
    /// `interface`: where the /32 goes locally (default: the one holding
    /// `node_ip`).
    pub async fn new(
        vip: Ipv4Addr,
        client: Arc<GceClient>,
        interface: Option<&str>,
        node_ip: Ipv4Addr,
    ) -> Result<GceMover, MoverError> {
        let address = LocalAddress::open(vip, interface, node_ip).await?;
        Ok(GceMover {
            vip,
            node_ip,
            address,
            client,
            own: None,
        })
    }

    async fn own_instance(&mut self) -> Result<InstanceRef, GceError> {
        if let Some(own) = &self.own {
            return Ok(own.clone());
        }
        let own = locate(&self.client).await?;
        debug!(instance = %own, "vip: gce mover found its instance");
        Ok(self.own.insert(own).clone())
    }
}

impl Mover for GceMover {
    async fn acquire(&mut self, takeover: Takeover) -> Result<(), MoverError> {
        let started = Instant::now();
        let gce = |e| MoverError::Gce(Box::new(e));
        let own = self.own_instance().await.map_err(gce)?;
        let evicted = take(&self.client, &own, self.node_ip, self.vip)
            .await
            .map_err(gce)?;
        self.address.set(takeover.lifetime_secs()).await?;
        info!(
            seconds = started.elapsed().as_secs_f64(),
            evicted, "vip: alias IP range moved here"
        );
        Ok(())
    }

    async fn announce(&mut self) -> Result<(), MoverError> {
        // The VPC's mapping is the announcement; nothing to repeat.
        Ok(())
    }

    async fn refresh(&mut self) -> Result<(), MoverError> {
        self.address.renew()
    }

    async fn release(&mut self) -> Result<(), MoverError> {
        self.address.remove().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 100);

    fn instance(zone: &str, name: &str, ip: [u8; 4], ranges: &[&str]) -> InstanceNics {
        InstanceNics {
            instance: InstanceRef {
                project: "p".into(),
                zone: zone.into(),
                name: name.into(),
            },
            status: "RUNNING".into(),
            nics: vec![Nic {
                name: "nic0".into(),
                fingerprint: "fp".into(),
                network_ip: Some(Ipv4Addr::from(ip)),
                alias_ranges: ranges
                    .iter()
                    .map(|r| AliasRange {
                        ip_cidr_range: r.to_string(),
                        subnetwork_range_name: None,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn stale_holders_are_the_other_instances_with_the_vip() {
        let all = [
            instance("a", "me", [10, 128, 0, 2], &["10.128.0.100/32"]),
            instance("a", "old", [10, 128, 0, 3], &["10.128.0.100"]),
            instance("b", "other", [10, 128, 0, 4], &["10.4.0.0/24"]),
            instance("b", "me", [10, 128, 0, 5], &["10.128.0.100/32"]),
        ];
        let own = all[0].instance.clone();
        let stale = stale_holders(&all, &own, VIP);
        let names: Vec<String> = stale.iter().map(|(i, _)| i.to_string()).collect();
        // Same name in another zone is another instance.
        assert_eq!(
            names,
            [
                "projects/p/zones/a/instances/old",
                "projects/p/zones/b/instances/me"
            ]
        );
        assert!(stale_holders(&all[2..3], &own, VIP).is_empty());
    }

    #[test]
    fn the_own_interface_is_the_one_with_the_node_address() {
        let mut i = instance("a", "me", [10, 128, 0, 2], &[]);
        let mut second = i.nics[0].clone();
        second.name = "nic1".into();
        second.network_ip = Some(Ipv4Addr::new(10, 1, 0, 2));
        i.nics.push(second);
        let pick = |i: &InstanceNics, ip| own_nic(i, ip).map(|n| n.name.clone());
        assert_eq!(pick(&i, Ipv4Addr::new(10, 1, 0, 2)), Ok("nic1".into()));
        assert_eq!(pick(&i, Ipv4Addr::new(10, 9, 9, 9)), Ok("nic0".into()));
        i.nics.clear();
        assert!(pick(&i, Ipv4Addr::new(10, 1, 0, 2)).is_err());
    }

    #[test]
    fn in_use_is_read_from_the_code_or_the_message() {
        let api = |reason: Option<&str>, message: &str| GceError::Api {
            call: "instances.updateNetworkInterface".into(),
            url: "u".into(),
            status: 400,
            reason: reason.map(str::to_string),
            message: message.into(),
            attempts: 1,
            elapsed: Duration::ZERO,
        };
        assert!(in_use_elsewhere(&api(
            Some("IP_IN_USE_BY_ANOTHER_RESOURCE"),
            "x"
        )));
        assert!(in_use_elsewhere(&api(
            Some("invalid"),
            "IP '10.128.0.100' is already being used by another resource."
        )));
        assert!(!in_use_elsewhere(&api(
            Some("conditionNotMet"),
            "fingerprint"
        )));
    }
}
