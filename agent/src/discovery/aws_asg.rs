//! Peers from an AWS Auto Scaling group: DescribeAutoScalingGroups for the
//! members and their lifecycle, then DescribeInstances for addresses and
//! launch times. The merge ([`assemble`]) is pure.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use tracing::Instrument;

use super::error::DiscoveryError;
use super::group::GroupView;
use super::{Lifecycle, Peer};
use crate::cloud::aws::AwsClient;
use crate::cloud::aws::autoscaling::{self, AsgInstance, AutoScalingGroup};
use crate::cloud::aws::ec2::{self, Ec2Instance};

/// Lists the members of the Auto Scaling group `group_name`: every
/// member's EC2 state and address afresh.
pub async fn list_group(client: &AwsClient, group_name: &str) -> Result<GroupView, DiscoveryError> {
    list_group_with(
        client,
        group_name,
        &mut KnownInstances::default(),
        Freshness::Full,
    )
    .await
}

/// How much of EC2 a listing asks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Every member's EC2 state (a control-plane agent: it replaces etcd
    /// members whose instance EC2 is stopping, before the group notices).
    Full,
    /// Only members not known yet, or not yet settled (see
    /// [`to_describe`]): a worker needs the members' addresses, which do
    /// not change in an instance's life, and its own lifecycle, which the
    /// group's answer carries. One call per listing at rest instead of
    /// `1 + ⌈n/100⌉` for every worker of a group of n (issue 18: at 200
    /// workers the fleet's DescribeInstances alone reached EC2's refill
    /// rate of 20 a second, and it grows with n²).
    KnownAddresses,
}

/// What earlier listings learned from EC2, by instance id: settled members
/// (running, with an address, in service and healthy) only.
#[derive(Clone, Debug, Default)]
pub struct KnownInstances(HashMap<String, Ec2Instance>);

/// Lists the group, asking EC2 only about the members `freshness` needs,
/// and remembers the settled ones in `known`.
pub async fn list_group_with(
    client: &AwsClient,
    group_name: &str,
    known: &mut KnownInstances,
    freshness: Freshness,
) -> Result<GroupView, DiscoveryError> {
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
        let ids = match freshness {
            Freshness::Full => group
                .instances
                .iter()
                .map(|i| i.instance_id.clone())
                .collect(),
            Freshness::KnownAddresses => to_describe(&group, known),
        };
        let fresh = describe(client, &group, &ids).await?;
        let instances = remember(known, &group, fresh);
        let view = assemble(&group, &instances);
        tracing::debug!(
            desired = view.desired_capacity,
            members = view.peers.len(),
            described = ids.len(),
            "group listed"
        );
        Ok(view)
    }
    .instrument(span)
    .await
}

/// EC2's details of the members `ids` of `group`: by the group's tag (one
/// call for up to 1000) when they are more than one, then by id for any
/// the tag did not find (tags are eventually consistent).
async fn describe(
    client: &AwsClient,
    group: &AutoScalingGroup,
    ids: &[String],
) -> Result<Vec<Ec2Instance>, DiscoveryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    if ids.len() > 1 {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        found = ec2::describe_group_instances(client, &group.name)
            .await?
            .into_iter()
            .filter(|i| wanted.contains(i.instance_id.as_str()))
            .collect();
    }
    let missing = missing_ids(ids, &found);
    if !missing.is_empty() {
        found.extend(ec2::describe_instances(client, &missing).await?);
    }
    Ok(found)
}

/// The ids EC2's answer `found` lacks (pure).
fn missing_ids(ids: &[String], found: &[Ec2Instance]) -> Vec<String> {
    let have: HashSet<&str> = found.iter().map(|i| i.instance_id.as_str()).collect();
    ids.iter()
        .filter(|id| !have.contains(id.as_str()))
        .cloned()
        .collect()
}

/// Whether a member's EC2 details may be reused: it is in service and
/// healthy in the group's eyes, and EC2 said running with an address.
fn settled(member: &AsgInstance, ec2: &Ec2Instance) -> bool {
    member.lifecycle_state == "InService"
        && !member.health_status.eq_ignore_ascii_case("Unhealthy")
        && ec2.state == "running"
        && ec2.private_ip.is_some()
}

/// The members whose EC2 details a worker's listing asks for (pure): those
/// not known yet, and known ones that are no longer settled (the group
/// moved them out of service: EC2's state then decides `Leaving`).
pub fn to_describe(group: &AutoScalingGroup, known: &KnownInstances) -> Vec<String> {
    group
        .instances
        .iter()
        .filter(|m| !known.0.get(&m.instance_id).is_some_and(|i| settled(m, i)))
        .map(|m| m.instance_id.clone())
        .collect()
}

/// The EC2 details for this listing (`fresh` answers first, then what was
/// known), and `known` updated: members that left the group are forgotten,
/// settled ones remembered (pure).
fn remember(
    known: &mut KnownInstances,
    group: &AutoScalingGroup,
    fresh: Vec<Ec2Instance>,
) -> Vec<Ec2Instance> {
    let mut by_id: HashMap<String, Ec2Instance> = known.0.drain().collect();
    for instance in fresh {
        by_id.insert(instance.instance_id.clone(), instance);
    }
    let mut instances = Vec::with_capacity(group.instances.len());
    for member in &group.instances {
        if let Some(instance) = by_id.remove(&member.instance_id) {
            if settled(member, &instance) {
                known
                    .0
                    .insert(instance.instance_id.clone(), instance.clone());
            }
            instances.push(instance);
        }
    }
    instances
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
    use crate::cloud::aws::autoscaling::parse_describe_auto_scaling_groups;
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

    fn recorded_group() -> (AutoScalingGroup, Vec<Ec2Instance>) {
        let group = parse_describe_auto_scaling_groups(&fixture("moto_describe_asg_3.xml"))
            .expect("asg")
            .groups
            .remove(0);
        let instances = parse_describe_instances(&fixture("moto_describe_instances_3.xml"))
            .expect("ec2")
            .instances;
        (group, instances)
    }

    /// EC2's answer for `ids` only, as DescribeInstances gives it.
    fn answer(all: &[Ec2Instance], ids: &[String]) -> Vec<Ec2Instance> {
        all.iter()
            .filter(|i| ids.contains(&i.instance_id))
            .cloned()
            .collect()
    }

    #[test]
    fn a_workers_listing_describes_only_new_or_unsettled_members() {
        let (mut group, ec2) = recorded_group();
        let mut known = KnownInstances::default();
        let all: Vec<String> = group
            .instances
            .iter()
            .map(|i| i.instance_id.clone())
            .collect();

        // Nothing known: every member is described, and the view is a full one's.
        assert_eq!(to_describe(&group, &known), all);
        let first = remember(&mut known, &group, answer(&ec2, &all));
        assert_eq!(assemble(&group, &first), assemble(&group, &ec2));

        // At rest: nothing to ask EC2, and the same view from what is known.
        assert!(to_describe(&group, &known).is_empty());
        let again = remember(&mut known, &group, Vec::new());
        assert_eq!(assemble(&group, &again), assemble(&group, &ec2));

        // The group moves one out of service: it is described again, and
        // its EC2 state (stopping) decides that it is leaving.
        group.instances[1].lifecycle_state = "Terminating:Wait".into();
        let leaving = vec![group.instances[1].instance_id.clone()];
        assert_eq!(to_describe(&group, &known), leaving);
        let mut stopping = answer(&ec2, &leaving);
        stopping[0].state = "stopping".into();
        let view = assemble(&group, &remember(&mut known, &group, stopping));
        let peer = view
            .peers
            .iter()
            .find(|p| p.id == leaving[0])
            .expect("listed");
        assert_eq!(peer.lifecycle, Lifecycle::Leaving);
        assert_eq!(
            to_describe(&group, &known),
            leaving,
            "not settled: asked again"
        );

        // It leaves the group and a new member arrives: the new one is
        // described, the gone one forgotten.
        group.instances.remove(1);
        group.instances.push(AsgInstance {
            instance_id: "i-new".into(),
            lifecycle_state: "Pending".into(),
            health_status: "Healthy".into(),
            availability_zone: None,
        });
        assert_eq!(to_describe(&group, &known), ["i-new".to_string()]);
        let view = assemble(&group, &remember(&mut known, &group, Vec::new()));
        assert_eq!(view.peers.len(), 3);
        assert!(!known.0.contains_key(&leaving[0]), "forgotten");
        let new = view.peers.iter().find(|p| p.id == "i-new").expect("listed");
        assert_eq!(
            (new.lifecycle, new.address),
            (Lifecycle::Pending, Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn ids_the_tag_query_missed_are_asked_by_id() {
        let (_, ec2) = recorded_group();
        let ids: Vec<String> = ["i-late", &ec2[0].instance_id]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(missing_ids(&ids, &ec2), ["i-late".to_string()]);
        assert!(missing_ids(&ids[1..], &ec2).is_empty());
    }
}
