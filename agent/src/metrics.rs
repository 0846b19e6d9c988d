//! `/metrics`: the agent's status in the Prometheus text exposition format
//! (version 0.0.4). Pure: rendered from a [`Status`], so it shows exactly
//! what `/status` and `muster status` show, and never a secret (S5): the
//! status holds none; plus the call counters it is given
//! ([`crate::calls`]).

use std::fmt::Write as _;

use crate::state::{Phase, Status};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric family of `status`, and the call counters `calls`
/// (`crate::calls::snapshot()` for the live agent).
pub fn render(status: &Status, calls: crate::calls::Counts) -> String {
    let mut out = Metrics::default();
    out.gauge("muster_up", "The agent is running (always 1).", &[("", 1)]);
    let info = [
        ("provider", status.provider.map(|p| p.to_string())),
        ("instance_id", status.instance_id.clone()),
        ("hostname", status.hostname.clone()),
        ("cluster", status.cluster.clone()),
        ("role", status.role.clone()),
    ];
    out.info(
        "muster_node_info",
        "This node's identity and role; empty labels are not known yet.",
        &info,
    );
    let phases: Vec<(String, i64)> = Phase::ALL
        .iter()
        .map(|p| {
            (
                label("phase", &p.to_string()),
                i64::from(*p == status.phase),
            )
        })
        .collect();
    let phases: Vec<(&str, i64)> = phases.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    out.gauge(
        "muster_phase",
        "The agent's boot phase: 1 for the current one, 0 for the others.",
        &phases,
    );
    out.gauge(
        "muster_status_updated_timestamp_seconds",
        "When the status last changed, in seconds since the Unix epoch.",
        &[("", i64::try_from(status.updated_at).unwrap_or(i64::MAX))],
    );
    etcd(&mut out, status);
    out.gauge(
        "muster_vip_holder",
        "1 when the API VIP answers on this node.",
        &[("", i64::from(status.vip.as_ref().is_some_and(|v| v.holder)))],
    );
    vip(&mut out, status);
    kubernetes(&mut out, status);
    image(&mut out, status);
    memory(&mut out, status);
    cpu(&mut out, status);
    backup(&mut out, status);
    call_counters(&mut out, calls);
    out.text
}

/// The call counters (not part of the status: they change every round).
fn call_counters(out: &mut Metrics, counts: crate::calls::Counts) {
    out.counter(
        "muster_group_lists_total",
        "Peer listings through the discovery source since the agent started (cloud API calls for a cloud group).",
        i64::try_from(counts.group_lists).unwrap_or(i64::MAX),
    );
    out.counter(
        "muster_etcd_connections_total",
        "Connections opened to etcd members since the agent started (probes, health checks, the local member).",
        i64::try_from(counts.etcd_connections).unwrap_or(i64::MAX),
    );
}

/// Backups, on the node that took them (the etcd leader's).
fn backup(out: &mut Metrics, status: &Status) {
    let Some(backup) = &status.backup else {
        return;
    };
    out.counter(
        "muster_etcd_backup_failures_total",
        "etcd backups that failed on this node since its agent started.",
        i64::try_from(backup.failures).unwrap_or(i64::MAX),
    );
    let Some(last) = &backup.last else {
        return;
    };
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    out.gauge(
        "muster_etcd_backup_last_success_timestamp_seconds",
        "When this node last stored a checked etcd snapshot, in seconds since the Unix epoch.",
        &[("", int(last.taken_at))],
    );
    out.gauge(
        "muster_etcd_backup_last_size_bytes",
        "Size of the last stored etcd snapshot.",
        &[("", int(last.size_bytes))],
    );
    out.gauge(
        "muster_etcd_backup_last_revision",
        "etcd revision of the last stored snapshot.",
        &[("", last.revision)],
    );
    out.gauge(
        "muster_etcd_backup_last_duration_milliseconds",
        "How long the last backup took: snapshot, check and upload.",
        &[("", int(last.took_ms))],
    );
}

/// Per-part series, `part="NAME"` labelled.
fn per_part(values: &std::collections::BTreeMap<String, u64>, scale: u64) -> Vec<(String, i64)> {
    values
        .iter()
        .map(|(part, v)| {
            let v = v.saturating_mul(scale);
            (label("part", part), i64::try_from(v).unwrap_or(i64::MAX))
        })
        .collect()
}

fn cpu(out: &mut Metrics, status: &Status) {
    if status.cpu_ms.is_empty() {
        return;
    }
    let parts = per_part(&status.cpu_ms, 1);
    let parts: Vec<(&str, i64)> = parts.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    out.family(
        "counter",
        "muster_cpu_milliseconds_total",
        "CPU time each part of the node (its systemd unit's cgroup) has used since it started.",
        &parts,
    );
}

fn memory(out: &mut Metrics, status: &Status) {
    if status.memory_mib.is_empty() {
        return;
    }
    let parts = per_part(&status.memory_mib, 1024 * 1024);
    let parts: Vec<(&str, i64)> = parts.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    out.gauge(
        "muster_memory_bytes",
        "Memory of each part of the node (its systemd unit's cgroup), rounded up to MiB.",
        &parts,
    );
}

fn etcd(out: &mut Metrics, status: &Status) {
    let Some(etcd) = &status.etcd else {
        return;
    };
    let count = |f: &dyn Fn(&crate::state::MemberStatus) -> bool| {
        i64::try_from(etcd.members.iter().filter(|m| f(m)).count()).unwrap_or(i64::MAX)
    };
    out.gauge(
        "muster_etcd_members",
        "etcd members (voting and learners) as the local member lists them.",
        &[("", count(&|_| true))],
    );
    out.gauge(
        "muster_etcd_healthy_members",
        "etcd members that answered a health check in the last round.",
        &[("", count(&|m| m.healthy))],
    );
    out.gauge(
        "muster_etcd_learners",
        "etcd members that are learners (not yet promoted).",
        &[("", count(&|m| m.is_learner))],
    );
    let leads = !etcd.leader_id.is_empty() && etcd.leader_id == etcd.member_id;
    out.gauge(
        "muster_etcd_leader",
        "1 when the local etcd member is the leader.",
        &[("", i64::from(leads))],
    );
}

fn vip(out: &mut Metrics, status: &Status) {
    let Some(vip) = &status.vip else {
        return;
    };
    out.counter(
        "muster_vip_takeovers_total",
        "Times this node took the API VIP since its agent started.",
        i64::from(vip.takeovers),
    );
    let Some(r) = &vip.renewals else {
        return;
    };
    out.gauge(
        "muster_vip_renewal_milliseconds",
        "How long the holder's renewal rounds took: recent p50 and p99, and the maximum since the agent started.",
        &[
            ("quantile=\"0.5\"", i64::from(r.p50_ms)),
            ("quantile=\"0.99\"", i64::from(r.p99_ms)),
            ("quantile=\"1\"", i64::from(r.max_ms)),
        ],
    );
}

fn kubernetes(out: &mut Metrics, status: &Status) {
    let Some(k) = &status.kubernetes else {
        return;
    };
    out.gauge(
        "muster_kubernetes_apiserver_ready",
        "1 when the local kube-apiserver answered /readyz in the last round.",
        &[("", i64::from(k.apiserver_ready))],
    );
    let me = status.hostname.as_deref().map(str::to_ascii_lowercase);
    let leads = |leader: &Option<String>| i64::from(leader.is_some() && *leader == me);
    out.gauge(
        "muster_kubernetes_leader",
        "1 when this node holds the component's leader lease.",
        &[
            (
                "component=\"kube-controller-manager\"",
                leads(&k.controller_manager_leader),
            ),
            ("component=\"kube-scheduler\"", leads(&k.scheduler_leader)),
        ],
    );
    out.gauge(
        "muster_kubernetes_objects_applied",
        "1 once this node has applied the cluster objects since its agent started.",
        &[("", i64::from(k.objects.is_some()))],
    );
}

fn image(out: &mut Metrics, status: &Status) {
    let Some(image) = &status.image else {
        return;
    };
    out.info(
        "muster_image_info",
        "The node image: IMAGE_ID, IMAGE_VERSION and the Kubernetes it carries.",
        &[
            ("id", image.id.clone()),
            ("version", image.version.clone()),
            ("kubernetes_version", image.kubernetes_version.clone()),
        ],
    );
    out.gauge(
        "muster_image_verity",
        "1 when /usr is a dm-verity device.",
        &[("", i64::from(image.usr.verity))],
    );
    out.gauge(
        "muster_image_usr_read_only",
        "1 when /usr is mounted read-only.",
        &[("", i64::from(image.usr.read_only))],
    );
}

/// The text being built, one family at a time.
#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    /// A gauge family: `(labels, value)` per series, labels already
    /// rendered as `name="value"` (empty for none).
    fn gauge(&mut self, name: &str, help: &str, series: &[(&str, i64)]) {
        self.family("gauge", name, help, series);
    }

    /// A family of `kind` (gauge, counter) with its series.
    fn family(&mut self, kind: &str, name: &str, help: &str, series: &[(&str, i64)]) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in series {
            let _ = if labels.is_empty() {
                writeln!(self.text, "{name} {value}")
            } else {
                writeln!(self.text, "{name}{{{labels}}} {value}")
            };
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: i64) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} counter");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// An info-style gauge: one series of value 1 carrying the labels.
    fn info(&mut self, name: &str, help: &str, labels: &[(&str, Option<String>)]) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| label(k, v.as_deref().unwrap_or("")))
            .collect();
        self.gauge(name, help, &[(&labels.join(","), 1)]);
    }
}

/// `name="value"` with the value escaped as the format requires.
fn label(name: &str, value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    format!("{name}=\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a", "x\"y\\z\nw"), r#"a="x\"y\\z\nw""#);
    }

    #[test]
    fn a_fresh_status_has_every_phase_and_no_etcd_or_image_series() {
        let text = render(&Status::new(Phase::Identify), Default::default());
        assert!(text.contains("muster_up 1\n"));
        assert!(text.contains("muster_phase{phase=\"identify\"} 1\n"));
        assert!(text.contains("muster_phase{phase=\"steady-state\"} 0\n"));
        assert_eq!(text.matches("muster_phase{").count(), Phase::ALL.len());
        assert!(text.contains("muster_vip_holder 0\n"));
        assert!(!text.contains("muster_etcd_members"));
        assert!(!text.contains("muster_image_verity"));
    }

    #[test]
    fn memory_is_one_series_per_part_in_bytes() {
        let mut status = Status::new(Phase::SteadyState);
        assert!(!render(&status, Default::default()).contains("muster_memory_bytes"));
        status.memory_mib.insert("etcd".into(), 40);
        status.memory_mib.insert("kubelet".into(), 1);
        let text = render(&status, Default::default());
        assert!(text.contains("muster_memory_bytes{part=\"etcd\"} 41943040\n"));
        assert!(text.contains("muster_memory_bytes{part=\"kubelet\"} 1048576\n"));
    }

    #[test]
    fn cpu_time_is_a_counter_per_part() {
        let mut status = Status::new(Phase::SteadyState);
        assert!(!render(&status, Default::default()).contains("muster_cpu_"));
        status.cpu_ms.insert("apiserver".into(), 61_250);
        let text = render(&status, Default::default());
        assert!(text.contains("# TYPE muster_cpu_milliseconds_total counter\n"));
        assert!(text.contains("muster_cpu_milliseconds_total{part=\"apiserver\"} 61250\n"));
    }

    #[test]
    fn backups_show_their_last_success_and_failures() {
        let mut status = Status::new(Phase::SteadyState);
        assert!(!render(&status, Default::default()).contains("muster_etcd_backup"));
        status.backup = Some(crate::state::BackupStatus {
            target: "s3://b/p".into(),
            failures: 2,
            ..Default::default()
        });
        let text = render(&status, Default::default());
        assert!(text.contains("muster_etcd_backup_failures_total 2\n"));
        assert!(!text.contains("muster_etcd_backup_last_size_bytes"));
        status.backup.as_mut().expect("set").last = Some(crate::state::SnapshotStatus {
            name: "prod-20261206T013000Z-r42.db".into(),
            taken_at: 1_796_520_600,
            revision: 42,
            keys: 10,
            size_bytes: 20_480,
            took_ms: 35,
        });
        let text = render(&status, Default::default());
        assert!(text.contains("muster_etcd_backup_last_success_timestamp_seconds 1796520600\n"));
        assert!(text.contains("muster_etcd_backup_last_size_bytes 20480\n"));
        assert!(text.contains("muster_etcd_backup_last_revision 42\n"));
    }
}
