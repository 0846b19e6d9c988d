//! `muster lab upgrade --image NEW.qcow2`: replaces every machine of the
//! lab with one launched from a new image, one at a time, control planes
//! first, the way an Auto Scaling instance refresh with a termination hook
//! does it:
//!
//! 1. the group puts the machine in `Terminating:Wait` (its agent sees
//!    itself leaving: its Node is drained, it hands etcd leadership and
//!    its member on and lets the VIP go, then completes the lifecycle
//!    action; docs/design/bootstrap.md, "Leaving on purpose");
//! 2. once it has (or the hook's heartbeat timeout passed: the group then
//!    goes on, as AWS does with `DefaultResult=CONTINUE`), the machine is
//!    terminated and a replacement from the new image is launched;
//! 3. the next step starts when the cluster has assembled again.
//!
//! Throughout, the Kubernetes API is read through the VIP once a second (a
//! namespace list: a quorum read, so etcd is in it too); each step reports
//! its longest gap. The same reads over a quiet stretch before the first
//! step give the lab's figure at rest, which the steps compare against.
//! A replacement runs at a lower CPU priority until its step has assembled
//! (`cpu`: the lab's VMs share the host's cores; real machines do not).
//! Deciding the order and the gaps is pure; the rest is the lab's own
//! operations.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::LabError;
use super::cloud;
use super::net;
use super::ops::Lab;
use super::progress::NodeView;
use super::spec::{Power, node_name};

/// How long a leaving machine may hold its termination: the lab hook's
/// `HeartbeatTimeout`.
pub const LEAVE_LIMIT: Duration = Duration::from_secs(cloud::REPLACE_HOOK_TIMEOUT_SECS);
/// How often the API is read during a step.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How `lab upgrade` runs.
#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    /// How long each step may take to assemble again.
    pub limit: Duration,
    /// The nice value (0-19) replacements run at until their step has
    /// assembled; 0 leaves them as the others.
    pub replacement_nice: i32,
    /// How long the API is read before the first step, for the figure at
    /// rest; zero skips it.
    pub baseline: Duration,
}

/// The API reads over a stretch: a step, or the lab at rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reads {
    pub probes: usize,
    pub failed_probes: usize,
    pub longest_gap: Gap,
}

impl Reads {
    /// `samples`: (time since the stretch began, answered), in order. Pure.
    pub fn of(samples: &[(Duration, bool)]) -> Reads {
        Reads {
            probes: samples.len(),
            failed_probes: samples.iter().filter(|(_, ok)| !ok).count(),
            longest_gap: longest_gap(samples),
        }
    }
}

/// The API reads over a stretch without a step (`UpgradeOptions::baseline`).
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub length: Duration,
    pub reads: Reads,
}

/// What one replacement did.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub node: String,
    pub role: String,
    pub replacement: String,
    /// From `Terminating:Wait` until its agent completed the action (or the
    /// hook timed out: `completed` is false).
    pub leave: Duration,
    pub completed: bool,
    /// From `Terminating:Wait` until the cluster had assembled again.
    pub step: Duration,
    pub reads: Reads,
}

/// The order machines are replaced in: control planes first (their etcd
/// members and apiservers are what a step can break), then the rest, each
/// by index. Only powered-on machines. Pure.
pub fn order(nodes: &[(u32, Power, Option<String>)]) -> Vec<u32> {
    let mut on: Vec<&(u32, Power, Option<String>)> =
        nodes.iter().filter(|(_, p, _)| *p == Power::On).collect();
    on.sort_by_key(|(index, _, role)| (role.as_deref() != Some("control-plane"), *index));
    on.into_iter().map(|(index, _, _)| *index).collect()
}

/// The longest time the API went without a successful read, and when
/// that gap began: from the last success before a run of failures to the
/// first success after it (to the last probe when it never came back).
/// `samples` are (time since the step started, answered), in order. Pure.
pub fn longest_gap(samples: &[(Duration, bool)]) -> Gap {
    let mut longest = Gap::default();
    let mut last_ok: Option<Duration> = None;
    let mut failing_since: Option<Duration> = None;
    let mut consider = |from: Duration, to: Duration| {
        let length = to.saturating_sub(from);
        if length > longest.length {
            longest = Gap { length, from };
        }
    };
    for &(at, ok) in samples {
        if ok {
            if let Some(since) = failing_since.take() {
                consider(last_ok.unwrap_or(since), at);
            }
            last_ok = Some(at);
        } else if failing_since.is_none() {
            failing_since = Some(at);
        }
    }
    if let (Some(since), Some(&(end, _))) = (failing_since, samples.last()) {
        consider(last_ok.unwrap_or(since), end);
    }
    longest
}

/// A stretch without a successful API read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    pub length: Duration,
    /// When it began, from the start of the step.
    pub from: Duration,
}

/// Reads the API through the VIP once a second on a thread of its own.
struct ApiProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Duration, bool)>>,
}

impl ApiProbe {
    fn start(netns: String, admin: std::path::PathBuf) -> ApiProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let round = Instant::now();
                let ok = net::api_reads(&netns, &admin, PROBE_TIMEOUT);
                samples.push((started.elapsed(), ok));
                std::thread::sleep(PROBE_EVERY.saturating_sub(round.elapsed()));
            }
            samples
        });
        ApiProbe { stop, thread }
    }

    fn finish(self) -> Vec<(Duration, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn role_of(view: &NodeView) -> Option<String> {
    view.status.as_ref().ok().and_then(|s| s.role.clone())
}

impl Lab {
    /// `muster lab upgrade --image NEW`: see the module doc.
    pub fn upgrade(
        &self,
        image: &Path,
        options: &UpgradeOptions,
    ) -> Result<Vec<StepReport>, LabError> {
        if !(0..=19).contains(&options.replacement_nice) {
            return Err(LabError::Usage(format!(
                "--replacement-nice {}: a nice value is 0 to 19",
                options.replacement_nice
            )));
        }
        if !image.is_file() {
            return Err(LabError::Usage(format!(
                "image {}: not found; build it with `bash image/build.sh`",
                image.display()
            )));
        }
        let p = self.paths();
        let mut lab = self.load()?;
        if lab.boot != super::spec::BootMode::Disk {
            return Err(LabError::Usage(
                "lab upgrade replaces disk-booted machines; a PXE lab boots whatever its PXE set is"
                    .into(),
            ));
        }
        let views = self.views(&lab);
        let plan = order(
            &views
                .iter()
                .map(|v| (v.index, v.power, role_of(v)))
                .collect::<Vec<_>>(),
        );
        // Replacements launch from a copy of the new image, as `up` does.
        let copy = p.upgrade_image(crate::state::now_secs());
        std::fs::copy(image, &copy).map_err(LabError::io(&copy))?;
        lab.image = copy;
        self.save(&lab)?;
        println!(
            "upgrading {} machines one at a time, control planes first: {}",
            plan.len(),
            plan.iter()
                .map(|i| node_name(*i))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let baseline = self.baseline(options.baseline)?;
        let mut reports = Vec::new();
        for index in plan {
            reports.push(self.replace_one(index, &views, options)?);
        }
        self.print_upgrade(baseline.as_ref(), &reports)?;
        Ok(reports)
    }

    /// Reads the API for `length` with no step going on.
    fn baseline(&self, length: Duration) -> Result<Option<Baseline>, LabError> {
        if length.is_zero() {
            return Ok(None);
        }
        let lab = self.load()?;
        println!(
            "reading the API through the VIP for {} s before the first step (the lab at rest)",
            length.as_secs()
        );
        let probe = ApiProbe::start(lab.netns(), self.paths().admin_conf());
        std::thread::sleep(length);
        let samples = probe.finish();
        let baseline = Baseline {
            length,
            reads: Reads::of(&samples),
        };
        println!(
            "at rest: API reads failed {} of {}, longest gap {:.1} s",
            baseline.reads.failed_probes,
            baseline.reads.probes,
            baseline.reads.longest_gap.length.as_secs_f64()
        );
        Ok(Some(baseline))
    }

    fn replace_one(
        &self,
        index: u32,
        views: &[NodeView],
        options: &UpgradeOptions,
    ) -> Result<StepReport, LabError> {
        let p = self.paths();
        let mut lab = self.load()?;
        let name = node_name(index);
        let role = views
            .iter()
            .find(|v| v.index == index)
            .and_then(role_of)
            .unwrap_or_else(|| "-".into());
        let Some(node) = lab.nodes.iter_mut().find(|n| n.index == index) else {
            return Err(LabError::Usage(format!("no {name} in the lab")));
        };
        node.leaving = true;
        let instance_id = node.instance_id.clone();
        let probe = ApiProbe::start(lab.netns(), p.admin_conf());
        let started = Instant::now();
        self.save(&lab)?;
        println!("{name} ({role}): Terminating:Wait; waiting for its agent to hand off");
        let marker = cloud::completion_marker(&p.completions(), &instance_id);
        let completed = loop {
            if marker.exists() {
                break true;
            }
            if started.elapsed() >= LEAVE_LIMIT {
                break false;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let leave = started.elapsed();
        if completed {
            println!(
                "{name}: its agent completed the lifecycle action after {:.0} s; terminating it",
                leave.as_secs_f64()
            );
        } else {
            println!(
                "{name}: no completion within {} s (the hook's timeout); terminating it anyway",
                LEAVE_LIMIT.as_secs()
            );
        }
        self.kill(&name)?;
        let added = self.add(1)?;
        let replacement = added.first().cloned().unwrap_or_default();
        if options.replacement_nice != 0 {
            self.set_nice(&replacement, options.replacement_nice)?;
            println!(
                "{replacement}: runs at nice {} until the cluster has assembled again",
                options.replacement_nice
            );
        }
        let assembled = self.wait(options.limit);
        let samples = probe.finish();
        if options.replacement_nice != 0 {
            self.set_nice(&replacement, 0)?;
        }
        assembled?;
        let report = StepReport {
            node: name,
            role,
            replacement,
            leave,
            completed,
            step: started.elapsed(),
            reads: Reads::of(&samples),
        };
        println!(
            "{} -> {}: {:.0} s; API reads failed {} of {}, longest gap {:.1} s from +{:.0} s ({})",
            report.node,
            report.replacement,
            report.step.as_secs_f64(),
            report.reads.failed_probes,
            report.reads.probes,
            report.reads.longest_gap.length.as_secs_f64(),
            report.reads.longest_gap.from.as_secs_f64(),
            if report.reads.longest_gap.from < report.leave {
                "during the hand-off"
            } else {
                "while the replacement joined"
            }
        );
        Ok(report)
    }

    /// The steps as a table, and the image version every machine runs now.
    fn print_upgrade(
        &self,
        baseline: Option<&Baseline>,
        reports: &[StepReport],
    ) -> Result<(), LabError> {
        println!(
            "{:<8} {:<14} {:<8} {:>9} {:>8} {:>14} {:>12} {:>8}",
            "node", "role", "new", "handoff", "step", "API failed", "longest gap", "from"
        );
        if let Some(b) = baseline {
            println!(
                "{:<8} {:<14} {:<8} {:>10} {:>7.0}s {:>9}/{:<4} {:>11.1}s",
                "at rest",
                "-",
                "-",
                "-",
                b.length.as_secs_f64(),
                b.reads.failed_probes,
                b.reads.probes,
                b.reads.longest_gap.length.as_secs_f64()
            );
        }
        for r in reports {
            println!(
                "{:<8} {:<14} {:<8} {:>8.0}s{} {:>7.0}s {:>9}/{:<4} {:>11.1}s {:>7.0}s",
                r.node,
                r.role,
                r.replacement,
                r.leave.as_secs_f64(),
                if r.completed { " " } else { "!" },
                r.step.as_secs_f64(),
                r.reads.failed_probes,
                r.reads.probes,
                r.reads.longest_gap.length.as_secs_f64(),
                r.reads.longest_gap.from.as_secs_f64()
            );
        }
        if reports.iter().any(|r| !r.completed) {
            println!("! the agent did not complete the lifecycle action in time");
        }
        let lab = self.load()?;
        for v in self.views(&lab).iter().filter(|v| v.power == Power::On) {
            let version = v
                .status
                .as_ref()
                .ok()
                .and_then(|s| s.image.as_ref())
                .and_then(|i| i.version.clone())
                .unwrap_or_else(|| "-".into());
            println!("{}: image {version}", node_name(v.index));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_planes_go_first_and_machines_that_are_off_or_gone_are_skipped() {
        let cp = Some("control-plane".to_string());
        let w = Some("worker".to_string());
        let nodes = vec![
            (1, Power::On, w.clone()),
            (2, Power::On, cp.clone()),
            (3, Power::Gone, cp.clone()),
            (4, Power::On, None),
            (5, Power::On, cp.clone()),
            (6, Power::Off, w),
        ];
        assert_eq!(order(&nodes), vec![2, 5, 1, 4]);
    }

    fn gap(length: u64, from: u64) -> Gap {
        Gap {
            length: Duration::from_secs(length),
            from: Duration::from_secs(from),
        }
    }

    fn s(secs: &[(u64, bool)]) -> Vec<(Duration, bool)> {
        secs.iter()
            .map(|&(t, ok)| (Duration::from_secs(t), ok))
            .collect()
    }

    #[test]
    fn a_gap_runs_from_the_last_answer_to_the_next() {
        assert_eq!(longest_gap(&s(&[(0, true), (1, true)])), Gap::default());
        // Failed at 2 and 3, back at 4: 3 s without an answer since 1.
        assert_eq!(
            longest_gap(&s(&[
                (0, true),
                (1, true),
                (2, false),
                (3, false),
                (4, true),
                (5, false),
                (6, true)
            ])),
            gap(3, 1)
        );
    }

    #[test]
    fn reads_count_the_failures_and_keep_the_longest_gap() {
        let reads = Reads::of(&s(&[
            (0, true),
            (1, false),
            (2, false),
            (4, true),
            (5, false),
        ]));
        assert_eq!((reads.probes, reads.failed_probes), (5, 3));
        assert_eq!(reads.longest_gap, gap(4, 0));
    }

    #[test]
    fn a_gap_that_never_closed_or_began_at_once_counts_to_the_edges() {
        assert_eq!(
            longest_gap(&s(&[(0, true), (1, false), (7, false)])),
            gap(7, 0)
        );
        assert_eq!(
            longest_gap(&s(&[(0, false), (2, false), (3, true)])),
            gap(3, 0)
        );
    }
}
