//! Draining the Node of a machine the group is terminating on purpose (an
//! instance refresh, a scale-in: its lifecycle is `Leaving`), the way
//! `kubectl drain` does: cordon it, then evict its pods through the
//! Eviction API so PodDisruptionBudgets hold, and leave DaemonSet and
//! mirror (static) pods alone. A control-plane agent does it with its
//! admin identity; the Node itself is deleted once the machine has left
//! the group (`node_actions`).
//!
//! `step` is the pure decision from what the API shows; `round` is the
//! thin apply.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use tracing::info;

use super::client::FIELD_MANAGER;

/// Set on a Node this module cordoned, so that it is uncordoned if its
/// machine comes back instead of leaving (out of standby, a cancelled
/// scale-in), and an operator's own cordon is never undone.
pub const CORDONED_WHILE_LEAVING: &str = "muster/cordoned-while-leaving";

/// Whether this module cordoned `node` and it is still cordoned.
pub fn cordoned_while_leaving(node: &Node) -> bool {
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let marked = node
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CORDONED_WHILE_LEAVING));
    unschedulable && marked
}

/// How long one eviction may take (the client's own retries of a 429
/// included) before it is left for the next round.
const EVICT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A pod, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// What draining a Node needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainStep {
    /// Mark it unschedulable first, so nothing new lands on it.
    Cordon,
    /// Ask the Eviction API to move these pods.
    Evict(Vec<PodRef>),
    /// Evicted pods still terminating (their grace period runs).
    Waiting(usize),
    /// Nothing left to move.
    Drained,
}

/// Why a pod stays on a draining Node, if it does.
fn stays(pod: &Pod) -> bool {
    let meta = &pod.metadata;
    // A static pod's mirror: the kubelet owns it, the API cannot move it.
    let mirror = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    // A DaemonSet's pod would be recreated on the same Node at once.
    let daemon = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    // A finished pod holds nothing.
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    mirror || daemon || finished
}

/// The next step for `node`, given the pods bound to it. Pure.
pub fn step(node: &Node, pods: &[Pod]) -> DrainStep {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned {
        return DrainStep::Cordon;
    }
    let movable: Vec<&Pod> = pods.iter().filter(|p| !stays(p)).collect();
    let (terminating, running): (Vec<&Pod>, Vec<&Pod>) = movable
        .into_iter()
        .partition(|p| p.metadata.deletion_timestamp.is_some());
    if !running.is_empty() {
        let mut evict: Vec<PodRef> = running
            .iter()
            .map(|p| PodRef {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                name: p.metadata.name.clone().unwrap_or_default(),
            })
            .collect();
        evict.sort();
        return DrainStep::Evict(evict);
    }
    if terminating.is_empty() {
        DrainStep::Drained
    } else {
        DrainStep::Waiting(terminating.len())
    }
}

/// One round of draining `name`: looks, then takes the step. An eviction
/// a PodDisruptionBudget refuses (429) is asked again next round. Returns
/// the step it found.
pub async fn round(client: &kube::Client, name: &str) -> Result<DrainStep, kube::Error> {
    let next = observe(client, name).await?;
    match &next {
        DrainStep::Cordon => {
            set_cordon(client, name, true).await?;
            info!(node = %name, "cordoned the Node of a machine that is leaving");
        }
        DrainStep::Evict(list) => {
            for pod in list {
                let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
                // The client retries a 429 itself, with backoff: bounded
                // here, a budget's "not now" is asked again next round.
                let params = EvictParams::default();
                let evict = api.evict(&pod.name, &params);
                match tokio::time::timeout(EVICT_TIMEOUT, evict).await {
                    Ok(Ok(_)) => {
                        info!(node = %name, pod = %format!("{}/{}", pod.namespace, pod.name), "evicted")
                    }
                    // 429: a disruption budget says not now; 404: gone already.
                    Ok(Err(kube::Error::Api(e))) if e.code == 429 || e.code == 404 => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {}
                }
            }
        }
        DrainStep::Waiting(_) | DrainStep::Drained => {}
    }
    Ok(next)
}

/// Cordons `name` (marked as this module's), or lifts that cordon.
async fn set_cordon(client: &kube::Client, name: &str, cordon: bool) -> Result<(), kube::Error> {
    let mark = cordon.then_some("true");
    let patch = serde_json::json!({
        "metadata": {"annotations": {CORDONED_WHILE_LEAVING: mark}},
        "spec": {"unschedulable": cordon}
    });
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
}

/// Lifts the cordon of a Node whose machine came back instead of leaving.
pub async fn uncordon(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    set_cordon(client, name, false).await?;
    info!(node = %name, "uncordoned the Node of a machine that is no longer leaving");
    Ok(())
}

/// Whether `name` is drained (or gone): what a leaving machine asks, with
/// its kubelet's identity, before it lets the group terminate it.
pub async fn is_drained(client: &kube::Client, name: &str) -> Result<bool, kube::Error> {
    Ok(observe(client, name).await? == DrainStep::Drained)
}

/// The Node `name` and the pods bound to it, read, and the step they call
/// for (a Node that is gone is drained).
async fn observe(client: &kube::Client, name: &str) -> Result<DrainStep, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(node) = nodes.get_opt(name).await? else {
        return Ok(DrainStep::Drained);
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={name}"));
    Ok(step(&node, &pods.list(&on_node).await?.items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn node(unschedulable: bool) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w1"},
            "spec": {"unschedulable": unschedulable}
        }))
        .expect("node")
    }

    fn pod(name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "w1", "containers": []},
            "status": {"phase": "Running"}
        }))
        .expect("pod")
    }

    #[test]
    fn an_uncordoned_node_is_cordoned_first() {
        assert_eq!(step(&node(false), &[pod("a")]), DrainStep::Cordon);
        assert_eq!(step(&node(false), &[]), DrainStep::Cordon);
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_stay_and_the_rest_are_evicted() {
        let mut daemon = pod("ds");
        daemon.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            name: "proxy".into(),
            ..OwnerReference::default()
        }]);
        let mut mirror = pod("static");
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        let mut done = pod("job");
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        let mut replica = pod("rs-owned");
        replica.metadata.owner_references = Some(vec![OwnerReference {
            kind: "ReplicaSet".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        let pods = [pod("web-b"), daemon, mirror, done, replica, pod("web-a")];
        let want: Vec<PodRef> = ["rs-owned", "web-a", "web-b"]
            .iter()
            .map(|n| PodRef {
                namespace: "default".into(),
                name: n.to_string(),
            })
            .collect();
        assert_eq!(step(&node(true), &pods), DrainStep::Evict(want));
    }

    #[test]
    fn evicted_pods_still_terminating_are_waited_for_then_the_node_is_drained() {
        let mut leaving = pod("web");
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            step(&node(true), &[leaving.clone(), leaving]),
            DrainStep::Waiting(2)
        );
        let mut daemon = pod("ds");
        daemon.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        assert_eq!(step(&node(true), &[daemon]), DrainStep::Drained);
        assert_eq!(step(&node(true), &[]), DrainStep::Drained);
    }
}
