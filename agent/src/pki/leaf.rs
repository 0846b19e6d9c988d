//! What a node certificate says: the kinds, their names and usages.
//!
//! Adding a kind (kube-apiserver, kubelet, ...) is one arm in each `match` of
//! [`CertKind`]; issuing, storing, checking and TLS loading are generic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use rustls::pki_types::DnsName;

use super::error::PkiError;

/// Default lifetime of a leaf certificate.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far back `not_before` is set, so a peer whose clock is a little
/// behind still accepts a certificate issued a moment ago.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The certificates a node holds. Each kind is one `<stem>.crt` + `<stem>.key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertKind {
    /// etcd member-to-member TLS: serves the peer port and dials the others.
    EtcdPeer,
    /// etcd's client port.
    EtcdServer,
    /// The agent as a client of etcd (and of other agents).
    Client,
}

impl CertKind {
    /// Every kind a node currently needs.
    pub const ALL: [CertKind; 3] = [CertKind::EtcdPeer, CertKind::EtcdServer, CertKind::Client];

    /// File stem on disk, and the name used in logs.
    pub fn stem(self) -> &'static str {
        match self {
            CertKind::EtcdPeer => "etcd-peer",
            CertKind::EtcdServer => "etcd-server",
            CertKind::Client => "client",
        }
    }

    pub fn usages(self) -> &'static [Usage] {
        match self {
            // A peer cert both accepts and makes connections to other members.
            CertKind::EtcdPeer => &[Usage::ServerAuth, Usage::ClientAuth],
            // etcd 3.5's gRPC gateway dials its own client port with
            // --cert-file as a *client* cert; kubeadm's etcd server cert has
            // both usages for the same reason.
            CertKind::EtcdServer => &[Usage::ServerAuth, Usage::ClientAuth],
            CertKind::Client => &[Usage::ClientAuth],
        }
    }

    fn common_name(self, node: &NodeIdentity) -> String {
        match self {
            CertKind::EtcdPeer | CertKind::EtcdServer => node.hostname.clone(),
            CertKind::Client => format!("muster-agent {}", node.hostname),
        }
    }

    /// Subject O. Kubernetes reads it as the group, so it is per kind and
    /// left out where it means nothing.
    fn organization(self) -> Option<&'static str> {
        match self {
            CertKind::EtcdPeer | CertKind::EtcdServer | CertKind::Client => None,
        }
    }

    fn sans(self, node: &NodeIdentity) -> Vec<San> {
        let own = || {
            let mut v = vec![San::Dns(node.hostname.clone())];
            v.extend(node.ips.iter().copied().map(San::Ip));
            v
        };
        match self {
            // Peers dial each other by node IP (and may use the hostname).
            CertKind::EtcdPeer => own(),
            // Local clients (the agent, etcdctl) use loopback.
            CertKind::EtcdServer => {
                let mut v = own();
                v.push(San::Dns("localhost".into()));
                v.push(San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
                v.push(San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
                v
            }
            // Identified by its CN; it serves nothing, so it needs no SAN.
            CertKind::Client => Vec::new(),
        }
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stem())
    }
}

/// Extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    ServerAuth,
    ClientAuth,
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// Who this node is, as its certificates will say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
}

impl NodeIdentity {
    pub fn new(hostname: impl Into<String>, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        NodeIdentity {
            hostname: hostname.into(),
            ips: ips.into_iter().collect(),
        }
    }

    /// The hostname must be usable as a DNS SAN (peers may dial it).
    pub fn validate(&self) -> Result<(), PkiError> {
        DnsName::try_from(self.hostname.as_str()).map_err(|_| {
            PkiError::InvalidIdentity(format!(
                "hostname {:?} is not a valid DNS name",
                self.hostname
            ))
        })?;
        Ok(())
    }
}

/// Everything that goes into one leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    pub organization: Option<String>,
    /// Canonical: sorted, no duplicates (so "same names" is plain equality).
    pub sans: Vec<San>,
    pub usages: Vec<Usage>,
    pub validity: Duration,
}

impl LeafSpec {
    /// The spec of `kind` for `node`, with the default validity.
    pub fn for_kind(kind: CertKind, node: &NodeIdentity) -> Result<LeafSpec, PkiError> {
        node.validate()?;
        Ok(LeafSpec {
            common_name: kind.common_name(node),
            organization: kind.organization().map(str::to_owned),
            sans: canonical_sans(kind.sans(node)),
            usages: kind.usages().to_vec(),
            validity: LEAF_VALIDITY,
        })
    }
}

/// Sorted, deduplicated, IPv4-mapped IPv6 folded to IPv4.
pub fn canonical_sans(sans: impl IntoIterator<Item = San>) -> Vec<San> {
    let mut v: Vec<San> = sans
        .into_iter()
        .map(|s| match s {
            San::Ip(ip) => San::Ip(ip.to_canonical()),
            San::Dns(d) => San::Dns(d.to_ascii_lowercase()),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A PEM-encoded private key. Prints as `<redacted>` (S5); the PEM is
/// reachable only through [`KeyPem::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(String);

impl KeyPem {
    pub fn new(pem: String) -> Self {
        KeyPem(pem)
    }

    /// The key itself. Call sites are the places to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

/// A freshly issued certificate and its private key.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: KeyPem,
}

/// Sizes only: the certificate is public but a PEM blob in a log line is
/// noise, and the key is never printed.
impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &self.key_pem)
            .finish()
    }
}
