//! Draining a leaving machine's Node (`kubernetes::drain`) against the real
//! v1.28.7 API the Kubernetes test's agents run: cordon, evictions refused
//! while a PodDisruptionBudget forbids them (429), then the pods evicted
//! and the Node drained; and the cordon lifted again. Called from tier1/kubernetes.rs, on its cluster.
//!
//! Honest limits: tier 1 runs no kubelet, so the Node and its pods are
//! objects only (the pods are bound to the Node and have no grace period,
//! so an eviction deletes them at once, as a kubelet would after the
//! grace). The group's `Leaving` state and the leaving agent's wait are
//! covered by unit tests (`node_actions`, `drain::step`), not here.

use std::path::Path;
use std::time::Duration;

use muster::kubernetes::drain::{self, DrainStep, PodRef};

use crate::support::kubernetes::{kubectl, kubectl_stdin};
use crate::support::netns::{Host, wait_until};

const NODE: &str = "drain-me";

const OBJECTS: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: drain-me}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: drainee, namespace: default}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: drainee}}
---
apiVersion: v1
kind: Pod
metadata: {name: drainee-a, namespace: default, labels: {app: drainee}}
spec:
  nodeName: drain-me
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: muster.local/busybox:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: drainee-b, namespace: default, labels: {app: drainee}}
spec:
  nodeName: drain-me
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: muster.local/busybox:1}]
"#;

/// Runs `f` with an admin client, inside `host`'s namespace (the API is
/// only reachable there).
fn with_client<T: Send>(
    host: &Host,
    admin: &Path,
    f: impl AsyncFnOnce(kube::Client) -> T + Send,
) -> T {
    host.block_on(async || {
        let client = muster::kubernetes::client::from_kubeconfig(admin, Duration::from_secs(5))
            .await
            .expect("admin client");
        f(client).await
    })
}

fn round(host: &Host, admin: &Path) -> Result<DrainStep, String> {
    with_client(host, admin, async |c| {
        drain::round(&c, NODE).await.map_err(|e| e.to_string())
    })
}

fn pods(host: &Host, admin: &Path) -> String {
    let out = kubectl(
        host,
        admin,
        &[
            "get",
            "pods",
            "-l",
            "app=drainee",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\" \"}{end}",
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn check(host: &Host, admin: &Path, diagnose: impl Fn() -> String) {
    let applied = kubectl_stdin(
        host,
        admin,
        &["apply", "--validate=false", "-f", "-"],
        OBJECTS,
    );
    assert!(
        applied.status.success(),
        "apply: {applied:?}\n{}",
        diagnose()
    );
    // Without a kubelet the pods stay Pending, and the Eviction API lets
    // Pending pods go whatever the budget says: report them Running, as a
    // kubelet would, so the budget counts.
    for pod in ["drainee-a", "drainee-b"] {
        let patched = kubectl(
            host,
            admin,
            &[
                "patch",
                "pod",
                pod,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running"}}"#,
            ],
        );
        assert!(patched.status.success(), "{patched:?}");
    }

    // 1. Cordon first.
    assert_eq!(round(host, admin), Ok(DrainStep::Cordon));
    let cordon = || {
        let out = kubectl(
            host,
            admin,
            &[
                "get",
                "node",
                NODE,
                "-o",
                "jsonpath={.spec.unschedulable} {.metadata.annotations}",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let marked = cordon();
    assert!(
        marked.starts_with("true ") && marked.contains(drain::CORDONED_WHILE_LEAVING),
        "cordoned and marked: {marked}"
    );

    // 2. The budget forbids evictions (no pod is Ready without a kubelet):
    // every round asks again, and the pods stay.
    let both = vec![
        PodRef {
            namespace: "default".into(),
            name: "drainee-a".into(),
        },
        PodRef {
            namespace: "default".into(),
            name: "drainee-b".into(),
        },
    ];
    for _ in 0..2 {
        assert_eq!(round(host, admin), Ok(DrainStep::Evict(both.clone())));
    }
    assert_eq!(pods(host, admin), "drainee-a drainee-b", "{}", diagnose());
    assert_eq!(
        with_client(host, admin, async |c| drain::is_drained(&c, NODE)
            .await
            .map_err(|e| e.to_string())),
        Ok(false)
    );

    // 3. Without the budget the pods are evicted, and the Node is drained.
    let deleted = kubectl(host, admin, &["delete", "pdb", "drainee"]);
    assert!(deleted.status.success(), "{deleted:?}");
    wait_until(
        "the Node drained",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || round(host, admin) == Ok(DrainStep::Drained),
    )
    .unwrap_or_else(|e| panic!("{e}: pods {:?}\n{}", pods(host, admin), diagnose()));
    assert_eq!(pods(host, admin), "");
    assert_eq!(
        with_client(host, admin, async |c| drain::is_drained(&c, NODE)
            .await
            .map_err(|e| e.to_string())),
        Ok(true)
    );
    // 4. The machine comes back instead of leaving: the cordon is lifted.
    with_client(host, admin, async |c| drain::uncordon(&c, NODE).await)
        .unwrap_or_else(|e| panic!("uncordon: {e}"));
    let lifted = cordon();
    assert!(
        !lifted.starts_with("true") && !lifted.contains(drain::CORDONED_WHILE_LEAVING),
        "uncordoned and unmarked: {lifted}"
    );
    let cleaned = kubectl(host, admin, &["delete", "node", NODE]);
    assert!(cleaned.status.success(), "{cleaned:?}");
}
