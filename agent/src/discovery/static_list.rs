//! Static peer lists (bare metal, labs): every node that may hold an etcd or
//! control-plane role is named in the config, the same list on every node.
//! Peers are identified by address; host names are resolved each round.

use std::net::{IpAddr, Ipv4Addr};

use super::{Lifecycle, Peer};

/// Errors of the static and DNS sources.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("peer {entry:?}: cannot resolve: {source}")]
    Lookup {
        entry: String,
        source: std::io::Error,
    },
    #[error("peer {entry:?}: resolves to no IPv4 address")]
    NoIpv4 { entry: String },
}

/// A peer known only by its address: the address is its identity, and the
/// order between such peers is the address order (the same on every node).
pub fn address_peer(address: Ipv4Addr) -> Peer {
    Peer {
        id: address.to_string(),
        address,
        launched_at_ms: None,
        lifecycle: Lifecycle::Unknown,
    }
}

/// All IPv4 addresses a name resolves to (DNS discovery by A records),
/// sorted and without duplicates.
pub async fn resolve_all(name: &str) -> Result<Vec<Peer>, ResolveError> {
    let addrs =
        tokio::net::lookup_host((name, 0))
            .await
            .map_err(|source| ResolveError::Lookup {
                entry: name.to_string(),
                source,
            })?;
    let mut ips: Vec<Ipv4Addr> = addrs
        .filter_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(ResolveError::NoIpv4 {
            entry: name.to_string(),
        });
    }
    Ok(ips.into_iter().map(address_peer).collect())
}

/// Resolves a list of IPv4 literals and host names into peers (a name
/// stands for its first address).
pub async fn resolve(entries: &[String]) -> Result<Vec<Peer>, ResolveError> {
    let mut peers = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.parse::<Ipv4Addr>() {
            Ok(ip) => peers.push(address_peer(ip)),
            Err(_) => peers.extend(resolve_all(entry).await?.into_iter().take(1)),
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_localhost_resolve() {
        let peers = resolve(&["10.0.0.2".into(), "localhost".into()])
            .await
            .expect("resolves");
        assert_eq!(peers[0].id, "10.0.0.2");
        assert_eq!(peers[1].address, Ipv4Addr::LOCALHOST);
        assert_eq!(peers[1].lifecycle, Lifecycle::Unknown);
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_named_in_the_error() {
        let err = resolve(&["no-such-host.invalid".into()])
            .await
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("no-such-host.invalid"), "{err}");
    }
}
