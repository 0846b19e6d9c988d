//! `muster lab` end to end, one lab for the whole story because a TCG boot
//! costs minutes: three VMs of the real image assemble on their own into
//! one etcd cluster, the API VIP and a Kubernetes cluster of three Ready
//! nodes (control plane, schedulable: the lab has no workers); a workload
//! runs across them (pod to pod, ClusterIP, logs, exec). Then it heals:
//! the VIP holder is powered off (the VIP and the API answer from another
//! VM), a replacement machine takes its etcd seat, holds the data and
//! becomes a node, the dead machine's Node is deleted and its pods run
//! elsewhere. (No whole-lab power cycle in tier 2 for now: it costs as
//! much as a boot, and a known bug makes it fail when it comes soon after
//! the first pods: see nodes.rs.)
//!
//! Invariants checked on the way: S1 (one etcd cluster id, ever), S3 (the
//! data on the replacement), S4 (one node claims the VIP; between assembly
//! and the kill it moved at most once).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use muster::lab::spec::Power;
use muster::state::now_secs;

use crate::support::{TestLab, budget, image, tail, wait_for};
use crate::workload::{
    CONTROL_PLANE_LABEL, CONTROL_PLANE_PARTS, NODE_PARTS, print_cpu_share, print_memory,
    ready_nodes, run_web_across_nodes, taints, wait_control_plane_labels, wait_node_deleted,
    wait_web_rescheduled,
};

const KEY: &str = "/tier2/canary";

#[test]
fn three_vms_assemble_kubernetes_run_pods_then_fail_over_and_replace_a_member() {
    let t = TestLab::new("heal");
    t.up(3, 0, &image());

    // 1. Three VMs -> one etcd cluster of three voters, the VIP, the
    // Kubernetes API through it and three Ready nodes. A CI machine took
    // over 1200 s once (the apiserver's start is ~325 etcd round trips in
    // a row, each a few hundred ms under TCG); `muster lab up` itself
    // waits 2700 s.
    let took = t.wait_assembled(budget(1800));
    let assembled_at = now_secs();
    let takeovers_at_assembly = takeovers_by(&t, &[1, 2, 3]);
    println!(
        "figures: lab up -> assembled (3 VMs: etcd, VIP, API, 3 nodes Ready): {:.0} s",
        took.as_secs_f64()
    );
    let cluster_id = one_cluster_id(&t, &[1, 2, 3]);
    let names: BTreeSet<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    assert_eq!(
        ready_nodes(&t),
        names,
        "3 Ready nodes named after their machines"
    );
    // Labelled control plane, but schedulable: no workers run pods.
    wait_control_plane_labels(&t, &names);
    for name in &names {
        let taints = taints(&t, name);
        // (A node briefly NotReady under TCG also carries
        // node.kubernetes.io/not-ready; only the role taint is checked.)
        assert!(
            !taints.iter().any(|x| x.starts_with(CONTROL_PLANE_LABEL)),
            "{name} is tainted control-plane although the lab has no workers: {taints:?}"
        );
    }
    t.etcd_put(1, KEY, "survives-a-lost-member");

    // 2. A workload across the nodes, and what each node's parts use.
    run_web_across_nodes(&t);
    let parts = [NODE_PARTS, CONTROL_PLANE_PARTS].concat();
    for i in 1..=3 {
        print_memory(&t, i, "control plane + node", &parts);
    }
    // Which part keeps the emulated CPUs busy (three control planes on two
    // host cores is this lab's limit).
    print_cpu_share(&t, &[1, 2, 3], Duration::from_secs(30));

    // 3. Hard power-off of the VIP holder -> the VIP, and the API behind
    // it, answer from another VM. Under TCG a status request can miss its
    // deadline, so wait until the same VM has answered three times in a row.
    let holder_id = wait_for(budget(120), || settled_vip_holder(&t)).unwrap_or_else(|| {
        panic!(
            "the VIP never settled on one VM after assembly\n{}",
            t.consoles_tail()
        )
    });
    let holder = t
        .state()
        .nodes
        .iter()
        .find(|n| n.instance_id == holder_id)
        .map(|n| n.index)
        .expect("the holder is a lab node");
    // The VIP did not flap after assembly. Takeovers during formation are
    // allowed; after it, one move is: a holder that cannot prove its claim
    // in time (etcd stalled on a host busier than the TCG timers assume)
    // must drop the address (S4), and that is the design working. Two or
    // more is flapping. With no move, the holder has held the VIP since
    // before the lab called the cluster assembled.
    let held = wait_for(budget(60), || t.status(holder).and_then(|s| s.vip))
        .expect("the holder reports its VIP status");
    let moves = takeovers_by(&t, &[1, 2, 3]).saturating_sub(takeovers_at_assembly);
    println!("figures: VIP takeovers between assembly and the power-off: {moves}");
    assert!(
        moves <= 1,
        "the VIP changed holder {moves} times after assembly\n{}",
        t.consoles_tail()
    );
    assert!(
        moves == 1 || held.since <= assembled_at,
        "the holder took the VIP at {} after assembly at {assembled_at}, with no takeover counted",
        held.since
    );
    let killed = Instant::now();
    t.lab.kill(&format!("node-{holder}")).expect("lab kill");
    let moved = wait_for(budget(120), || {
        t.vip_instance().filter(|id| *id != holder_id)
    })
    .unwrap_or_else(|| {
        panic!(
            "the VIP never answered from another VM\n{}",
            t.consoles_tail()
        )
    });
    println!(
        "figures: VIP holder powered off -> VIP answers from {moved}: {:.2} s (polled every 100 ms)",
        killed.elapsed().as_secs_f64()
    );
    wait_for(budget(120), || t.api_ready().then_some(())).unwrap_or_else(|| {
        panic!(
            "the API did not answer through the VIP after the failover\n{}",
            t.consoles_tail()
        )
    });
    println!(
        "figures: VIP holder powered off -> API answers through the VIP: {:.2} s",
        killed.elapsed().as_secs_f64()
    );

    // 4. Launch a replacement -> it takes the dead member's place and
    // becomes a Ready node; the dead machine's Node is deleted and its
    // pods run elsewhere.
    let dead = format!("node-{holder}");
    let added = t.lab.add(1).expect("lab add");
    let took = t.wait_assembled(budget(1200));
    println!(
        "figures: lab add -> the replacement is a voting member and a Ready node: {:.0} s",
        took.as_secs_f64()
    );
    let lab = t.state();
    let alive: Vec<u32> = lab
        .nodes
        .iter()
        .filter(|n| n.power == Power::On)
        .map(|n| n.index)
        .collect();
    assert_eq!(alive.len(), 3, "{alive:?}");
    assert_eq!(
        one_cluster_id(&t, &alive),
        cluster_id,
        "S1: the replacement formed a new cluster"
    );
    let new_index: u32 = added[0]
        .trim_start_matches("node-")
        .parse()
        .expect("node index");
    let members = member_peer_ips(&t, alive[0]);
    assert!(
        members.contains(&lab.node_ip(new_index).to_string()),
        "the new VM is not a member: {members:?}"
    );
    assert!(
        !members.contains(&lab.node_ip(holder).to_string()),
        "the dead VM is still a member: {members:?}"
    );
    // The data is on the replacement (read from its own member).
    let (value, stderr) = t.etcd_get(new_index, KEY);
    assert_eq!(
        value, "survives-a-lost-member",
        "data on the replacement: {stderr}"
    );
    let gone = wait_node_deleted(&t, &dead, killed);
    println!(
        "figures: VIP holder powered off -> its Node deleted: {:.0} s",
        gone.as_secs_f64()
    );
    wait_web_rescheduled(&t, &dead, budget(600));
}

/// VIP takeovers summed over `nodes`, once every one of them has answered
/// (a status probe can miss its deadline under TCG).
fn takeovers_by(t: &TestLab, nodes: &[u32]) -> u32 {
    wait_for(budget(60), || {
        nodes
            .iter()
            .map(|&i| t.status(i).and_then(|s| s.vip).map(|v| v.takeovers))
            .sum::<Option<u32>>()
    })
    .unwrap_or_else(|| {
        panic!(
            "not every node reported its VIP status\n{}",
            t.consoles_tail()
        )
    })
}

/// The cluster id every listed node reports; fails unless it is one (S1).
pub fn one_cluster_id(t: &TestLab, nodes: &[u32]) -> String {
    let ids: BTreeSet<String> = nodes
        .iter()
        .map(|i| {
            t.status(*i)
                .and_then(|s| s.etcd)
                .map(|e| e.cluster_id)
                .unwrap_or_else(|| panic!("node-{i}: no etcd status\n{}", tail(&t.serial(*i), 20)))
        })
        .collect();
    assert_eq!(ids.len(), 1, "S1: more than one etcd cluster: {ids:?}");
    ids.into_iter().next().expect("one id")
}

/// The IPs of the etcd members as node `index` lists them.
pub fn member_peer_ips(t: &TestLab, index: u32) -> BTreeSet<String> {
    let etcd = t.status(index).and_then(|s| s.etcd).expect("etcd status");
    etcd.members
        .iter()
        .map(|m| {
            m.peer_url
                .trim_start_matches("https://")
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The VM answering on the VIP if the same one answers three probes in a row.
fn settled_vip_holder(t: &TestLab) -> Option<String> {
    let first = t.vip_instance()?;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        if t.vip_instance()? != first {
            return None;
        }
    }
    Some(first)
}
