//! AWS mode: VPCs have no shared L2, so gratuitous ARP moves nothing. The
//! VIP is a secondary private IP of the holder's primary network interface
//! (ENI): the new holder takes it with AssignPrivateIpAddresses and
//! `AllowReassignment`, which moves it off the old holder's ENI inside the
//! VPC, and puts the /32 on its own interface so the kernel accepts it.
//!
//! Limits (AWS's, not ours): a secondary IP belongs to one subnet, so every
//! control-plane node must sit in the VIP's subnet (one availability zone).
//! Spreading over zones needs a route-table entry moved between ENIs or a
//! load balancer's targets; neither is built.
//!
//! `release` only removes the local address: quick and local, as S4 wants.
//! The VPC may route the VIP here a little longer, and this node answers
//! none of it. After taking the IP, the holder also takes it off any other
//! ENI of the subnet that still lists it (AWS does that itself; moto, the
//! test emulator, does not, and an operator's manual assignment might).

use std::net::Ipv4Addr;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::address::LocalAddress;
use super::mover::{Mover, MoverError, Takeover};
use crate::cloud::aws::network_interfaces::{self as eni, NetworkInterface};
use crate::cloud::aws::{AwsError, InstanceSession};

/// This instance's primary interface, as EC2 knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnInterface {
    pub id: String,
    pub subnet_id: String,
}

/// The primary ENI (device index 0) of `instance_id` among `enis` (pure).
pub fn primary_interface(
    enis: &[NetworkInterface],
    instance_id: &str,
) -> Result<OwnInterface, String> {
    let primary = enis
        .iter()
        .find(|e| e.instance_id.as_deref() == Some(instance_id) && e.device_index == Some(0))
        .ok_or_else(|| {
            format!("instance {instance_id} has no network interface at device index 0")
        })?;
    let subnet_id = primary
        .subnet_id
        .clone()
        .ok_or_else(|| format!("network interface {} has no subnet", primary.id))?;
    Ok(OwnInterface {
        id: primary.id.clone(),
        subnet_id,
    })
}

/// The other interfaces still holding `vip` (pure).
pub fn stale_holders(enis: &[NetworkInterface], mine: &str, vip: Ipv4Addr) -> Vec<String> {
    enis.iter()
        .filter(|e| e.id != mine && e.holds(vip))
        .map(|e| e.id.clone())
        .collect()
}

/// See the module docs.
pub struct AwsMover {
    vip: Ipv4Addr,
    instance_id: String,
    address: LocalAddress,
    aws: Arc<InstanceSession>,
    own: Option<OwnInterface>,
}

fn aws_err(e: AwsError) -> MoverError {
    MoverError::Aws(Box::new(e))
}

impl AwsMover {
    /// `interface`: where the /32 goes locally (default: the one holding
    /// `node_ip`).
    pub async fn new(
        vip: Ipv4Addr,
        instance_id: String,
        aws: Arc<InstanceSession>,
        interface: Option<&str>,
        node_ip: Ipv4Addr,
    ) -> Result<AwsMover, MoverError> {
        let address = LocalAddress::open(vip, interface, node_ip).await?;
        Ok(AwsMover {
            vip,
            instance_id,
            address,
            aws,
            own: None,
        })
    }

    /// This instance's primary ENI, looked up once.
    async fn own_interface(&mut self) -> Result<OwnInterface, MoverError> {
        if let Some(own) = &self.own {
            return Ok(own.clone());
        }
        let client = self.aws.client().await.map_err(aws_err)?;
        let enis =
            eni::describe_network_interfaces(client, "attachment.instance-id", &self.instance_id)
                .await
                .map_err(aws_err)?;
        let own = primary_interface(&enis, &self.instance_id).map_err(MoverError::Cloud)?;
        debug!(eni = %own.id, subnet = %own.subnet_id, "vip: aws mover found its interface");
        Ok(self.own.insert(own).clone())
    }

    /// Takes the VIP off every other ENI of the subnet. Best effort: the
    /// VIP already answers here.
    async fn evict_stale(&self, own: &OwnInterface) -> Result<(), AwsError> {
        let client = self.aws.client().await?;
        let enis = eni::describe_network_interfaces(client, "subnet-id", &own.subnet_id).await?;
        for stale in stale_holders(&enis, &own.id, self.vip) {
            info!(eni = %stale, "vip: taking the VIP off another network interface");
            eni::unassign_private_ip(client, &stale, self.vip).await?;
        }
        Ok(())
    }
}

impl Mover for AwsMover {
    async fn acquire(&mut self, takeover: Takeover) -> Result<(), MoverError> {
        let own = self.own_interface().await?;
        let client = self.aws.client().await.map_err(aws_err)?;
        eni::assign_private_ip(client, &own.id, self.vip)
            .await
            .map_err(aws_err)?;
        self.address.set(takeover.lifetime_secs()).await?;
        if let Err(e) = self.evict_stale(&own).await {
            warn!("vip: could not check other interfaces for the VIP: {e}");
        }
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

    fn eni(
        id: &str,
        instance: Option<&str>,
        index: Option<u32>,
        ips: &[[u8; 4]],
    ) -> NetworkInterface {
        NetworkInterface {
            id: id.into(),
            subnet_id: Some("subnet-1".into()),
            instance_id: instance.map(str::to_string),
            device_index: index,
            private_ips: ips.iter().map(|o| Ipv4Addr::from(*o)).collect(),
        }
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);

    #[test]
    fn the_primary_interface_is_device_zero_of_this_instance() {
        let enis = [
            eni("eni-b", Some("i-1"), Some(1), &[[10, 0, 1, 9]]),
            eni("eni-a", Some("i-1"), Some(0), &[[10, 0, 1, 4]]),
            eni("eni-c", Some("i-2"), Some(0), &[[10, 0, 1, 5]]),
        ];
        let own = primary_interface(&enis, "i-1").expect("found");
        assert_eq!(own.id, "eni-a");
        assert_eq!(own.subnet_id, "subnet-1");
        let e = primary_interface(&enis[..1], "i-1").unwrap_err();
        assert!(e.contains("i-1") && e.contains("device index 0"), "{e}");
        let mut no_subnet = enis[1].clone();
        no_subnet.subnet_id = None;
        assert!(
            primary_interface(&[no_subnet], "i-1")
                .unwrap_err()
                .contains("eni-a")
        );
    }

    #[test]
    fn only_other_interfaces_with_the_vip_are_stale() {
        let enis = [
            eni(
                "eni-a",
                Some("i-1"),
                Some(0),
                &[[10, 0, 1, 4], [10, 0, 1, 100]],
            ),
            eni(
                "eni-b",
                Some("i-2"),
                Some(0),
                &[[10, 0, 1, 5], [10, 0, 1, 100]],
            ),
            eni("eni-c", Some("i-3"), Some(0), &[[10, 0, 1, 6]]),
            eni("eni-d", None, None, &[[10, 0, 1, 100]]),
        ];
        assert_eq!(stale_holders(&enis, "eni-a", VIP), vec!["eni-b", "eni-d"]);
        assert!(stale_holders(&enis[2..3], "eni-a", VIP).is_empty());
    }
}
