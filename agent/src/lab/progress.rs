//! What `lab up` and `lab status` show: each node's view from its agent's
//! status endpoint, and whether the cluster has assembled. Pure: `ops`
//! fetches the statuses, this decides and renders.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::spec::{LabState, Power, node_name};
use crate::state::{Phase, Status};

/// One node as the host sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub power: Power,
    /// Whether its QEMU process runs.
    pub running: bool,
    /// Its agent's `/status`, or why there is none yet.
    pub status: Result<Status, String>,
}

/// The cluster as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembly {
    /// Nodes whose agent reports a voting, healthy etcd member.
    pub etcd_voters: usize,
    /// Distinct etcd cluster ids seen (S1: must never exceed one).
    pub cluster_ids: Vec<String>,
    pub workers: usize,
    /// Nodes that say they hold the VIP.
    pub vip_holders: Vec<u32>,
    /// The instance id behind the VIP, asked through the VIP itself.
    pub vip_answers_from: Option<String>,
}

impl Assembly {
    /// Done: one etcd cluster with every control-plane node a healthy
    /// voter, every other powered node a worker, and the VIP answering
    /// from the one node that claims it.
    pub fn assembled(&self, lab: &LabState, views: &[NodeView]) -> bool {
        let powered = views.iter().filter(|v| v.power == Power::On).count();
        let cp = lab.expected_control_plane().min(powered);
        let holder_id = self.vip_holders.first().and_then(|i| {
            views
                .iter()
                .find(|v| v.index == *i)
                .and_then(|v| v.status.as_ref().ok())
                .and_then(|s| s.instance_id.clone())
        });
        self.cluster_ids.len() == 1
            && self.etcd_voters == cp
            && self.workers == powered - cp
            && self.vip_holders.len() == 1
            && self.vip_answers_from.is_some()
            && self.vip_answers_from == holder_id
    }
}

/// Tallies the views; `vip_answers_from` is filled in by the caller.
pub fn assess(views: &[NodeView]) -> Assembly {
    let mut a = Assembly {
        etcd_voters: 0,
        cluster_ids: Vec::new(),
        workers: 0,
        vip_holders: Vec::new(),
        vip_answers_from: None,
    };
    for v in views.iter().filter(|v| v.power == Power::On) {
        let Ok(s) = &v.status else { continue };
        if s.role.as_deref() == Some("worker") {
            a.workers += 1;
        }
        if let Some(etcd) = &s.etcd {
            if !a.cluster_ids.contains(&etcd.cluster_id) {
                a.cluster_ids.push(etcd.cluster_id.clone());
            }
            let me = etcd.members.iter().find(|m| m.id == etcd.member_id);
            if me.is_some_and(|m| !m.is_learner && m.healthy) {
                a.etcd_voters += 1;
            }
        }
        if s.vip.as_ref().is_some_and(|vip| vip.holder) {
            a.vip_holders.push(v.index);
        }
    }
    a
}

/// A table, one line per node, then the cluster line.
pub fn render(lab: &LabState, views: &[NodeView], a: &Assembly) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<8} {:<12} {:<20} {:<7} {:<14} {:<13} {:<10} VIP\n",
        "NODE", "ADDRESS", "INSTANCE", "POWER", "PHASE", "ROLE", "ETCD"
    ));
    for v in views {
        let instance = lab
            .nodes
            .iter()
            .find(|n| n.index == v.index)
            .map(|n| n.instance_id.as_str())
            .unwrap_or("-");
        let power = match (v.power, v.running) {
            (Power::On, true) => "on",
            (Power::On, false) => "crashed",
            (Power::Off, _) => "off",
            (Power::Gone, _) => "gone",
        };
        let (phase, role, etcd, vip) = match &v.status {
            Ok(s) => (
                phase_name(s.phase),
                s.role.clone().unwrap_or_else(|| "-".into()),
                etcd_cell(s),
                s.vip.as_ref().map_or("-".into(), |v| v.role.clone()),
            ),
            Err(_) if v.power != Power::On => ("-".into(), "-".into(), "-".into(), "-".into()),
            Err(_) => ("booting".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<12} {:<20} {:<7} {:<14} {:<13} {:<10} {}",
            node_name(v.index),
            v.ip,
            instance,
            power,
            phase,
            role,
            etcd,
            vip
        );
    }
    let _ = writeln!(
        out,
        "cluster: {} etcd voter(s) of {} wanted, {} cluster id(s), {} worker(s), VIP {} {}",
        a.etcd_voters,
        lab.expected_control_plane(),
        a.cluster_ids.len(),
        a.workers,
        lab.vip(),
        match &a.vip_answers_from {
            Some(id) => format!("answers from {id}"),
            None => "not answering".into(),
        }
    );
    out
}

fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}"))
}

fn etcd_cell(s: &Status) -> String {
    let Some(etcd) = &s.etcd else {
        return "-".into();
    };
    let me = etcd.members.iter().find(|m| m.id == etcd.member_id);
    let kind = match me {
        Some(m) if m.is_learner => "learner",
        Some(m) if m.healthy => "voter",
        Some(_) => "unhealthy",
        None => "joining",
    };
    let healthy = etcd.members.iter().filter(|m| m.healthy).count();
    format!("{kind} {healthy}/{}", etcd.members.len())
}

/// What a stuck lab is waiting for, for the timeout message.
pub fn stuck(lab: &LabState, views: &[NodeView], a: &Assembly) -> String {
    let mut why = Vec::new();
    for v in views.iter().filter(|v| v.power == Power::On) {
        match &v.status {
            Err(e) if !v.running => {
                why.push(format!("{}: QEMU is not running ({e})", node_name(v.index)))
            }
            Err(e) => why.push(format!("{}: no status yet ({e})", node_name(v.index))),
            Ok(s) if s.phase == Phase::Failed => why.push(format!(
                "{}: agent failed: {}",
                node_name(v.index),
                s.message.as_deref().unwrap_or("-")
            )),
            Ok(_) => {}
        }
    }
    if a.cluster_ids.len() > 1 {
        why.push(format!(
            "{} etcd clusters formed (S1 violated)",
            a.cluster_ids.len()
        ));
    }
    if a.etcd_voters < lab.expected_control_plane() {
        why.push(format!(
            "{} of {} etcd voters",
            a.etcd_voters,
            lab.expected_control_plane()
        ));
    }
    match a.vip_holders.len() {
        0 => why.push("no VIP holder".into()),
        1 if a.vip_answers_from.is_none() => why.push("the VIP does not answer".into()),
        1 => {}
        n => why.push(format!("{n} nodes claim the VIP (S4 violated)")),
    }
    why.join("; ")
}
