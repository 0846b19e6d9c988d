//! Workers: one control-plane VM and two worker VMs of the real image (a
//! 3+2 lab does not fit two TCG cores: five VMs starved etcd). The
//! workers join by TLS bootstrap with the derived token, stay out of etcd
//! and never campaign for the VIP; the control-plane node is tainted
//! because workers exist; pods on the two workers reach each other
//! directly and through a ClusterIP Service over the `bridge` pod network;
//! a worker that is gone has its Node deleted and its pods rescheduled.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::support::{TestLab, budget, image};
use crate::workload::{
    CONTROL_PLANE_LABEL, CONTROL_PLANE_PARTS, NODE_PARTS, print_memory, ready_nodes,
    run_web_across_nodes, taints, wait_control_plane_labels, wait_node_deleted,
    wait_web_rescheduled,
};

#[test]
fn one_control_plane_and_two_worker_vms_run_pods_across_the_workers_and_drop_a_gone_worker() {
    let t = TestLab::new("nodes");
    t.up(1, 2, &image());
    let took = t.wait_assembled(budget(1200));
    println!(
        "figures: lab up -> assembled, 3 nodes Ready (1 control plane + 2 workers): {:.0} s",
        took.as_secs_f64()
    );
    let names: BTreeSet<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    assert_eq!(ready_nodes(&t), names, "3 Ready nodes");
    let cp_taints = taints(&t, "node-1");
    assert!(
        cp_taints
            .iter()
            .any(|x| *x == format!("{CONTROL_PLANE_LABEL}:NoSchedule")),
        "the control-plane node is not tainted although workers exist: {cp_taints:?}"
    );
    // Only the control-plane node carries the role label.
    wait_control_plane_labels(&t, &BTreeSet::from(["node-1".to_string()]));

    // The workers stay out of etcd and never campaign for the VIP (no
    // local apiserver); etcd's only member is the control plane.
    let lab = t.state();
    for n in &lab.nodes {
        let status = t
            .status(n.index)
            .unwrap_or_else(|| panic!("node-{}: no status", n.index));
        let want = if n.index == 1 {
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
            // (A node briefly NotReady under TCG also carries
            // node.kubernetes.io/not-ready; only the role taint is checked.)
            let taints = taints(&t, &format!("node-{}", n.index));
            assert!(
                !taints.iter().any(|x| x.starts_with(CONTROL_PLANE_LABEL)),
                "worker node-{} tainted as control plane: {taints:?}",
                n.index
            );
        }
    }
    let members = crate::lab::member_peer_ips(&t, 1);
    let control_plane: BTreeSet<String> = [lab.node_ip(1).to_string()].into();
    assert_eq!(
        members, control_plane,
        "etcd members are exactly the control plane"
    );

    // Pods run on the two workers only, and reach each other.
    let pods = run_web_across_nodes(&t);
    for p in &pods {
        assert!(
            p.node == "node-2" || p.node == "node-3",
            "a web pod on {}",
            p.node
        );
    }
    // What each role's parts use at steady state.
    print_memory(
        &t,
        1,
        "control plane",
        &[NODE_PARTS, CONTROL_PLANE_PARTS].concat(),
    );
    for i in [2, 3] {
        print_memory(&t, i, "worker", NODE_PARTS);
        let m = t.status(i).map(|s| s.memory_mib).unwrap_or_default();
        assert!(
            !CONTROL_PLANE_PARTS.iter().any(|p| m.contains_key(*p)),
            "worker node-{i} runs a control-plane part: {m:?}"
        );
    }

    // A worker is gone for good: its Node is deleted and its pods run on
    // the other worker.
    let gone = pods[0].node.clone();
    let killed = Instant::now();
    t.lab.kill(&gone).expect("lab kill");
    let deleted = wait_node_deleted(&t, &gone, killed);
    println!(
        "figures: worker powered off and gone from the group -> its Node deleted: {:.0} s",
        deleted.as_secs_f64()
    );
    let moved = wait_web_rescheduled(&t, &gone, budget(600));
    println!(
        "figures: worker powered off -> 2 web pods Running on {:?}: {:.0} s",
        moved.iter().map(|p| &p.node).collect::<Vec<_>>(),
        killed.elapsed().as_secs_f64()
    );
}
