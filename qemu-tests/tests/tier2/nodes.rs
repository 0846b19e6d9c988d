//! Every machine becomes a Ready Kubernetes node: three control-plane VMs
//! and two workers of the real image assemble, the workers join by TLS
//! bootstrap, pods on different workers reach each other directly and
//! through a ClusterIP Service over the `bridge` pod network, `kubectl
//! logs` and `exec` work (the kubelets' serving certificates are approved
//! by the agents), a worker that is gone has its Node deleted and its pods
//! rescheduled, and a full power cycle brings the nodes and the workload
//! back. One lab for all of it: a TCG boot costs minutes.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::support::{TestLab, budget, image, wait_for};

/// Two replicas of busybox's httpd, spread over the workers when it can
/// (soft anti-affinity: after a worker is gone both run on the other).
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

/// (pod name, pod IP, node) of the Running web pods.
fn web_pods(t: &TestLab) -> Vec<(String, String, String)> {
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
            Some((w.next()?.into(), w.next()?.into(), w.next()?.into()))
        })
        .collect()
}

/// Names of the nodes whose Ready condition is True.
fn ready_nodes(t: &TestLab) -> BTreeSet<String> {
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

fn all_nodes(t: &TestLab) -> BTreeSet<String> {
    t.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"])
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn three_control_plane_and_two_worker_vms_run_pods_across_nodes_and_heal() {
    let t = TestLab::new("nodes");
    t.up(3, 2, &image());
    let took = t.wait_assembled(budget(1500));
    println!(
        "figures: lab up -> assembled, 5 nodes Ready (3 control plane + 2 workers): {:.0} s",
        took.as_secs_f64()
    );
    let names: BTreeSet<String> = (1..=5).map(|i| format!("node-{i}")).collect();
    assert_eq!(ready_nodes(&t), names, "5 Ready nodes");
    // Control-plane nodes are labelled and tainted; workers are not.
    let cp = t
        .kubectl_ok(&[
            "get",
            "nodes",
            "-l",
            "node-role.kubernetes.io/control-plane",
            "-o",
            "name",
        ])
        .unwrap_or_default();
    assert_eq!(cp.lines().count(), 3, "control-plane nodes: {cp}");
    // The workers stay out of etcd and never campaign for the VIP (no
    // local apiserver); etcd's members are exactly the control plane.
    let lab = t.state();
    for n in &lab.nodes {
        let status = t
            .status(n.index)
            .unwrap_or_else(|| panic!("node-{}: no status", n.index));
        let want = if n.index <= 3 {
            "control-plane"
        } else {
            "worker"
        };
        assert_eq!(status.role.as_deref(), Some(want), "node-{}", n.index);
        if want == "worker" {
            assert!(status.etcd.is_none(), "worker node-{} runs etcd", n.index);
            assert_eq!(
                status.vip.as_ref().map(|v| v.role.as_str()),
                Some("standby"),
                "worker node-{}",
                n.index
            );
        }
    }
    let members = crate::lab::member_peer_ips(&t, 1);
    let control_plane: BTreeSet<String> = (1..=3).map(|i| lab.node_ip(i).to_string()).collect();
    assert_eq!(
        members, control_plane,
        "etcd members are exactly the control plane"
    );

    // 1. Two pods on the two workers, serving their names.
    let applied = t.kubectl(&["apply", "-f", "-"], Some(WEB));
    assert!(applied.status.success(), "{applied:?}");
    let started = Instant::now();
    let pods = wait_for(budget(600), || {
        let p = web_pods(&t);
        let nodes: BTreeSet<&String> = p.iter().map(|(_, _, n)| n).collect();
        (p.len() == 2 && nodes.len() == 2).then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "two web pods on two nodes: {:?}\n{}",
            t.kubectl(&["get", "pods", "-o", "wide"], None),
            t.consoles_tail()
        )
    });
    println!(
        "figures: deployment applied -> 2 pods Running on 2 workers: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (_, _, node) in &pods {
        assert!(node == "node-4" || node == "node-5", "a web pod on {node}");
    }

    // 2. Pod to pod across nodes, and through the ClusterIP Service.
    let (a, _, _) = &pods[0];
    let (b, b_ip, _) = &pods[1];
    let direct = t.kubectl_ok(&[
        "exec",
        a,
        "--",
        "wget",
        "-qO-",
        "-T",
        "5",
        &format!("http://{b_ip}:8080/"),
    ]);
    assert_eq!(direct.as_deref(), Some(b.as_str()), "{a} -> {b} at {b_ip}");
    let svc = t
        .kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .expect("web service");
    let through = wait_for(budget(120), || {
        t.kubectl_ok(&[
            "exec",
            a,
            "--",
            "wget",
            "-qO-",
            "-T",
            "5",
            &format!("http://{svc}/"),
        ])
    })
    .expect("the ClusterIP answers");
    assert!(pods.iter().any(|(n, _, _)| *n == through), "{through}");

    // 3. kubectl logs: the container's own line, and the request above.
    let logs = t.kubectl_ok(&["logs", b]).unwrap_or_default();
    assert!(logs.contains(&format!("web {b} up")), "logs of {b}: {logs}");

    // 4. A worker is gone for good: its Node is deleted and its pods run
    // on the other worker.
    let gone_node = pods[0].2.clone();
    let killed = Instant::now();
    t.lab.kill(&gone_node).expect("lab kill");
    wait_for(budget(300), || {
        (!all_nodes(&t).contains(&gone_node)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the Node {gone_node} was not deleted\n{}",
            t.consoles_tail()
        )
    });
    println!(
        "figures: worker powered off and gone -> its Node deleted: {:.0} s",
        killed.elapsed().as_secs_f64()
    );
    let moved = wait_for(budget(600), || {
        let p = web_pods(&t);
        (p.len() == 2 && p.iter().all(|(_, _, n)| *n != gone_node)).then_some(p)
    })
    .unwrap_or_else(|| panic!("pods not rescheduled: {:?}", web_pods(&t)));
    println!(
        "figures: worker powered off -> 2 web pods Running elsewhere: {:.0} s ({:?})",
        killed.elapsed().as_secs_f64(),
        moved.iter().map(|(_, _, n)| n).collect::<Vec<_>>()
    );

    // 5. Every VM loses power, then boots from its disk: the same nodes
    // Ready again and the workload back.
    let before = ready_nodes(&t);
    t.lab.stop(&[]).expect("lab stop");
    t.lab.start(&[]).expect("lab start");
    let cycled = Instant::now();
    t.wait_assembled(budget(1500));
    assert_eq!(
        ready_nodes(&t),
        before,
        "the same nodes after a power cycle"
    );
    wait_for(budget(600), || (web_pods(&t).len() == 2).then_some(()))
        .unwrap_or_else(|| panic!("web pods after the power cycle: {:?}", web_pods(&t)));
    println!(
        "figures: full power cycle -> all nodes Ready and 2 web pods Running: {:.0} s",
        cycled.elapsed().as_secs_f64()
    );
}
