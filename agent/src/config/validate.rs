//! Semantic checks: topologies that cannot work, addresses that collide,
//! settings that need one another. Each error points at the field written
//! in the source (or, for a default, the nearest thing that was written).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use base64::Engine as _;
use ipnet::IpNet;

use super::error::{ConfigError, one_of, suggest};
use super::locate::{Seg, locate, locate_key, path, related};
use super::tree::Node;
use super::types::{
    CloudProvider, Cni, Config, DnsProvider, DnsRecord, EtcdPlacement, KNOWN_ADDONS, Role, Taint,
    VipMode,
};

/// The cluster secret's minimum length.
pub const MIN_SECRET_CHARS: usize = 32;

pub(crate) fn validate(
    cfg: &Config,
    tree: &Node,
    pruned: &[Vec<Seg>],
) -> Vec<(usize, ConfigError)> {
    let mut c = Checks {
        tree,
        pruned,
        out: Vec::new(),
    };
    cluster(&mut c, cfg);
    topology(&mut c, cfg);
    discovery(&mut c, cfg);
    api_endpoint(&mut c, cfg);
    kubernetes(&mut c, cfg);
    mesh(&mut c, cfg);
    dns(&mut c, cfg);
    addons(&mut c, cfg);
    cloud(&mut c, cfg);
    c.out
}

struct Checks<'a> {
    tree: &'a Node,
    pruned: &'a [Vec<Seg>],
    out: Vec<(usize, ConfigError)>,
}

impl Checks<'_> {
    fn err(&mut self, at: &str, msg: impl Into<String>) {
        self.err_at(path(at), &[], msg);
    }

    /// Reports at `segs`, unless it or one of the `involved` fields was
    /// pruned after a decoding error (the check would read a default).
    /// If `segs` holds a default but an involved field was written, the
    /// error goes there: that is the line to change.
    fn err_at(&mut self, segs: Vec<Seg>, involved: &[&str], msg: impl Into<String>) {
        let involved: Vec<Vec<Seg>> = involved.iter().map(|p| path(p)).collect();
        let stale = self
            .pruned
            .iter()
            .any(|p| related(p, &segs) || involved.iter().any(|i| related(p, i)));
        if stale {
            return;
        }
        let segs = match locate(self.tree, &segs) {
            (_, true) => segs,
            _ => involved
                .into_iter()
                .find(|i| locate(self.tree, i).1)
                .unwrap_or(segs),
        };
        let (loc, _) = locate(self.tree, &segs);
        self.out
            .push((loc.origin.rank, ConfigError::at(loc, &segs, msg)));
    }

    /// Reports at the key of `segs` (a bad map key rather than a bad value).
    fn err_key(&mut self, segs: Vec<Seg>, msg: impl Into<String>) {
        if self.pruned.iter().any(|p| related(p, &segs)) {
            return;
        }
        let loc = locate_key(self.tree, &segs).unwrap_or_else(|| locate(self.tree, &segs).0);
        self.out
            .push((loc.origin.rank, ConfigError::at(loc, &segs, msg)));
    }

    fn present(&self, at: &str) -> bool {
        locate(self.tree, &path(at)).1
    }
}

fn cluster(c: &mut Checks<'_>, cfg: &Config) {
    if !c.present("cluster.name") {
        c.err("cluster.name", "missing required key `name`");
    } else if !is_dns_label(&cfg.cluster.name) {
        c.err(
            "cluster.name",
            format!(
                "`{}` is not a DNS label: use 1 to 63 lowercase letters, digits or `-`, not starting or ending with `-`",
                cfg.cluster.name
            ),
        );
    }
    if let Some(join) = &cfg.cluster.join {
        if c.present("cluster.secret") {
            c.err_at(
                path("cluster.join"),
                &["cluster.secret"],
                "give `secret` or `join`, not both: `join` is for worker-only groups that must not hold the secret",
            );
        }
        if cfg.topology.role != Role::Worker {
            c.err_at(
                path("cluster.join"),
                &["topology.role"],
                "a `join` credential only lets a node be a worker: set `topology.role: worker`",
            );
        }
        if crate::kubernetes::token::BootstrapToken::parse(join.token.expose()).is_none() {
            c.err(
                "cluster.join.token",
                "not a bootstrap token: expected 6 and 16 characters of [a-z0-9] joined by `.` (as `muster join-credential` prints it)",
            );
        }
        let pin_ok = join.ca_pin.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !pin_ok {
            c.err(
                "cluster.join.caPin",
                format!(
                    "`{}` is not a CA pin: expected `sha256:` and 64 lowercase hex digits",
                    join.ca_pin
                ),
            );
        }
        if cfg.api_endpoint.vip.is_none() && cfg.api_endpoint.dns_name.is_none() {
            c.err_at(
                path("cluster.join"),
                &["apiEndpoint.vip", "apiEndpoint.dnsName"],
                "a worker joining with `join` needs the API endpoint: set `apiEndpoint.vip` or `apiEndpoint.dnsName`",
            );
        }
    } else if !c.present("cluster.secret") {
        c.err(
            "cluster.secret",
            "missing required key `secret` (or `join` for a worker-only group)",
        );
    } else if cfg.cluster.secret.char_len() < MIN_SECRET_CHARS {
        c.err(
            "cluster.secret",
            format!("too short: the cluster secret needs at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -base64 32`)"),
        );
    }
}

fn topology(c: &mut Checks<'_>, cfg: &Config) {
    let t = &cfg.topology;
    let cp = t.control_plane.count;
    match cp {
        1 | 3 | 5 => {}
        0 => c.err("topology.controlPlane.count", "must be 1, 3 or 5; a cluster needs a control plane"),
        n if n % 2 == 0 => c.err(
            "topology.controlPlane.count",
            format!("must be 1, 3 or 5: {n} control-plane nodes tolerate no more failures than {}", n - 1),
        ),
        n => c.err(
            "topology.controlPlane.count",
            format!("must be 1, 3 or 5: more than 5 control-plane nodes (here {n}) only slow etcd writes"),
        ),
    }
    let (heartbeat, election) = t.etcd.timing.millis();
    if heartbeat < 10 {
        c.err(
            "topology.etcd.timing.heartbeat",
            format!("{heartbeat}ms is below etcd's useful minimum of 10ms"),
        );
    } else if election < heartbeat.saturating_mul(5) || election > 50_000 {
        c.err_at(
            path("topology.etcd.timing.electionTimeout"),
            &["topology.etcd.timing.heartbeat"],
            format!("etcd needs an election timeout of at least 5 heartbeats ({}ms) and at most 50s; here {election}ms", heartbeat.saturating_mul(5)),
        );
    }
    match t.etcd.placement {
        EtcdPlacement::Dedicated => {
            let n = t
                .etcd
                .count
                .unwrap_or(super::types::Etcd::DEFAULT_DEDICATED_COUNT);
            if let Some(msg) = etcd_count_problem(n) {
                c.err("topology.etcd.count", msg);
            }
        }
        EtcdPlacement::ControlPlane => {
            if let Some(n) = t.etcd.count.filter(|n| *n != cp) {
                c.err_at(
                    path("topology.etcd.count"),
                    &["topology.controlPlane.count"],
                    format!(
                        "with `placement: controlPlane` etcd runs one member on each of the {cp} control-plane nodes, not {n}; drop `count` or use `placement: dedicated`"
                    ),
                );
            }
            if t.role == Role::Etcd {
                c.err_at(
                    path("topology.role"),
                    &["topology.etcd.placement"],
                    "role `etcd` needs `topology.etcd.placement: dedicated`",
                );
            }
        }
    }
    etcd_backup(c, &t.etcd);
    for (k, v) in &t.workers.labels {
        let mut at = path("topology.workers.labels");
        at.push(Seg::Key(k.clone()));
        if let Some(msg) = label_key_problem(k) {
            c.err_key(at, format!("label key `{k}`: {msg}"));
        } else if !is_label_value(v) {
            c.err_at(
                at,
                &[],
                format!("label value `{v}`: use at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"),
            );
        }
    }
    for (i, taint) in t.workers.taints.iter().enumerate() {
        if let Some(msg) = taint_problem(taint) {
            c.err(&format!("topology.workers.taints[{i}]"), msg);
        }
    }
}

/// `topology.etcd.backup` and `topology.etcd.restore`.
fn etcd_backup(c: &mut Checks<'_>, etcd: &super::types::Etcd) {
    if let Some(backup) = &etcd.backup {
        if let Err(why) = crate::backup::store::Target::parse(&backup.to) {
            c.err("topology.etcd.backup.to", why);
        }
        if backup.schedule().as_secs() < 1 {
            c.err("topology.etcd.backup.schedule", "must be at least 1s");
        }
        if backup.keep() == 0 {
            c.err(
                "topology.etcd.backup.keep",
                "must be at least 1: keeping none would delete the snapshot just taken",
            );
        }
    }
    if let Some(restore) = &etcd.restore {
        if etcd.backup.is_none() {
            c.err(
                "topology.etcd.restore",
                "needs topology.etcd.backup.to: the place the snapshots are read from",
            );
        } else if restore != "latest" && (restore.contains('/') || !restore.ends_with(".db")) {
            c.err(
                "topology.etcd.restore",
                format!("`{restore}`: use `latest` or a snapshot's file name (CLUSTER-YYYYMMDDTHHMMSSZ-rREVISION.db)"),
            );
        }
    }
}

/// Why an etcd of `n` members is refused, if it is.
pub fn etcd_count_problem(n: u8) -> Option<String> {
    match n {
        1 | 3 | 5 | 7 => None,
        0 => Some("must be 1, 3, 5 or 7; etcd needs members".into()),
        2 => Some("must be 1, 3, 5 or 7: a 2-member etcd loses quorum when either member fails, worse than one member; use 3".into()),
        n if n % 2 == 0 => Some(format!(
            "must be 1, 3, 5 or 7: an even-sized etcd ({n} members) tolerates no more failures than {} members; use {} or {}",
            n - 1,
            n - 1,
            n.saturating_add(1)
        )),
        n => Some(format!("must be 1, 3, 5 or 7: more than 7 members (here {n}) slows every write")),
    }
}

fn taint_problem(t: &Taint) -> Option<String> {
    if let Some(msg) = label_key_problem(&t.key) {
        return Some(format!("taint key `{}`: {msg}", t.key));
    }
    match &t.value {
        Some(v) if !is_label_value(v) => {
            Some(format!("taint value `{v}` is not a valid label value"))
        }
        _ => None,
    }
}

fn discovery(c: &mut Checks<'_>, cfg: &Config) {
    let d = &cfg.discovery;
    let set: Vec<&str> = [
        ("cloudGroup", d.cloud_group.is_some()),
        ("static", d.static_peers.is_some()),
        ("dns", d.dns.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if set.len() > 1 {
        c.err(
            "discovery",
            format!(
                "choose one discovery method, not {}",
                one_of(&set).replace(" or ", " and ")
            ),
        );
    }
    if let Some(s) = &d.static_peers {
        if s.peers.is_empty() {
            c.err("discovery.static.peers", "needs at least one peer");
        }
        let mut seen = BTreeSet::new();
        for (i, p) in s.peers.iter().enumerate() {
            let at = format!("discovery.static.peers[{i}]");
            if p.parse::<Ipv4Addr>().is_err() && !is_domain_name(p, false) {
                c.err(
                    &at,
                    format!("`{p}` is neither an IPv4 address nor a host name"),
                );
            } else if !seen.insert(p.as_str()) {
                c.err(&at, format!("`{p}` is listed twice"));
            }
        }
    }
    if let Some(dns) = &d.dns
        && !is_domain_name(&dns.name, true)
    {
        c.err(
            "discovery.dns.name",
            format!("`{}` is not a DNS name", dns.name),
        );
    }
    if let Some(ns) = d.dns.as_ref().and_then(|d| d.nameserver.as_ref()) {
        if crate::discovery::dns_srv::nameserver_addr(ns).is_none() {
            c.err(
                "discovery.dns.nameserver",
                format!("`{ns}` is not IP or IP:PORT"),
            );
        } else if d.dns.as_ref().is_some_and(|d| d.record != DnsRecord::Srv) {
            c.err(
                "discovery.dns.nameserver",
                "only used with `record: SRV` (A records go through the system resolver)",
            );
        }
    }
}

fn api_endpoint(c: &mut Checks<'_>, cfg: &Config) {
    let a = &cfg.api_endpoint;
    match (a.mode, a.vip) {
        (Some(VipMode::None), Some(_)) => c.err_at(
            path("apiEndpoint.mode"),
            &["apiEndpoint.vip"],
            "mode `none` leaves the vip unmanaged; choose `arp`, `bgp`, `aws` or `gce`, or remove the vip",
        ),
        (Some(m), None) if m != VipMode::None => c.err_at(
            path("apiEndpoint.mode"),
            &["apiEndpoint.vip"],
            format!("mode `{}` needs `apiEndpoint.vip`", m.as_str()),
        ),
        _ => {}
    }
    match (&a.bgp, a.mode) {
        (None, Some(VipMode::Bgp)) => c.err_at(
            path("apiEndpoint.mode"),
            &["apiEndpoint.bgp"],
            "mode `bgp` needs `apiEndpoint.bgp` (localAsn and peers)",
        ),
        (Some(_), m) if m != Some(VipMode::Bgp) => c.err_at(
            path("apiEndpoint.bgp"),
            &["apiEndpoint.mode"],
            "`bgp` settings apply only with `mode: bgp`",
        ),
        _ => {}
    }
    if let Some(bgp) = &a.bgp {
        if bgp.peers.is_empty() {
            c.err("apiEndpoint.bgp.peers", "needs at least one BGP peer");
        }
        if bgp.local_asn == 0 {
            c.err("apiEndpoint.bgp.localAsn", "ASN 0 is reserved");
        }
        if let Some(h @ (1 | 2)) = bgp.hold_time {
            c.err(
                "apiEndpoint.bgp.holdTime",
                format!("{h} s is not a BGP hold time: use 0 (no keepalives) or at least 3"),
            );
        }
        for (i, p) in bgp.peers.iter().enumerate() {
            if p.asn == 0 {
                c.err(
                    &format!("apiEndpoint.bgp.peers[{i}].asn"),
                    "ASN 0 is reserved",
                );
            }
            if Some(p.address) == a.vip {
                c.err(
                    &format!("apiEndpoint.bgp.peers[{i}].address"),
                    "a BGP peer cannot be the vip itself",
                );
            }
        }
    }
    if a.port == 0 {
        c.err("apiEndpoint.port", "port 0 is not a port");
    }
    // The same safety rule the VIP manager applies before it campaigns.
    if let Err(e) = crate::vip::election::Timing::from_settings(&a.timing).check() {
        c.err("apiEndpoint.timing", e.to_string());
    }
    if let Some(vip) = a.vip {
        let k = &cfg.kubernetes;
        if vip.is_unspecified()
            || vip.is_loopback()
            || vip.is_multicast()
            || vip.is_broadcast()
            || vip.is_link_local()
        {
            c.err("apiEndpoint.vip", format!("`{vip}` cannot be a vip (unspecified, loopback, link-local, multicast or broadcast)"));
        } else if k.pod_cidr.contains(&IpAddr::V4(vip)) {
            c.err_at(
                path("apiEndpoint.vip"),
                &["kubernetes.podCidr"],
                format!("`{vip}` lies inside kubernetes.podCidr `{}`; pick an address of the node network", k.pod_cidr),
            );
        } else if k.service_cidr.contains(&IpAddr::V4(vip)) {
            c.err_at(
                path("apiEndpoint.vip"),
                &["kubernetes.serviceCidr"],
                format!(
                    "`{vip}` lies inside kubernetes.serviceCidr `{}`; pick an address of the node network",
                    k.service_cidr
                ),
            );
        }
    }
    // A cloud mover must match the cloud the peers are found on.
    if let (Some(mode), Some(provider)) = (
        a.mode,
        cfg.discovery.cloud_group.as_ref().and_then(|g| g.provider),
    ) {
        let clash = matches!(
            (mode, provider),
            (VipMode::Aws, CloudProvider::Gce) | (VipMode::Gce, CloudProvider::Aws)
        );
        if clash {
            c.err_at(
                path("apiEndpoint.mode"),
                &["discovery.cloudGroup.provider"],
                format!(
                    "mode `{}` does not match discovery.cloudGroup.provider",
                    mode.as_str()
                ),
            );
        }
    }
    if let Some(name) = &a.dns_name
        && !is_domain_name(name, false)
    {
        c.err("apiEndpoint.dnsName", format!("`{name}` is not a DNS name"));
    }
    if let Some(ifname) = &a.interface
        && (ifname.is_empty()
            || ifname.len() > 15
            || ifname.contains(['/', ':'])
            || ifname.contains(char::is_whitespace))
    {
        c.err("apiEndpoint.interface", format!("`{ifname}` is not a Linux interface name (1 to 15 characters, no `/`, `:` or spaces)"));
    }
}

fn kubernetes(c: &mut Checks<'_>, cfg: &Config) {
    let k = &cfg.kubernetes;
    if let Some(v) = &k.version
        && !is_k8s_version(v)
    {
        c.err("kubernetes.version", format!("`{v}` is not a Kubernetes version: expected MAJOR.MINOR.PATCH such as `1.33.2` (quote it)"));
    }
    for (at, net) in [
        ("kubernetes.podCidr", k.pod_cidr),
        ("kubernetes.serviceCidr", k.service_cidr),
    ] {
        if net.trunc() != net {
            c.err(
                at,
                format!("`{net}` has host bits set; did you mean `{}`?", net.trunc()),
            );
        }
    }
    let same_family = matches!(
        (k.pod_cidr, k.service_cidr),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    );
    if !same_family {
        c.err_at(
            path("kubernetes.serviceCidr"),
            &["kubernetes.podCidr"],
            "kubernetes.podCidr and kubernetes.serviceCidr must be the same IP family",
        );
    } else if k.pod_cidr.contains(&k.service_cidr.network())
        || k.service_cidr.contains(&k.pod_cidr.network())
    {
        c.err_at(
            path("kubernetes.serviceCidr"),
            &["kubernetes.podCidr"],
            format!(
                "kubernetes.podCidr `{}` and kubernetes.serviceCidr `{}` overlap",
                k.pod_cidr, k.service_cidr
            ),
        );
    }
    if let IpNet::V4(s) = k.service_cidr
        && s.prefix_len() < 12
    {
        c.err(
            "kubernetes.serviceCidr",
            format!("`{s}` is too large: kube-apiserver allows at most a /12 for IPv4 services"),
        );
    }
    let le = k.leader_election.resolved();
    if le.renew_deadline >= le.lease_duration {
        c.err(
            "kubernetes.leaderElection.renewDeadline",
            format!(
                "{} must be shorter than leaseDuration {}",
                le.renew_deadline, le.lease_duration
            ),
        );
    }
    if le.renew_deadline.0.as_secs_f64() <= 1.2 * le.retry_period.0.as_secs_f64() {
        c.err(
            "kubernetes.leaderElection.retryPeriod",
            format!(
                "{} is too long for renewDeadline {}: the deadline must exceed 1.2 retry periods",
                le.retry_period, le.renew_deadline
            ),
        );
    }
    if let IpNet::V4(p) = k.pod_cidr
        && p.prefix_len() > 24
    {
        c.err(
            "kubernetes.podCidr",
            format!("`{p}` is too small: every node takes a /24 from it"),
        );
    }
}

fn mesh(c: &mut Checks<'_>, cfg: &Config) {
    if let Some(cilium) = &cfg.mesh.cilium {
        if cfg.kubernetes.cni != Cni::Cilium {
            c.err_at(
                path("mesh.cilium"),
                &["kubernetes.cni"],
                "Cilium Cluster Mesh needs `kubernetes.cni: cilium`",
            );
        }
        if !(1..=255).contains(&cilium.cluster_id) {
            c.err(
                "mesh.cilium.clusterId",
                format!(
                    "{} is out of range: Cilium cluster ids are 1 to 255, unique within the mesh",
                    cilium.cluster_id
                ),
            );
        }
        if let Some(name) = &cilium.cluster_name
            && !is_dns_label(name)
        {
            c.err(
                "mesh.cilium.clusterName",
                format!("`{name}` is not a DNS label"),
            );
        }
    }
}

fn dns(c: &mut Checks<'_>, cfg: &Config) {
    let d = &cfg.dns;
    if d.provider != DnsProvider::None && d.zone.is_none() {
        c.err_at(
            path("dns.provider"),
            &["dns.zone"],
            format!("provider `{}` needs `dns.zone`", d.provider.as_str()),
        );
    }
    if let Some(zone) = &d.zone
        && !is_domain_name(zone, false)
    {
        c.err("dns.zone", format!("`{zone}` is not a DNS zone name"));
    }
    if !is_domain_name(d.api_name.trim_end_matches('.'), false) {
        c.err("dns.apiName", format!("`{}` is not a DNS name", d.api_name));
    }
    if let Some(sub) = &d.nodes_subdomain
        && !is_domain_name(sub.trim_end_matches('.'), false)
    {
        c.err("dns.nodesSubdomain", format!("`{sub}` is not a DNS name"));
    }
    if !(1..=86_400).contains(&d.ttl) {
        c.err(
            "dns.ttl",
            format!("{} is not between 1 and 86400 seconds", d.ttl),
        );
    }
    if d.interval.0 < std::time::Duration::from_secs(1) {
        c.err("dns.interval", "must be at least 1s");
    }
    let blocks = [
        (DnsProvider::Rfc2136, "rfc2136", d.rfc2136.is_some()),
        (DnsProvider::Route53, "route53", d.route53.is_some()),
        (
            DnsProvider::Cloudflare,
            "cloudflare",
            d.cloudflare.is_some(),
        ),
        (DnsProvider::Google, "google", d.google.is_some()),
    ];
    for (provider, name, present) in blocks {
        if present && d.provider != provider {
            c.err_at(
                path(&format!("dns.{name}")),
                &["dns.provider"],
                format!(
                    "only used with `provider: {name}` (provider is `{}`)",
                    d.provider.as_str()
                ),
            );
        }
        // Route 53 and Google need no block: the zone can be looked up.
        if !present
            && d.provider == provider
            && !matches!(provider, DnsProvider::Route53 | DnsProvider::Google)
        {
            c.err_at(
                path("dns.provider"),
                &[&format!("dns.{name}")],
                format!("provider `{name}` needs `dns.{name}`"),
            );
        }
    }
    if let Some(r) = &d.rfc2136 {
        if !is_server_address(&r.server) {
            c.err(
                "dns.rfc2136.server",
                format!("`{}` is not HOST or HOST:PORT", r.server),
            );
        }
        if !is_domain_name(r.tsig.key_name.trim_end_matches('.'), false) {
            c.err(
                "dns.rfc2136.tsig.keyName",
                format!("`{}` is not a TSIG key name", r.tsig.key_name),
            );
        }
        let key = base64::engine::general_purpose::STANDARD.decode(r.tsig.secret.expose());
        if key.map_or(true, |k| k.is_empty()) {
            c.err(
                "dns.rfc2136.tsig.secret",
                "must be the base64 key material (as in the `secret` of a BIND key)",
            );
        }
    }
    if let Some(cf) = &d.cloudflare {
        match (&cf.api_token, &cf.api_token_file) {
            (Some(t), None) if t.expose().trim().is_empty() => {
                c.err("dns.cloudflare.apiToken", "must not be empty");
            }
            (None, Some(f)) if !f.starts_with('/') => {
                c.err(
                    "dns.cloudflare.apiTokenFile",
                    format!("`{f}` is not an absolute path"),
                );
            }
            (Some(_), Some(_)) => c.err(
                "dns.cloudflare.apiTokenFile",
                "set `apiToken` or `apiTokenFile`, not both",
            ),
            (None, None) => c.err("dns.cloudflare", "needs `apiToken` or `apiTokenFile`"),
            _ => {}
        }
        // Cloudflare: 1 means automatic, else 60..86400 (30 on Enterprise).
        if d.ttl != 1 && d.ttl < 30 {
            c.err(
                "dns.ttl",
                format!(
                    "{} is below Cloudflare's minimum (1 = automatic, or 30/60 and up)",
                    d.ttl
                ),
            );
        }
    }
    if let Some(owner) = d.external_dns.as_ref().and_then(|e| e.owner_id.as_ref())
        && owner.trim().is_empty()
    {
        c.err("dns.externalDns.ownerId", "must not be empty");
    }
    if d.external_dns.is_some() && d.provider == DnsProvider::None {
        c.err_at(
            path("dns.externalDns"),
            &["dns.provider"],
            "ExternalDNS hand-over needs a `dns.provider`",
        );
    }
}

fn addons(c: &mut Checks<'_>, cfg: &Config) {
    let mut seen = BTreeSet::new();
    for (i, addon) in cfg.addons.iter().enumerate() {
        let at = format!("addons[{i}]");
        if !KNOWN_ADDONS.contains(&addon.name.as_str()) {
            let hint = match suggest(&addon.name, KNOWN_ADDONS) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known add-ons: {}", one_of(KNOWN_ADDONS)),
            };
            c.err(&at, format!("unknown add-on `{}`; {hint}", addon.name));
        } else if !seen.insert(addon.name.as_str()) {
            c.err(&at, format!("add-on `{}` is listed twice", addon.name));
        }
        if addon.name == "external-dns" && cfg.dns.provider == DnsProvider::None {
            c.err_at(
                path(&at),
                &["dns.provider"],
                "add-on `external-dns` needs a `dns.provider`",
            );
        }
    }
}

fn cloud(c: &mut Checks<'_>, cfg: &Config) {
    if let Some(endpoint) = &cfg.cloud.endpoint
        && let Some(msg) = endpoint_problem(endpoint)
    {
        c.err("cloud.endpoint", msg);
    }
}

/// Why `text` cannot be a cloud API endpoint, if it cannot: it must be an
/// absolute `http`/`https` URL with a host, as the AWS client requires.
fn endpoint_problem(text: &str) -> Option<String> {
    match url::Url::parse(text) {
        Err(e) => Some(format!(
            "`{text}` is not a URL ({e}); write it like `https://aws-proxy.internal:8443`"
        )),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
            "`{text}`: the scheme must be `http` or `https`, not `{}`",
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("`{text}` has no host")),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => Some(format!(
            "`{text}`: an API endpoint takes no `?query` or `#fragment`"
        )),
        Ok(_) => None,
    }
}

/// RFC 1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A host or domain name (case-insensitive, optional trailing dot);
/// `service_labels` also allows `_srv`-style labels.
pub(crate) fn is_domain_name(s: &str, service_labels: bool) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let l = label.to_ascii_lowercase();
            let l = match l.strip_prefix('_') {
                Some(rest) if service_labels => rest.to_string(),
                _ => l,
            };
            is_dns_label(&l)
        })
}

fn is_server_address(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    port_ok && (host.parse::<Ipv4Addr>().is_ok() || is_domain_name(host, false))
}

fn is_k8s_version(v: &str) -> bool {
    let v = v.strip_prefix('v').unwrap_or(v);
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts[0] == "1"
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.chars().all(|c| c.is_ascii_digit()))
}

/// Kubernetes label/taint key: `[prefix/]name`, prefix a DNS subdomain.
fn label_key_problem(k: &str) -> Option<&'static str> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_domain_name(p, false)
    {
        return Some("the prefix before `/` must be a DNS subdomain");
    }
    if name.is_empty() || !is_label_value(name) {
        return Some(
            "the name must be 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit",
        );
    }
    None
}

fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_sizes() {
        for n in [1, 3, 5, 7] {
            assert!(etcd_count_problem(n).is_none(), "{n}");
        }
        assert!(etcd_count_problem(2).is_some_and(|m| m.contains("2-member")));
        assert!(etcd_count_problem(4).is_some_and(|m| m.contains("even-sized")));
        assert!(etcd_count_problem(9).is_some());
        assert!(etcd_count_problem(0).is_some());
    }

    #[test]
    fn names() {
        assert!(is_dns_label("prod-eu1"));
        assert!(!is_dns_label("Prod"));
        assert!(!is_dns_label("-a"));
        assert!(is_domain_name("api.example.com.", false));
        assert!(is_domain_name("_muster._tcp.example.com", true));
        assert!(!is_domain_name("_muster._tcp.example.com", false));
        assert!(is_server_address("10.0.0.2:53"));
        assert!(is_server_address("ns1.example.com"));
        assert!(!is_server_address("ns1.example.com:0"));
        assert!(is_k8s_version("1.33.2"));
        assert!(is_k8s_version("v1.33.2"));
        assert!(!is_k8s_version("1.33"));
        assert!(label_key_problem("node.kubernetes.io/role").is_none());
        assert!(label_key_problem("bad key").is_some());
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }

    #[test]
    fn cloud_endpoints() {
        assert!(endpoint_problem("http://10.77.0.1:5000").is_none());
        assert!(endpoint_problem("https://aws-proxy.internal:8443/").is_none());
        assert!(endpoint_problem("10.77.0.1:5000").is_some());
        assert!(endpoint_problem("aws-proxy.internal").is_some());
        assert!(endpoint_problem("ftp://example.com/").is_some_and(|m| m.contains("`ftp`")));
        assert!(endpoint_problem("http://example.com/?a=b").is_some());
        assert!(endpoint_problem("").is_some());
    }
}
