//! The pure decisions of backups and restores: snapshot names, when one is
//! due, which to delete, which to restore, and whether a restore may go
//! ahead. Everything here is tested without a store or an etcd.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// `20261206T013000Z`: sorts as time does.
const STAMP: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// A snapshot's file name: `{cluster}-{UTC time}-r{revision}.db`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotName {
    /// Seconds since the Unix epoch (first: names order by time).
    pub taken_at: u64,
    pub revision: i64,
    pub cluster: String,
}

impl SnapshotName {
    pub fn file_name(&self) -> String {
        let stamp = i64::try_from(self.taken_at)
            .ok()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(STAMP).ok())
            .unwrap_or_else(|| "00000000T000000Z".into());
        format!("{}-{stamp}-r{}.db", self.cluster, self.revision)
    }

    /// The name of a file of `cluster`'s, or `None` for anything else in
    /// the same place (another cluster's snapshot, a partial upload).
    pub fn parse(cluster: &str, file: &str) -> Option<SnapshotName> {
        let rest = file.strip_prefix(cluster)?.strip_prefix('-')?;
        let rest = rest.strip_suffix(".db")?;
        let (stamp, revision) = rest.split_once("-r")?;
        let revision: i64 = revision.parse().ok()?;
        let taken = time::PrimitiveDateTime::parse(stamp, STAMP)
            .ok()?
            .assume_utc()
            .unix_timestamp();
        Some(SnapshotName {
            taken_at: u64::try_from(taken).ok()?,
            revision,
            cluster: cluster.to_string(),
        })
    }
}

/// The newest of `names` (by time, then revision).
pub fn newest(names: &[SnapshotName]) -> Option<&SnapshotName> {
    names.iter().max()
}

/// Whether a snapshot is due at `now` when the newest one was taken at
/// `newest` (the store's listing, so a new leader does not take one again).
pub fn due(now: u64, newest: Option<u64>, schedule: Duration) -> bool {
    newest.is_none_or(|t| now.saturating_sub(t) >= schedule.as_secs().max(1))
}

/// The snapshots to delete so that the newest `keep` stay.
pub fn prune(names: &[SnapshotName], keep: u16) -> Vec<SnapshotName> {
    let mut sorted = names.to_vec();
    sorted.sort();
    let extra = sorted.len().saturating_sub(usize::from(keep.max(1)));
    sorted.truncate(extra);
    sorted
}

/// `etcd.restore`: the newest snapshot, or one by its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Latest,
    Named(String),
}

impl Wanted {
    pub fn from_config(value: &str) -> Wanted {
        match value {
            "latest" => Wanted::Latest,
            name => Wanted::Named(name.to_string()),
        }
    }
}

/// The snapshot a restore uses, or why there is none to use.
pub fn choose(
    names: &[SnapshotName],
    wanted: &Wanted,
    place: &str,
) -> Result<SnapshotName, String> {
    match wanted {
        Wanted::Latest => newest(names)
            .cloned()
            .ok_or_else(|| format!("etcd.restore is `latest` but {place} holds no snapshot of this cluster")),
        Wanted::Named(file) => names
            .iter()
            .find(|n| n.file_name() == *file)
            .cloned()
            .ok_or_else(|| {
                let newest = newest(names).map_or("none".into(), SnapshotName::file_name);
                format!("etcd.restore names {file}, which {place} does not hold (newest there: {newest})")
            }),
    }
}

/// Whether a restore of `latest` may go ahead at `now`. A cluster that
/// still runs somewhere (another group, a network this one cannot reach)
/// keeps writing snapshots: while the newest is younger than two
/// schedules, restoring would found a second cluster of the same name, so
/// the node waits. Naming a snapshot skips the wait: the operator has
/// said which state to bring back.
pub fn restore_gate(
    now: u64,
    newest_taken: u64,
    schedule: Duration,
    wanted: &Wanted,
) -> Result<(), String> {
    let age = now.saturating_sub(newest_taken);
    let quiet = schedule.as_secs().max(1).saturating_mul(2);
    if *wanted == Wanted::Latest && age < quiet {
        return Err(format!(
            "not restoring yet: the newest snapshot is {age}s old, so the cluster may still be live and writing them (waiting until none is younger than {quiet}s, two schedules; name a snapshot in etcd.restore to restore now)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(taken_at: u64, revision: i64) -> SnapshotName {
        SnapshotName {
            taken_at,
            revision,
            cluster: "prod-eu".into(),
        }
    }

    #[test]
    fn names_carry_cluster_time_and_revision_and_read_back() {
        // 2026-12-06T01:30:00Z
        let n = name(1_796_520_600, 4242);
        assert_eq!(n.file_name(), "prod-eu-20261206T013000Z-r4242.db");
        assert_eq!(
            SnapshotName::parse("prod-eu", &n.file_name()),
            Some(n.clone())
        );
        // Another cluster whose name starts the same is not ours.
        assert_eq!(SnapshotName::parse("prod", &n.file_name()), None);
        for other in [
            "prod-eu-20261206T013000Z-r42.db.part",
            "prod-eu-yesterday-r1.db",
            "notes.txt",
        ] {
            assert_eq!(SnapshotName::parse("prod-eu", other), None, "{other}");
        }
    }

    #[test]
    fn a_snapshot_is_due_once_a_schedule_has_passed_since_the_newest() {
        let hour = Duration::from_secs(3600);
        assert!(due(1_000, None, hour));
        assert!(!due(4_599, Some(1_000), hour));
        assert!(due(4_600, Some(1_000), hour));
        // A clock behind the newest snapshot's (another node's) waits.
        assert!(!due(900, Some(1_000), hour));
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let names = vec![name(30, 3), name(10, 1), name(40, 4), name(20, 2)];
        assert_eq!(prune(&names, 2), vec![name(10, 1), name(20, 2)]);
        assert!(prune(&names, 4).is_empty());
        assert!(prune(&names, 9).is_empty());
        // Keeping none would delete the snapshot just taken.
        assert_eq!(prune(&names, 0).len(), 3);
    }

    #[test]
    fn a_restore_takes_the_newest_or_the_named_one() {
        let names = vec![name(10, 1), name(30, 3), name(20, 2)];
        let place = "s3://b/p";
        assert_eq!(choose(&names, &Wanted::Latest, place), Ok(name(30, 3)));
        let second = name(20, 2).file_name();
        assert_eq!(
            choose(&names, &Wanted::from_config(&second), place),
            Ok(name(20, 2))
        );
        let missing = choose(&names, &Wanted::Named("prod-eu-x.db".into()), place);
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("prod-eu-x.db") && e.contains("s3://b/p")),
            "{missing:?}"
        );
        assert!(choose(&[], &Wanted::Latest, place).is_err_and(|e| e.contains("no snapshot")));
    }

    #[test]
    fn latest_waits_while_a_live_cluster_may_still_write_snapshots() {
        let schedule = Duration::from_secs(60);
        let gate = |age: u64, wanted: &Wanted| restore_gate(10_000, 10_000 - age, schedule, wanted);
        assert!(gate(30, &Wanted::Latest).is_err_and(|e| e.contains("30s old")));
        assert!(gate(119, &Wanted::Latest).is_err());
        assert!(gate(120, &Wanted::Latest).is_ok());
        assert!(gate(5, &Wanted::Named("x".into())).is_ok());
    }
}
