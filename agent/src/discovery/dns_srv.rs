//! DNS SRV discovery: the group is the targets of an SRV record set, e.g.
//!
//! ```text
//! _muster._tcp.prod.example.com. 60 IN SRV 0 0 2379 node-1.prod.example.com.
//! _muster._tcp.prod.example.com. 60 IN SRV 0 0 2379 node-2.prod.example.com.
//! node-1.prod.example.com.       60 IN A   10.0.1.11
//! ```
//!
//! Every target's IPv4 addresses are peers, identified by address like the
//! static list (so the order between peers is the address order on every
//! node). Priority, weight and port are not used: the ports are Muster's
//! own. The lookup goes to `discovery.dns.nameserver` when set, else to the
//! system resolver (`/etc/resolv.conf`); answers are not cached, each round
//! asks again.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::rr::RData;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::Peer;
use super::static_list::address_peer;

#[derive(Debug, thiserror::Error)]
pub enum SrvError {
    #[error("SRV discovery: resolver: {0}")]
    Resolver(String),
    #[error("SRV discovery: {name} SRV: {message}")]
    Srv { name: String, message: String },
    #[error("SRV discovery: {name}: no target has an IPv4 address ({missing})")]
    NoAddress { name: String, missing: String },
}

/// `IP` (port 53) or `IP:PORT`.
pub fn nameserver_addr(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

pub struct SrvSource {
    name: String,
    resolver: TokioResolver,
}

impl SrvSource {
    pub fn new(name: &str, nameserver: Option<&str>) -> Result<Self, SrvError> {
        let mut builder = match nameserver {
            Some(ns) => {
                let addr = nameserver_addr(ns)
                    .ok_or_else(|| SrvError::Resolver(format!("`{ns}` is not IP or IP:PORT")))?;
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut server.connections {
                    c.port = addr.port();
                }
                let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            }
            None => {
                TokioResolver::builder_tokio().map_err(|e| SrvError::Resolver(e.to_string()))?
            }
        };
        // Each round asks again: a replaced machine must show at once.
        builder.options_mut().cache_size = 0;
        let resolver = builder
            .build()
            .map_err(|e| SrvError::Resolver(e.to_string()))?;
        Ok(SrvSource {
            name: name.to_string(),
            resolver,
        })
    }

    pub async fn list(&self) -> Result<Vec<Peer>, SrvError> {
        let fqdn = format!("{}.", self.name.trim_end_matches('.'));
        let srv = self
            .resolver
            .srv_lookup(fqdn.as_str())
            .await
            .map_err(|e| SrvError::Srv {
                name: self.name.clone(),
                message: e.to_string(),
            })?;
        let targets: BTreeSet<String> = srv
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.target.to_ascii()),
                _ => None,
            })
            .collect();
        let mut addresses = BTreeSet::new();
        let mut missing = Vec::new();
        for target in &targets {
            match self.resolver.ipv4_lookup(target.as_str()).await {
                Ok(a) => addresses.extend(a.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })),
                Err(e) => missing.push(format!("{target}: {e}")),
            }
        }
        if addresses.is_empty() {
            return Err(SrvError::NoAddress {
                name: self.name.clone(),
                missing: missing.join("; "),
            });
        }
        if !missing.is_empty() {
            tracing::debug!(name = %self.name, missing = %missing.join("; "), "SRV targets without an address are left out");
        }
        Ok(peers(addresses))
    }
}

/// Peers from addresses, in address order. Pure.
pub fn peers(addresses: BTreeSet<Ipv4Addr>) -> Vec<Peer> {
    addresses.into_iter().map(address_peer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_take_a_default_port_and_peers_are_in_address_order() {
        assert_eq!(nameserver_addr("10.0.0.53"), "10.0.0.53:53".parse().ok());
        assert_eq!(
            nameserver_addr("10.0.0.53:5353"),
            "10.0.0.53:5353".parse().ok()
        );
        assert_eq!(nameserver_addr("ns.example.com"), None);
        let p = peers(
            [
                "10.0.0.12".parse().expect("ip"),
                "10.0.0.2".parse().expect("ip"),
            ]
            .into(),
        );
        assert_eq!(
            p.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["10.0.0.2", "10.0.0.12"]
        );
    }
}
