//! Peers from a GCE managed instance group: `instanceGroupManagers.get` for
//! the target size and the instances' name prefix, `listManagedInstances`
//! for the members and what the group is doing to each, then the members'
//! address and creation time from one `instances.aggregatedList` filtered
//! by that prefix (`instances.get` for any it lacks). The merge
//! ([`assemble`]) is pure.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use tracing::Instrument;

use super::error::DiscoveryError;
use super::group::GroupView;
use super::{Lifecycle, Peer};
use crate::cloud::gce::GceClient;
use crate::cloud::gce::compute::{self, ComputeInstance, ManagedInstance, MigRef};

/// The group an instance belongs to, from its `created-by` metadata
/// attribute (`projects/N/zones/Z/instanceGroupManagers/NAME`, or
/// `regions/R/...` for a regional group) and its project id; `name`
/// replaces the group's name (`discovery.cloudGroup.name`). Pure.
pub fn mig_from_created_by(created_by: &str, project: &str, name: Option<&str>) -> Option<MigRef> {
    let parts: Vec<&str> = created_by.trim().trim_matches('/').split('/').collect();
    let at = parts.iter().position(|p| *p == "instanceGroupManagers")?;
    let own_name = parts.get(at + 1).filter(|n| !n.is_empty())?;
    let location = match (parts.get(at.checked_sub(2)?), parts.get(at - 1)) {
        (Some(&"zones"), Some(z)) if !z.is_empty() => compute::MigLocation::Zone(z.to_string()),
        (Some(&"regions"), Some(r)) if !r.is_empty() => compute::MigLocation::Region(r.to_string()),
        _ => return None,
    };
    Some(MigRef {
        project: project.to_string(),
        location,
        name: name.unwrap_or(own_name).to_string(),
    })
}

/// Lists the members of the managed instance group `mig`.
pub async fn list_group(client: &GceClient, mig: &MigRef) -> Result<GroupView, DiscoveryError> {
    let span = tracing::info_span!("discover_gce_mig", group = %mig);
    async {
        let manager = match compute::get_instance_group_manager(client, mig).await {
            Ok(m) => m,
            Err(e) if e.status() == Some(404) => {
                return Err(DiscoveryError::GroupNotFound {
                    kind: "gce managed instance group",
                    name: mig.name.clone(),
                    location: mig.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let members = compute::list_managed_instances(client, mig).await?;
        let exists_yet = |m: &ManagedInstance| {
            m.instance_status.is_some() || !m.current_action.starts_with("CREATING")
        };
        let existing = members.iter().filter(|m| exists_yet(m)).count();
        // The group's instances in one list (by their names' prefix); a
        // member it misses is fetched by itself.
        let mut listed = match manager.base_instance_name.as_deref() {
            Some(base) if existing > 1 => listed_by_id(client, &mig.project, base).await?,
            _ => HashMap::new(),
        };
        let mut details = Vec::with_capacity(members.len());
        for m in &members {
            let found = m.id.as_ref().and_then(|id| listed.remove(id));
            details.push(match found {
                Some(instance) => Some(instance),
                None if exists_yet(m) => compute::get_instance(client, &m.instance_url).await?,
                None => None,
            });
        }
        let view = assemble(manager.target_size, &members, &details);
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

/// The group's instances by id, from one filtered list. Without the
/// permission to list (`compute.instances.list`; `get` is enough for the
/// per-member fallback), an empty map: every member is then fetched by
/// itself, as before, which costs a call per member.
async fn listed_by_id(
    client: &GceClient,
    project: &str,
    base: &str,
) -> Result<HashMap<String, ComputeInstance>, DiscoveryError> {
    match compute::list_instances_named(client, project, base).await {
        Ok(list) => Ok(list.into_iter().map(|i| (i.id.clone(), i)).collect()),
        Err(e) if e.status() == Some(403) => {
            tracing::warn!(
                error = %e,
                "cannot list instances (compute.instances.list): fetching each member, a call each"
            );
            Ok(HashMap::new())
        }
        Err(e) => Err(e.into()),
    }
}

/// Merges the member list with each member's instance (`details[i]` belongs
/// to `members[i]`; `None` when it does not exist) (pure).
pub fn assemble(
    target_size: u32,
    members: &[ManagedInstance],
    details: &[Option<ComputeInstance>],
) -> GroupView {
    let mut peers: Vec<Peer> = members
        .iter()
        .zip(details.iter().chain(std::iter::repeat(&None)))
        .map(|(m, instance)| {
            let status = instance
                .as_ref()
                .map(|i| i.status.as_str())
                .or(m.instance_status.as_deref());
            let address = instance.as_ref().and_then(|i| i.network_ip);
            let mut state = lifecycle(&m.current_action, status, &m.health_states);
            if address.is_none() && state == Lifecycle::InService {
                state = Lifecycle::Pending;
            }
            Peer {
                // The numeric id: a recreated instance keeps its name but is a new machine.
                id: instance
                    .as_ref()
                    .map(|i| i.id.clone())
                    .or_else(|| m.id.clone())
                    .unwrap_or_else(|| m.name.clone()),
                address: address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                launched_at_ms: instance.as_ref().and_then(|i| i.created_at_ms),
                lifecycle: state,
            }
        })
        .collect();
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    GroupView {
        desired_capacity: target_size,
        peers,
    }
}

/// The peer's lifecycle from the group's `currentAction`, the instance's
/// `status` and the autohealing health states (pure).
pub fn lifecycle(
    current_action: &str,
    instance_status: Option<&str>,
    health_states: &[String],
) -> Lifecycle {
    match current_action {
        "DELETING" | "ABANDONING" | "RECREATING" => return Lifecycle::Leaving,
        "STOPPING" | "SUSPENDING" => return Lifecycle::Stopped,
        "CREATING"
        | "CREATING_WITHOUT_RETRIES"
        | "VERIFYING"
        | "STARTING"
        | "RESUMING"
        | "RESTARTING" => {
            return Lifecycle::Pending;
        }
        // NONE, REFRESHING (changes applied in place) and anything newer: ask the instance.
        _ => {}
    }
    // Autohealing recreates unhealthy instances; DRAINING is on its way out.
    if health_states
        .iter()
        .any(|h| matches!(h.as_str(), "UNHEALTHY" | "DRAINING"))
    {
        return Lifecycle::Leaving;
    }
    match instance_status {
        Some("RUNNING") => Lifecycle::InService,
        Some("PROVISIONING" | "STAGING") => Lifecycle::Pending,
        // Stopped with its disk: it may start again (or the group repairs
        // it); not gone for good.
        Some(
            "STOPPING" | "STOPPED" | "SUSPENDING" | "SUSPENDED" | "TERMINATED" | "REPAIRING"
            | "DEPROVISIONING" | "PENDING_STOP",
        ) => Lifecycle::Stopped,
        None => Lifecycle::Pending,
        Some(_) => Lifecycle::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_comes_from_created_by() {
        let zonal = mig_from_created_by(
            "projects/123456/zones/us-central1-a/instanceGroupManagers/muster-cp",
            "example-project",
            None,
        )
        .expect("zonal");
        assert_eq!(
            zonal.to_string(),
            mig_display("example-project", "zones/us-central1-a", "muster-cp")
        );
        let regional = mig_from_created_by(
            "projects/123456/regions/us-central1/instanceGroupManagers/muster-cp",
            "p",
            Some("other"),
        )
        .expect("regional");
        assert_eq!(
            regional.location,
            compute::MigLocation::Region("us-central1".into())
        );
        assert_eq!(regional.name, "other");
        assert_eq!(
            mig_from_created_by("projects/1/zones/z/instanceGroupManagers/", "p", None),
            None
        );
        assert_eq!(
            mig_from_created_by("instanceGroupManagers/x", "p", None),
            None
        );
        assert_eq!(mig_from_created_by("someone", "p", None), None);
    }

    fn mig_display(project: &str, location: &str, name: &str) -> String {
        let (kind, place) = location.split_once('/').expect("kind/place");
        let location = match kind {
            "zones" => compute::MigLocation::Zone(place.into()),
            _ => compute::MigLocation::Region(place.into()),
        };
        MigRef {
            project: project.into(),
            location,
            name: name.into(),
        }
        .to_string()
    }
    use crate::cloud::gce::compute::{parse_instance, parse_list_managed_instances};

    fn fixture(name: &str) -> String {
        crate::test_fixture("gce", name)
    }

    #[test]
    fn lifecycle_mapping() {
        use Lifecycle::*;
        let healthy = vec!["HEALTHY".to_string()];
        let cases = [
            ("NONE", Some("RUNNING"), &healthy, InService),
            ("REFRESHING", Some("RUNNING"), &healthy, InService),
            (
                "NONE",
                Some("RUNNING"),
                &vec!["UNHEALTHY".to_string()],
                Leaving,
            ),
            ("NONE", Some("STAGING"), &vec![], Pending),
            ("NONE", Some("STOPPED"), &vec![], Stopped),
            ("NONE", Some("TERMINATED"), &vec![], Stopped),
            ("NONE", Some("SUSPENDED"), &vec![], Stopped),
            ("STOPPING", Some("RUNNING"), &healthy, Stopped),
            ("NONE", None, &vec![], Pending),
            ("CREATING", None, &vec![], Pending),
            ("VERIFYING", Some("RUNNING"), &vec![], Pending),
            ("RESTARTING", Some("STOPPING"), &vec![], Pending),
            ("DELETING", Some("RUNNING"), &healthy, Leaving),
            ("RECREATING", Some("RUNNING"), &healthy, Leaving),
            ("ABANDONING", Some("RUNNING"), &healthy, Leaving),
            ("NONE", Some("SOMETHING_NEW"), &vec![], Unknown),
        ];
        for (action, status, health, want) in cases {
            assert_eq!(
                lifecycle(action, status, health),
                want,
                "{action} {status:?} {health:?}"
            );
        }
    }

    #[test]
    fn recorded_group() {
        let members = parse_list_managed_instances(&fixture("list_managed_instances.json"))
            .expect("list")
            .instances;
        let first = parse_instance(&fixture("instance.json")).expect("instance");
        let details = vec![Some(first), None, None, None];
        let view = assemble(3, &members, &details);
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
                    "1974815549671473983",
                    Ipv4Addr::new(10, 128, 0, 2),
                    Lifecycle::InService
                ),
                (
                    "4462422841867240255",
                    Ipv4Addr::UNSPECIFIED,
                    Lifecycle::Leaving
                ),
                (
                    "6309299611401323327",
                    Ipv4Addr::UNSPECIFIED,
                    Lifecycle::Leaving
                ),
                ("muster-cp-dck1", Ipv4Addr::UNSPECIFIED, Lifecycle::Pending),
            ]
        );
        assert_eq!(view.peers[0].launched_at_ms, Some(1_709_557_811_123));
    }
}
