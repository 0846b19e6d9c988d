//! etcd's own membership history, read from its logs, so that the fault
//! campaign checks S3 against what etcd did rather than what the agents
//! report. Every member logs each configuration change it applies
//! (`applied a configuration change through raft`: add learner, add or
//! promote a voter, remove) and every member it learns of (`added member`,
//! with its peer URL). The members a cluster was bootstrapped with are the
//! ones added without a configuration change (etcd 3.5.16 logs none for
//! them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    AddLearner,
    /// A voter added, or a learner promoted.
    AddVoter,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    pub change: Change,
    pub id: String,
}

#[derive(Debug, Default)]
pub struct History {
    /// Voters the cluster was bootstrapped with.
    pub initial: BTreeSet<String>,
    /// Changes in the order they were applied (the earliest log line of
    /// each across all members).
    pub events: Vec<Event>,
    /// Each member's machine, from its peer URL.
    pub address: BTreeMap<String, Ipv4Addr>,
}

/// Reads the history from the etcd logs of every member of one cluster.
pub fn read(logs: &[&Path]) -> History {
    let mut first_seen: BTreeMap<(Change, String), SystemTime> = BTreeMap::new();
    let mut added = BTreeSet::new();
    let mut address = BTreeMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(at) = entry["ts"].as_str().and_then(parse_ts) else {
                continue;
            };
            match entry["msg"].as_str() {
                Some("added member") => {
                    if let Some(id) = entry["added-peer-id"].as_str() {
                        added.insert(id.to_string());
                        if let Some(ip) =
                            entry["added-peer-peer-urls"][0].as_str().and_then(url_host)
                        {
                            address.insert(id.to_string(), ip);
                        }
                    }
                }
                Some("applied a configuration change through raft") => {
                    let change = match entry["raft-conf-change"].as_str() {
                        Some("ConfChangeAddLearnerNode") => Change::AddLearner,
                        Some("ConfChangeAddNode") => Change::AddVoter,
                        Some("ConfChangeRemoveNode") => Change::Remove,
                        _ => continue,
                    };
                    if let Some(id) = entry["raft-conf-change-node-id"].as_str() {
                        let key = (change, id.to_string());
                        let t = first_seen.entry(key).or_insert(at);
                        *t = (*t).min(at);
                    }
                }
                _ => {}
            }
        }
    }
    let changed: BTreeSet<&String> = first_seen.keys().map(|(_, id)| id).collect();
    let initial = added
        .iter()
        .filter(|id| !changed.contains(id))
        .cloned()
        .collect();
    let mut events: Vec<Event> = first_seen
        .into_iter()
        .map(|((change, id), at)| Event { at, change, id })
        .collect();
    events.sort_by_key(|e| (e.at, e.change));
    History {
        initial,
        events,
        address,
    }
}

/// A removal that left the remaining voters without a quorum of live
/// machines, as `alive(address, at)` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenQuorum {
    pub at: SystemTime,
    pub removed: String,
    pub remaining: usize,
    pub alive: usize,
}

/// Replays the history and checks S3 at every removal of a voter. A member
/// whose machine is unknown counts as alive (the check never blames a
/// removal on a missing mapping).
pub fn removals_that_broke_quorum(
    history: &History,
    alive: impl Fn(Ipv4Addr, SystemTime) -> bool,
) -> Vec<BrokenQuorum> {
    let mut voters = history.initial.clone();
    let mut broken = Vec::new();
    for e in &history.events {
        match e.change {
            Change::AddLearner => {}
            Change::AddVoter => {
                voters.insert(e.id.clone());
            }
            Change::Remove => {
                if voters.remove(&e.id) {
                    let live = voters
                        .iter()
                        .filter(|id| history.address.get(*id).is_none_or(|ip| alive(*ip, e.at)))
                        .count();
                    if live < voters.len() / 2 + 1 {
                        broken.push(BrokenQuorum {
                            at: e.at,
                            removed: e.id.clone(),
                            remaining: voters.len(),
                            alive: live,
                        });
                    }
                }
            }
        }
    }
    broken
}

/// The number of changes of each kind, for a run's summary.
pub fn counts(history: &History) -> (usize, usize, usize) {
    let n = |c| history.events.iter().filter(|e| e.change == c).count();
    (
        n(Change::AddLearner),
        n(Change::AddVoter),
        n(Change::Remove),
    )
}

fn url_host(url: &str) -> Option<Ipv4Addr> {
    let rest = url.split("://").nth(1)?;
    rest.rsplit_once(':')?.0.parse().ok()
}

/// `2026-12-05T18:30:28.181196Z` (etcd's zap timestamps, UTC).
fn parse_ts(ts: &str) -> Option<SystemTime> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i32>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    let days = days_from_civil(year, month as u32, day as u32)?;
    let secs = days.checked_mul(86_400)? + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm), for dates after it.
fn days_from_civil(y: i32, m: u32, d: u32) -> Option<u64> {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400) as u32;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era as i64 * 146_097 + doe as i64 - 719_468;
    u64::try_from(days).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_is_checked_against_the_machines_alive_then() {
        let ip = |n| Ipv4Addr::new(10, 0, 0, n);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let history = History {
            initial: ["a", "b", "c"].map(String::from).into(),
            events: vec![Event {
                at: t0,
                change: Change::Remove,
                id: "b".into(),
            }],
            address: [("a", ip(1)), ("b", ip(2)), ("c", ip(3))]
                .map(|(id, ip)| (id.to_string(), ip))
                .into(),
        };
        assert!(removals_that_broke_quorum(&history, |_, _| true).is_empty());
        // c's machine was down when b was removed: {a, c} with one alive.
        let broken = removals_that_broke_quorum(&history, |a, _| a != ip(3));
        assert_eq!(
            broken,
            [BrokenQuorum {
                at: t0,
                removed: "b".into(),
                remaining: 2,
                alive: 1
            }]
        );
    }

    #[test]
    fn timestamps_are_read_as_utc() {
        let t = super::parse_ts("2026-12-05T18:30:28.181196Z").expect("parse");
        let secs = t
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .expect("after the epoch");
        // date -u -d 2026-12-05T18:30:28Z +%s
        assert_eq!(secs.as_secs(), 1_796_495_428);
        assert_eq!(secs.subsec_micros(), 181_196);
    }
}
