//! What to change in a zone: `plan(wanted, observed, owner)`. Pure, so the
//! ownership rules are tested without a DNS server.
//!
//! The rules are ExternalDNS's (`plan/plan.go`), so that the agent and a
//! later ExternalDNS with the same owner id agree on what is whose:
//! - a name is ours when its ownership TXT (`registry::txt_name`) carries
//!   our owner id; only then is its record updated or deleted;
//! - a record without that TXT, or with another owner's, is never touched:
//!   it is reported as a conflict (a create is not even tried when a foreign
//!   TXT exists: ExternalDNS issue #6617 leaves such a record unowned);
//! - the agent deletes only inside its scope (the API name and the nodes'
//!   subdomain), never other names its owner id may have in a shared zone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::registry::{self, RecordType};

/// One record set as a provider lists it. Names are lower case without the
/// trailing dot; TXT values are the plain character string (no quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    pub name: String,
    pub kind: RecordType,
    pub ttl: u32,
    pub values: BTreeSet<String>,
}

/// An address record the cluster wants, with the DNSEndpoint it is later
/// described by (its ExternalDNS resource label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub targets: BTreeSet<IpAddr>,
    pub ttl: u32,
    pub resource: String,
}

impl Wanted {
    /// A for IPv4 targets, AAAA for IPv6 ones (the agent publishes one
    /// family per name).
    pub fn kind(&self) -> RecordType {
        match self.targets.iter().next() {
            Some(IpAddr::V6(_)) => RecordType::Aaaa,
            _ => RecordType::A,
        }
    }

    fn record(&self) -> RecordSet {
        RecordSet {
            name: self.name.clone(),
            kind: self.kind(),
            ttl: self.ttl,
            values: self.targets.iter().map(|t| t.to_string()).collect(),
        }
    }
}

/// The names the agent may delete when nobody wants them any more.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub names: BTreeSet<String>,
    /// `nodes.prod.example.com`: every name below it.
    pub subdomains: Vec<String>,
}

impl Scope {
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
            || self.subdomains.iter().any(|s| {
                name.strip_suffix(s.as_str())
                    .is_some_and(|h| h.ends_with('.'))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create `new`, or replace `old` (as listed: Route 53 and Google need
    /// the exact old set to delete it).
    Put {
        old: Option<RecordSet>,
        new: RecordSet,
    },
    Delete(RecordSet),
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Put { new, .. } => &new.name,
            Change::Delete(old) => &old.name,
        }
    }
}

/// A wanted name the agent leaves alone because someone else owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub reason: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsPlan {
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
}

/// How the ownership TXT records are written by this provider.
#[derive(Debug, Clone)]
pub struct Ownership<'a> {
    pub owner: &'a str,
    /// ExternalDNS writes (and on Route 53 and Google deletes by exact)
    /// TTL 300; Cloudflare's "automatic" is 1.
    pub txt_ttl: u32,
}

pub fn plan(
    wanted: &[Wanted],
    observed: &[RecordSet],
    own: &Ownership<'_>,
    scope: &Scope,
) -> DnsPlan {
    let index: BTreeMap<(&str, RecordType), &RecordSet> = observed
        .iter()
        .map(|r| ((r.name.as_str(), r.kind), r))
        .collect();
    let ownership = |name: &str, kind: RecordType| -> Option<Option<String>> {
        let txt_name = registry::txt_name(name, kind);
        let txt = index.get(&(txt_name.as_str(), RecordType::Txt)).copied()?;
        // ExternalDNS reads the first value (issue #2762); so do we.
        Some(txt.values.iter().find_map(|v| registry::owner_of(v)))
    };
    let mut out = DnsPlan::default();
    let mut wanted_keys = BTreeSet::new();
    for w in wanted {
        let kind = w.kind();
        wanted_keys.insert((w.name.clone(), kind));
        let current = index.get(&(w.name.as_str(), kind)).copied();
        match ownership(&w.name, kind) {
            Some(Some(owner)) if owner == own.owner => {
                let new = w.record();
                if current != Some(&new) {
                    out.changes.push(Change::Put {
                        old: current.cloned(),
                        new,
                    });
                }
            }
            Some(other) => out.conflicts.push(Conflict {
                name: w.name.clone(),
                reason: match other {
                    Some(o) if !o.is_empty() => format!("owned by ExternalDNS owner `{o}`"),
                    Some(_) => "its ExternalDNS ownership record names no owner".into(),
                    None => "its ownership TXT is not an ExternalDNS record".into(),
                },
            }),
            None if current.is_some() => out.conflicts.push(Conflict {
                name: w.name.clone(),
                reason: format!(
                    "a {} record exists without an ExternalDNS ownership record",
                    kind.as_str()
                ),
            }),
            None => {
                // Ownership first: a reader never sees our record unowned.
                out.changes.push(Change::Put {
                    old: None,
                    new: RecordSet {
                        name: registry::txt_name(&w.name, kind),
                        kind: RecordType::Txt,
                        ttl: own.txt_ttl,
                        values: [registry::ownership_value(own.owner, &w.resource)].into(),
                    },
                });
                out.changes.push(Change::Put {
                    old: None,
                    new: w.record(),
                });
            }
        }
    }
    for r in observed {
        if r.kind == RecordType::Txt
            || !scope.contains(&r.name)
            || wanted_keys.contains(&(r.name.clone(), r.kind))
        {
            continue;
        }
        if ownership(&r.name, r.kind) != Some(Some(own.owner.to_string())) {
            continue;
        }
        out.changes.push(Change::Delete(r.clone()));
        let txt_name = registry::txt_name(&r.name, r.kind);
        if let Some(txt) = index.get(&(txt_name.as_str(), RecordType::Txt)) {
            out.changes.push(Change::Delete((*txt).clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "prod";
    const RES: &str = "crd/kube-system/muster-api";

    fn own() -> Ownership<'static> {
        Ownership {
            owner: OWNER,
            txt_ttl: 300,
        }
    }

    fn scope() -> Scope {
        Scope {
            names: ["api.example.test".to_string()].into(),
            subdomains: vec!["nodes.example.test".into()],
        }
    }

    fn a(name: &str, ips: &[&str]) -> RecordSet {
        RecordSet {
            name: name.into(),
            kind: RecordType::A,
            ttl: 60,
            values: ips.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn txt(name: &str, owner: &str) -> RecordSet {
        RecordSet {
            name: registry::txt_name(name, RecordType::A),
            kind: RecordType::Txt,
            ttl: 300,
            values: [registry::ownership_value(owner, RES)].into(),
        }
    }

    fn want(name: &str, ips: &[&str]) -> Wanted {
        Wanted {
            name: name.into(),
            targets: ips.iter().map(|s| s.parse().expect("ip")).collect(),
            ttl: 60,
            resource: RES.into(),
        }
    }

    #[test]
    fn an_empty_zone_gets_the_ownership_record_then_the_address() {
        let p = plan(
            &[want("api.example.test", &["10.0.0.100"])],
            &[],
            &own(),
            &scope(),
        );
        assert!(p.conflicts.is_empty());
        assert_eq!(
            p.changes,
            vec![
                Change::Put {
                    old: None,
                    new: txt("api.example.test", OWNER)
                },
                Change::Put {
                    old: None,
                    new: a("api.example.test", &["10.0.0.100"])
                },
            ]
        );
    }

    #[test]
    fn a_published_zone_needs_no_change() {
        let observed = [
            a("api.example.test", &["10.0.0.100"]),
            txt("api.example.test", OWNER),
        ];
        let p = plan(
            &[want("api.example.test", &["10.0.0.100"])],
            &observed,
            &own(),
            &scope(),
        );
        assert_eq!(p, DnsPlan::default());
    }

    #[test]
    fn our_record_follows_its_targets() {
        let observed = [
            a("api.example.test", &["10.0.0.1", "10.0.0.2"]),
            txt("api.example.test", OWNER),
        ];
        let p = plan(
            &[want("api.example.test", &["10.0.0.2", "10.0.0.3"])],
            &observed,
            &own(),
            &scope(),
        );
        assert_eq!(
            p.changes,
            vec![Change::Put {
                old: Some(observed[0].clone()),
                new: a("api.example.test", &["10.0.0.2", "10.0.0.3"])
            }]
        );
    }

    #[test]
    fn foreign_and_unowned_records_are_conflicts_never_changes() {
        let observed = [
            a("api.example.test", &["192.0.2.1"]),
            txt("api.example.test", "other-cluster"),
            a("n1.nodes.example.test", &["192.0.2.2"]),
            // A foreign TXT alone also blocks the create (#6617).
            txt("n2.nodes.example.test", "other-cluster"),
            // A foreign record in our scope that nobody wants: not deleted.
            a("old.nodes.example.test", &["192.0.2.3"]),
            txt("old.nodes.example.test", "other-cluster"),
        ];
        let p = plan(
            &[
                want("api.example.test", &["10.0.0.100"]),
                want("n1.nodes.example.test", &["10.0.0.1"]),
                want("n2.nodes.example.test", &["10.0.0.2"]),
            ],
            &observed,
            &own(),
            &scope(),
        );
        assert!(p.changes.is_empty(), "{:?}", p.changes);
        let names: Vec<_> = p.conflicts.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            names,
            [
                "api.example.test: owned by ExternalDNS owner `other-cluster`",
                "n1.nodes.example.test: a A record exists without an ExternalDNS ownership record",
                "n2.nodes.example.test: owned by ExternalDNS owner `other-cluster`",
            ]
        );
    }

    #[test]
    fn only_our_records_inside_the_scope_are_deleted() {
        let observed = [
            a("gone.nodes.example.test", &["10.0.0.9"]),
            txt("gone.nodes.example.test", OWNER),
            // Ours, but outside the scope (an Ingress name ExternalDNS manages).
            a("shop.example.test", &["10.0.0.50"]),
            txt("shop.example.test", OWNER),
            // In scope, but a look-alike subdomain.
            a("x.othernodes.example.test", &["10.0.0.8"]),
            txt("x.othernodes.example.test", OWNER),
        ];
        let p = plan(&[], &observed, &own(), &scope());
        assert_eq!(
            p.changes,
            vec![
                Change::Delete(observed[0].clone()),
                Change::Delete(observed[1].clone())
            ]
        );
    }

    #[test]
    fn ipv6_targets_make_an_aaaa_record_with_its_own_ownership_name() {
        let p = plan(
            &[want("api.example.test", &["fd00::1"])],
            &[],
            &own(),
            &scope(),
        );
        let names: Vec<_> = p.changes.iter().map(|c| c.name().to_string()).collect();
        assert_eq!(names, ["aaaa-api.example.test", "api.example.test"]);
    }
}
