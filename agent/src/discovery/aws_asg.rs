//! Peers from an AWS Auto Scaling group: DescribeAutoScalingGroups for the
//! members and their lifecycle, then DescribeInstances for addresses and
//! launch times. The merge ([`assemble`]) is pure.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use tracing::Instrument;

use super::error::DiscoveryError;
use super::group::GroupView;
use super::{Lifecycle, Peer};
use crate::cloud::aws::AwsClient;
use crate::cloud::aws::autoscaling::{self, AutoScalingGroup};
use crate::cloud::aws::ec2::{self, Ec2Instance};

/// Lists the members of the Auto Scaling group `group_name`.
pub async fn list_group(client: &AwsClient, group_name: &str) -> Result<GroupView, DiscoveryError> {
    let span = tracing::info_span!(
        "discover_aws_asg",
        group = group_name,
        region = client.region()
    );
    async {
        let group = autoscaling::describe_auto_scaling_group(client, group_name)
            .await?
            .ok_or_else(|| DiscoveryError::GroupNotFound {
                kind: "aws autoscaling group",
                name: group_name.to_string(),
                location: format!("region {}", client.region()),
            })?;
        let ids: Vec<String> = group
            .instances
            .iter()
            .map(|i| i.instance_id.clone())
            .collect();
        let instances = if ids.is_empty() {
            Vec::new()
        } else {
            ec2::describe_instances(client, &ids).await?
        };
        let view = assemble(&group, &instances);
        tracing::debug!(
            desired = view.desired_capacity,
            members = view.peers.len(),
            "group listed"
        );
        Ok(view)
    }
    .instrument(span)
    .await
}

/// Merges the group's member list with EC2's instance details (pure).
/// Members EC2 does not know yet (eventual consistency) or that have no
/// private address yet are `Pending` with address `0.0.0.0`.
pub fn assemble(group: &AutoScalingGroup, instances: &[Ec2Instance]) -> GroupView {
    let by_id: HashMap<&str, &Ec2Instance> = instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i))
        .collect();
    let mut peers: Vec<Peer> = group
        .instances
        .iter()
        .map(|member| {
            let ec2 = by_id.get(member.instance_id.as_str());
            let address = ec2.and_then(|i| i.private_ip);
            let mut state = lifecycle(
                &member.lifecycle_state,
                &member.health_status,
                ec2.map(|i| i.state.as_str()),
            );
            if address.is_none() && state == Lifecycle::InService {
                state = Lifecycle::Pending;
            }
            Peer {
                id: member.instance_id.clone(),
                address: address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                launched_at_ms: ec2.and_then(|i| i.launched_at_ms),
                lifecycle: state,
            }
        })
        .collect();
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    GroupView {
        desired_capacity: group.desired_capacity,
        peers,
    }
}

/// The peer's lifecycle from the group's `LifecycleState` and
/// `HealthStatus` and, when known, EC2's instance state (pure).
///
/// Leaving wins: an unhealthy instance will be replaced, and an instance EC2
/// is stopping or terminating is gone whatever the group still says.
pub fn lifecycle(asg_state: &str, health_status: &str, ec2_state: Option<&str>) -> Lifecycle {
    if health_status.eq_ignore_ascii_case("Unhealthy")
        || matches!(
            ec2_state,
            Some("shutting-down" | "terminated" | "stopping" | "stopped")
        )
    {
        return Lifecycle::Leaving;
    }
    let group = match asg_state {
        s if s.starts_with("Pending") => Lifecycle::Pending,
        "InService" => Lifecycle::InService,
        s if s.starts_with("Terminating") => Lifecycle::Leaving,
        "Terminated" | "Detaching" | "Detached" | "EnteringStandby" | "Standby" => {
            Lifecycle::Leaving
        }
        // Warm-pool states (Warmed:*) and anything newer: not ours to guess.
        other => {
            tracing::debug!(state = other, "unknown autoscaling lifecycle state");
            Lifecycle::Unknown
        }
    };
    // EC2 may still be booting an instance the group already counts in service.
    if group == Lifecycle::InService && ec2_state == Some("pending") {
        Lifecycle::Pending
    } else {
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::aws::autoscaling::{AsgInstance, parse_describe_auto_scaling_groups};
    use crate::cloud::aws::ec2::parse_describe_instances;

    fn fixture(name: &str) -> String {
        crate::test_fixture("aws", name)
    }

    #[test]
    fn lifecycle_mapping() {
        use Lifecycle::*;
        let cases = [
            ("Pending", "Healthy", Some("pending"), Pending),
            ("Pending:Wait", "Healthy", Some("running"), Pending),
            ("Pending:Proceed", "Healthy", None, Pending),
            ("InService", "Healthy", Some("running"), InService),
            ("InService", "Healthy", Some("pending"), Pending),
            ("InService", "Unhealthy", Some("running"), Leaving),
            ("InService", "Healthy", Some("stopping"), Leaving),
            ("Terminating", "Healthy", Some("running"), Leaving),
            ("Terminating:Wait", "Healthy", Some("running"), Leaving),
            (
                "Terminating:Proceed",
                "Healthy",
                Some("shutting-down"),
                Leaving,
            ),
            ("Detaching", "Healthy", Some("running"), Leaving),
            ("EnteringStandby", "Healthy", Some("running"), Leaving),
            ("Standby", "Healthy", Some("running"), Leaving),
            ("Pending", "Unhealthy", Some("pending"), Leaving),
            ("SomethingNew", "Healthy", Some("running"), Unknown),
        ];
        for (asg, health, ec2, want) in cases {
            assert_eq!(lifecycle(asg, health, ec2), want, "{asg} {health} {ec2:?}");
        }
    }

    #[test]
    fn moto_recordings_make_three_in_service_peers() {
        let group = parse_describe_auto_scaling_groups(&fixture("moto_describe_asg_3.xml"))
            .expect("asg")
            .groups;
        let instances = parse_describe_instances(&fixture("moto_describe_instances_3.xml"))
            .expect("ec2")
            .instances;
        let view = assemble(&group[0], &instances);
        assert_eq!(view.desired_capacity, 3);
        let got: Vec<(&str, Ipv4Addr, Lifecycle)> = view
            .peers
            .iter()
            .map(|p| (p.id.as_str(), p.address, p.lifecycle))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "i-20b9c2c89ffb85711",
                    Ipv4Addr::new(10, 0, 1, 6),
                    Lifecycle::InService
                ),
                (
                    "i-693a27b9bd24ac175",
                    Ipv4Addr::new(10, 0, 1, 4),
                    Lifecycle::InService
                ),
                (
                    "i-8afabd04521fa4420",
                    Ipv4Addr::new(10, 0, 1, 5),
                    Lifecycle::InService
                ),
            ]
        );
        assert!(view.peers.iter().all(|p| p.launched_at_ms.is_some()));
    }

    #[test]
    fn members_unknown_to_ec2_are_pending_without_address() {
        let group = AutoScalingGroup {
            name: "g".into(),
            desired_capacity: 2,
            min_size: 0,
            max_size: 3,
            instances: vec![AsgInstance {
                instance_id: "i-new".into(),
                lifecycle_state: "InService".into(),
                health_status: "Healthy".into(),
                availability_zone: None,
            }],
        };
        let view = assemble(&group, &[]);
        assert_eq!(
            view.peers,
            [Peer {
                id: "i-new".into(),
                address: Ipv4Addr::UNSPECIFIED,
                launched_at_ms: None,
                lifecycle: Lifecycle::Pending
            }]
        );
    }
}
