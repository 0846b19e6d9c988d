//! What `lab up` and `lab status` show: each node's view from its agent's
//! status endpoint, and whether the cluster has assembled. Pure: `ops`
//! fetches the statuses, this decides and renders.

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
    /// The last line on its serial console: what a booting VM is doing
    /// before its agent answers.
    pub console: Option<String>,
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
    /// VIP takeovers the live nodes' agents report, all together: 1 for a
    /// cluster whose VIP never moved.
    pub vip_takeovers: u32,
    /// The nodes carry Kubernetes (their image says so, or they run it):
    /// assembly then includes the API answering through the VIP.
    pub kubernetes: bool,
    /// The Kubernetes API answered `/readyz` through the VIP (filled in by
    /// the caller).
    pub api_ready: bool,
    /// Powered nodes whose agent reports its Kubernetes Node `Ready`.
    pub nodes_ready: usize,
}

impl Assembly {
    /// Done: one etcd cluster with every control-plane node a healthy
    /// voter, every other powered node a worker, the VIP answering from
    /// the one node that claims it, and (when the nodes carry Kubernetes)
    /// the API answering through the VIP and every powered node a Ready
    /// Kubernetes node.
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
            && (!self.kubernetes || (self.api_ready && self.nodes_ready == powered))
    }
}

impl Assembly {
    /// The node the VIP answers from, and since when (Unix seconds) it has
    /// held it, by that node's own account.
    pub fn vip_holder<'a>(&self, views: &'a [NodeView]) -> Option<(&'a NodeView, u64)> {
        let id = self.vip_answers_from.as_deref()?;
        views.iter().find_map(|v| {
            let s = v.status.as_ref().ok()?;
            let vip = s.vip.as_ref().filter(|vip| vip.holder)?;
            (s.instance_id.as_deref() == Some(id)).then_some((v, vip.since))
        })
    }
}

/// Consecutive assessments that must agree before `lab up` calls the
/// cluster assembled: one good moment is luck, several in a row (2 s
/// apart) mean the VIP has settled on its holder.
pub const SETTLED_AFTER: u32 = 3;

/// Counts how many assessments in a row found the cluster assembled with
/// the VIP answering from the same instance.
#[derive(Debug, Default, Clone)]
pub struct Settling {
    holder: Option<String>,
    streak: u32,
}

impl Settling {
    /// Records one assessment; true once [`SETTLED_AFTER`] in a row agree.
    pub fn record(&mut self, assembled: bool, answers_from: Option<&str>) -> bool {
        match (assembled, answers_from) {
            (true, Some(id)) if self.holder.as_deref() == Some(id) => self.streak += 1,
            (true, Some(id)) => {
                self.holder = Some(id.to_string());
                self.streak = 1;
            }
            _ => {
                self.holder = None;
                self.streak = 0;
            }
        }
        self.streak >= SETTLED_AFTER
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
        vip_takeovers: 0,
        kubernetes: false,
        api_ready: false,
        nodes_ready: 0,
    };
    for v in views.iter().filter(|v| v.power == Power::On) {
        let Ok(s) = &v.status else { continue };
        if s.kubernetes.is_some()
            || s.image
                .as_ref()
                .is_some_and(|i| i.kubernetes_version.is_some())
        {
            a.kubernetes = true;
        }
        if s.kubernetes
            .as_ref()
            .and_then(|k| k.node.as_ref())
            .is_some_and(|n| n.ready)
        {
            a.nodes_ready += 1;
        }
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
        if let Some(vip) = &s.vip {
            a.vip_takeovers += vip.takeovers;
            if vip.holder {
                a.vip_holders.push(v.index);
            }
        }
    }
    a
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<8} {:<12} {:<20} {:<7} {:<14} {:<13} {:<9} {:<13} {:<16} CONSOLE",
        "NODE", "ADDRESS", "INSTANCE", "POWER", "PHASE", "ROLE", "ETCD", "VIP", "KUBERNETES"
    )
}

/// One line per node. A node whose agent does not answer yet shows the
/// last line of its console instead (a TCG boot takes a minute or more).
/// Without `now_unix` the lines carry no ages (to compare them over time).
pub fn node_lines(lab: &LabState, views: &[NodeView], now_unix: Option<u64>) -> Vec<String> {
    views
        .iter()
        .map(|v| {
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
            let dash = || "-".to_string();
            let (phase, role, etcd, vip, k8s) = match &v.status {
                Ok(s) => (
                    phase_name(s.phase),
                    s.role.clone().unwrap_or_else(dash),
                    etcd_cell(s),
                    vip_cell(s, now_unix),
                    kubernetes_cell(s),
                ),
                Err(_) if v.power != Power::On => (dash(), dash(), dash(), dash(), dash()),
                Err(_) => ("booting".into(), dash(), dash(), dash(), dash()),
            };
            let console = match (&v.status, v.power, &v.console) {
                (Err(_), Power::On, Some(line)) => shorten(line, 60),
                _ => String::new(),
            };
            format!(
                "{:<8} {:<12} {:<20} {:<7} {:<14} {:<13} {:<9} {:<13} {:<16} {}",
                node_name(v.index),
                v.ip,
                instance,
                power,
                phase,
                role,
                etcd,
                vip,
                k8s,
                console
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

/// The cluster as a whole, in one line.
pub fn cluster_line(
    lab: &LabState,
    views: &[NodeView],
    a: &Assembly,
    now_unix: Option<u64>,
) -> String {
    let members = members_view(views)
        .map(|(node, healthy, total)| {
            format!("; etcd members healthy {healthy}/{total} ({node}'s view)")
        })
        .unwrap_or_default();
    let vip = match (&a.vip_answers_from, a.vip_holder(views)) {
        (Some(id), Some((v, since))) => format!(
            "answers from {id} ({}){}",
            node_name(v.index),
            age(" for ", since, now_unix, " s")
        ),
        (Some(id), None) => format!("answers from {id}"),
        (None, _) => "not answering".into(),
    };
    let api = match (a.kubernetes, a.api_ready) {
        (false, _) => String::new(),
        (true, ready) => format!(
            "; API https://{}:6443 {}, {} node(s) Ready",
            lab.vip(),
            if ready { "ready" } else { "not ready" },
            a.nodes_ready
        ),
    };
    format!(
        "cluster: {} etcd voter(s) of {} wanted, {} cluster id(s), {} worker(s){members}; VIP {} {vip}; {} takeover(s) by live nodes{api}",
        a.etcd_voters,
        lab.expected_control_plane(),
        a.cluster_ids.len(),
        a.workers,
        lab.vip(),
        a.vip_takeovers,
    )
}

/// A table, one line per node, then the cluster line.
pub fn render(lab: &LabState, views: &[NodeView], a: &Assembly, now_unix: Option<u64>) -> String {
    let mut out = header();
    out.push('\n');
    for line in node_lines(lab, views, now_unix) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&cluster_line(lab, views, a, now_unix));
    out.push('\n');
    out
}

/// The etcd member health as the etcd leader's agent last reported it
/// (its view is the one that acts): (node, healthy, members).
fn members_view(views: &[NodeView]) -> Option<(String, usize, usize)> {
    views
        .iter()
        .filter(|v| v.power == Power::On)
        .filter_map(|v| Some((v, v.status.as_ref().ok()?.etcd.as_ref()?)))
        .find(|(_, e)| !e.leader_id.is_empty() && e.leader_id == e.member_id)
        .map(|(v, e)| {
            (
                node_name(v.index),
                e.members.iter().filter(|m| m.healthy).count(),
                e.members.len(),
            )
        })
}

fn shorten(line: &str, max: usize) -> String {
    let line = line.trim();
    if line.chars().count() <= max {
        return line.to_string();
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn vip_cell(s: &Status, now_unix: Option<u64>) -> String {
    match &s.vip {
        None => "-".into(),
        Some(v) if v.holder => format!("holder{}", age(" ", v.since, now_unix, "s")),
        Some(v) => v.role.clone(),
    }
}

/// What Kubernetes does on the node: its apiserver (control plane) and
/// its Node.
fn kubernetes_cell(s: &Status) -> String {
    let Some(k) = &s.kubernetes else {
        return "-".into();
    };
    let mut parts = Vec::new();
    if !k.components.is_empty() {
        parts.push(if k.apiserver_ready {
            "api ok"
        } else {
            "api not ready"
        });
    }
    parts.push(match &k.node {
        Some(n) if n.ready => "Ready",
        Some(n) if n.registered => "NotReady",
        _ => "joining",
    });
    parts.join(", ")
}

/// `{before}{seconds since `since`}{after}`, or nothing without a clock.
fn age(before: &str, since: u64, now_unix: Option<u64>, after: &str) -> String {
    now_unix.map_or_else(String::new, |now| {
        format!("{before}{}{after}", now.saturating_sub(since))
    })
}

fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}"))
}

/// This node's own membership; the cluster-wide health is on the cluster
/// line, from one agent's view, so the two never disagree.
fn etcd_cell(s: &Status) -> String {
    let Some(etcd) = &s.etcd else {
        return "-".into();
    };
    let me = etcd.members.iter().find(|m| m.id == etcd.member_id);
    match me {
        Some(m) if m.is_learner => "learner",
        Some(m) if m.healthy => "voter",
        Some(_) => "unhealthy",
        None => "joining",
    }
    .into()
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
    if a.kubernetes && !a.api_ready {
        why.push("the Kubernetes API does not answer through the VIP".into());
    }
    let powered = views.iter().filter(|v| v.power == Power::On).count();
    if a.kubernetes && a.nodes_ready < powered {
        why.push(format!(
            "{} of {powered} Kubernetes nodes Ready",
            a.nodes_ready
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_only_after_the_same_holder_answers_several_times_in_a_row() {
        let mut s = Settling::default();
        assert!(!s.record(true, Some("i-1")));
        assert!(!s.record(true, Some("i-1")));
        // A move restarts the count.
        assert!(!s.record(true, Some("i-2")));
        assert!(!s.record(true, Some("i-2")));
        // So does a moment without an answer or without assembly.
        assert!(!s.record(true, None));
        assert!(!s.record(true, Some("i-2")));
        assert!(!s.record(false, Some("i-2")));
        for _ in 1..SETTLED_AFTER {
            assert!(!s.record(true, Some("i-2")));
        }
        assert!(s.record(true, Some("i-2")));
    }

    #[test]
    fn console_lines_are_shortened_on_a_char_boundary() {
        assert_eq!(shorten("  short  ", 10), "short");
        assert_eq!(shorten("ééééééééééé", 5), "éééé…");
    }
}
