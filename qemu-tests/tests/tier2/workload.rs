//! A small workload the tier-2 scenarios run on the lab's Kubernetes:
//! two replicas of busybox's httpd (the image every test node ships,
//! `image/build.sh --test-images`) behind a ClusterIP Service, and the
//! checks that the pod network, Services, `kubectl logs` and `exec` work.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::{TestLab, budget, wait_for};

/// Two replicas of busybox's httpd, each serving its pod's name, spread
/// over two nodes when it can (soft anti-affinity: after a node is gone
/// both may run on one).
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {app: web}}
      containers:
      - name: web
        image: muster.local/busybox:1
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "mkdir -p /www && hostname > /www/index.html && echo web $(hostname) up && exec httpd -f -v -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// A Running web pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPod {
    pub name: String,
    pub ip: String,
    pub node: String,
}

/// Applies the web Deployment and Service, waits for two Running pods on
/// two different nodes, then checks pod to pod across the nodes, the
/// ClusterIP Service, `kubectl exec` and `kubectl logs`. Returns the pods.
pub fn run_web_across_nodes(t: &TestLab) -> Vec<WebPod> {
    run_web(t, 2)
}

/// [`run_web_across_nodes`] where the pods must spread over `nodes` nodes
/// (1: a lab with one schedulable node; pod to pod then stays on it).
pub fn run_web(t: &TestLab, nodes: usize) -> Vec<WebPod> {
    // A loaded TCG host can miss one request (the VIP moving, a slow
    // apiserver): apply is idempotent, so it is tried for a while. The
    // manifest is fixed, so kubectl's client-side validation (a download
    // of the whole OpenAPI document, slow under emulation) is skipped; the
    // apiserver still checks every object.
    let mut applied = None;
    let ok = wait_for(budget(180), || {
        let out = t.kubectl(&["apply", "--validate=false", "-f", "-"], Some(WEB));
        let ok = out.status.success();
        applied = Some(out);
        ok.then_some(())
    });
    assert!(ok.is_some(), "kubectl apply: {applied:?}");
    let started = Instant::now();
    let pods = wait_for(budget(900), || {
        let p = web_pods(t);
        let on: BTreeSet<&String> = p.iter().map(|p| &p.node).collect();
        (p.len() == 2 && on.len() == nodes).then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "no two web pods Running on {nodes} node(s): {:?}\n{}",
            t.kubectl(&["get", "pods", "-o", "wide"], None),
            t.consoles_tail()
        )
    });
    println!(
        "figures: web deployment applied -> 2 pods Running on {} and {}: {:.0} s",
        pods[0].node,
        pods[1].node,
        started.elapsed().as_secs_f64()
    );

    // Pod to pod (across nodes when spread): exec into one, fetch from the
    // other's IP.
    let (a, b) = (&pods[0], &pods[1]);
    let direct = wait_for(budget(120), || {
        fetch(t, &a.name, &format!("http://{}:8080/", b.ip))
    });
    assert_eq!(
        direct.as_deref(),
        Some(b.name.as_str()),
        "{} on {} -> {} at {} on {}",
        a.name,
        a.node,
        b.name,
        b.ip,
        b.node
    );
    // Through the Service's ClusterIP (kube-proxy's rules on the node).
    let svc = wait_for(budget(120), || {
        t.kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
    })
    .expect("the web Service has a ClusterIP");
    // The EndpointSlice controller (in the leading controller manager)
    // must list both pods before kube-proxy can route to them: a separate
    // wait, so a failure says which half did not happen.
    let want_ips: BTreeSet<&str> = pods.iter().map(|p| p.ip.as_str()).collect();
    let listed = wait_for(budget(300), || {
        let ips = endpoint_ips(t);
        want_ips.iter().all(|ip| ips.contains(*ip)).then_some(())
    });
    assert!(
        listed.is_some(),
        "the web EndpointSlice never listed both pods {want_ips:?}: {:?}\n{}",
        t.kubectl(&["get", "endpointslices", "-o", "wide"], None),
        t.consoles_tail()
    );
    let url = format!("http://{svc}/");
    let through = wait_for(budget(300), || fetch(t, &a.name, &url)).unwrap_or_else(|| {
        panic!(
            "the ClusterIP {svc} never answered from {} on {}: {:?}\n{}",
            a.name,
            a.node,
            t.kubectl(&["get", "endpointslices", "-o", "wide"], None),
            t.consoles_tail()
        )
    });
    assert!(
        pods.iter().any(|p| p.name == through),
        "the ClusterIP answered {through:?}, not a web pod"
    );
    // kubectl logs goes through the kubelet's serving certificate, which
    // an agent approved.
    let logs = wait_for(budget(120), || t.kubectl_ok(&["logs", &b.name])).unwrap_or_default();
    assert!(
        logs.contains(&format!("web {} up", b.name)),
        "logs of {}: {logs}",
        b.name
    );
    pods
}

/// The ready addresses the web Service's EndpointSlices list.
fn endpoint_ips(t: &TestLab) -> BTreeSet<String> {
    t.kubectl_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{\"\\n\"}{end}",
    ])
    .unwrap_or_default()
    .lines()
    .map(str::to_string)
    .collect()
}

/// What `wget` in pod `pod` fetched from `url`, if it answered in 5 s.
fn fetch(t: &TestLab, pod: &str, url: &str) -> Option<String> {
    t.kubectl_ok(&["exec", pod, "--", "wget", "-qO-", "-T", "5", url])
}

/// The Running web pods.
pub fn web_pods(t: &TestLab) -> Vec<WebPod> {
    let out = t
        .kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
        ])
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(WebPod {
                name: w.next()?.into(),
                ip: w.next()?.into(),
                node: w.next()?.into(),
            })
        })
        .collect()
}

/// Waits until two web pods run again, none of them on `not_on`.
pub fn wait_web_rescheduled(t: &TestLab, not_on: &str, limit: Duration) -> Vec<WebPod> {
    wait_for(limit, || {
        let p = web_pods(t);
        (p.len() == 2 && p.iter().all(|p| p.node != not_on)).then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "the web pods were not rescheduled off {not_on}: {:?}\n{}",
            t.kubectl(&["get", "pods", "-o", "wide"], None),
            t.consoles_tail()
        )
    })
}

/// Waits until both web pods run again after their node rebooted: each
/// Ready with its container restarted at least once. What the kubelet
/// wrote before the power cut still says Running, so the phase alone
/// proves nothing. Returns how long it took.
pub fn wait_web_restarted(t: &TestLab, limit: Duration) -> Duration {
    let started = Instant::now();
    let back = wait_for(limit, || {
        let out = t.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}{\"\\n\"}{end}",
        ])?;
        let restarted = out
            .lines()
            .filter(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                matches!(w.as_slice(), [_, n, "true"] if n.parse::<u32>().is_ok_and(|n| n >= 1))
            })
            .count();
        (restarted == 2).then_some(())
    });
    assert!(
        back.is_some(),
        "the web pods did not run again after the power cycle: {:?}\n{}",
        t.kubectl(&["get", "pods", "-o", "wide"], None),
        t.consoles_tail()
    );
    started.elapsed()
}

/// Names of the nodes whose Ready condition is True.
pub fn ready_nodes(t: &TestLab) -> BTreeSet<String> {
    t.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    ])
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.strip_suffix("=True").map(str::to_string))
    .collect()
}

/// The label a control-plane node carries (kubeadm's name for it).
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Waits until exactly the Nodes `want` carry the control-plane label
/// (their agents set it after registration: a kubelet may not set
/// node-role labels); fails naming the ones that do.
pub fn wait_control_plane_labels(t: &TestLab, want: &BTreeSet<String>) {
    let labelled = wait_for(budget(120), || {
        (nodes_labelled(t, CONTROL_PLANE_LABEL) == *want).then_some(())
    });
    if labelled.is_none() {
        // What the agents said about their node work (stdout: CI keeps the
        // tail of a long log, where the panic message is).
        for n in &t.state().nodes {
            let console = t.serial(n.index);
            let said: Vec<&str> = console
                .lines()
                .filter(|l| {
                    ["kubernetes nodes", "as control plane", "deleted the Node"]
                        .iter()
                        .any(|needle| l.contains(needle))
                })
                .collect();
            println!(
                "--- node-{}: node work on the console ---\n{}",
                n.index,
                said[said.len().saturating_sub(10)..].join("\n")
            );
        }
        panic!(
            "want {want:?} labelled control-plane, got {:?} (the agents' node work is in stdout above)",
            nodes_labelled(t, CONTROL_PLANE_LABEL)
        );
    }
}

/// Names of the Nodes that match a label selector (kubectl refuses a
/// node name together with a selector, so this lists and filters).
pub fn nodes_labelled(t: &TestLab, selector: &str) -> BTreeSet<String> {
    node_names(t, &["-l", selector])
}

/// Names of every Node object.
pub fn all_nodes(t: &TestLab) -> BTreeSet<String> {
    node_names(t, &[])
}

/// Names of the Nodes `kubectl get nodes FILTER...` lists.
fn node_names(t: &TestLab, filter: &[&str]) -> BTreeSet<String> {
    let mut args = vec!["get", "nodes"];
    args.extend(filter);
    args.extend(["-o", "jsonpath={.items[*].metadata.name}"]);
    t.kubectl_ok(&args)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Waits until the Node `name` is gone (an agent deleted it) and returns
/// how long that took from `since`.
pub fn wait_node_deleted(t: &TestLab, name: &str, since: Instant) -> Duration {
    wait_for(budget(300), || (!all_nodes(t).contains(name)).then_some(()))
        .unwrap_or_else(|| panic!("the Node {name} was not deleted\n{}", t.consoles_tail()));
    since.elapsed()
}

/// The taints of Node `name` as `key:effect` strings.
pub fn taints(t: &TestLab, name: &str) -> Vec<String> {
    t.kubectl_ok(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}:{.effect}{\"\\n\"}{end}",
    ])
    .unwrap_or_default()
    .lines()
    .map(str::to_string)
    .collect()
}

/// The parts every node runs, and those only a control-plane node runs, as
/// the agent names them in `memory_mib` (systemd's cgroup accounting).
pub const NODE_PARTS: &[&str] = &["agent", "containerd", "kubelet", "kube-proxy"];
pub const CONTROL_PLANE_PARTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Waits until node `index` reports the memory of each of `parts`, checks
/// every figure is above zero, and prints them as the figure of its role.
pub fn print_memory(t: &TestLab, index: u32, role: &str, parts: &[&str]) {
    let memory = wait_for(budget(120), || {
        let m = t.status(index)?.memory_mib;
        parts.iter().all(|p| m.contains_key(*p)).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "node-{index} did not report the memory of {parts:?}: {:?}",
            t.status(index).map(|s| s.memory_mib)
        )
    });
    for p in parts {
        assert!(memory[*p] > 0, "node-{index}: {p} uses 0 MiB: {memory:?}");
    }
    let total: u64 = memory.values().sum();
    let each: Vec<String> = memory.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "figures: memory at steady state, node-{index} ({role}): {total} MiB ({})",
        each.join(", ")
    );
}

/// What share of one core each part used on each node over at least
/// `window`, from two of the agents' footprint readings (taken every
/// half minute). Under TCG the VMs' parts compete for two host cores:
/// this says which part keeps them busy.
pub fn print_cpu_share(t: &TestLab, nodes: &[u32], window: Duration) {
    let reading = |i: u32| {
        t.status(i)
            .filter(|s| s.footprint_at_ms > 0 && !s.cpu_ms.is_empty())
            .map(|s| (s.footprint_at_ms, s.cpu_ms))
    };
    let first: Vec<_> = nodes
        .iter()
        .map(|i| wait_for(budget(120), || reading(*i)))
        .collect();
    std::thread::sleep(window);
    for (i, first) in nodes.iter().zip(first) {
        let Some((at0, cpu0)) = first else {
            println!("figures: CPU share, node-{i}: no footprint reading");
            continue;
        };
        let wanted = at0 + u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let Some((at1, cpu1)) =
            wait_for(budget(120), || reading(*i).filter(|(at, _)| *at >= wanted))
        else {
            println!("figures: CPU share, node-{i}: no second reading");
            continue;
        };
        let span = (at1 - at0) as f64;
        let mut total = 0.0;
        let each: Vec<String> = cpu1
            .iter()
            .map(|(part, ms)| {
                let used = ms.saturating_sub(cpu0.get(part).copied().unwrap_or(0)) as f64;
                total += used;
                format!("{part} {:.0} %", 100.0 * used / span)
            })
            .collect();
        println!(
            "figures: CPU share of one (emulated) core over {:.0} s, node-{i}: {:.0} % ({})",
            span / 1000.0,
            100.0 * total / span,
            each.join(", ")
        );
    }
}
