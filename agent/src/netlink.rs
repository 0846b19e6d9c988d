//! Addresses and routes through rtnetlink (no `ip` processes): the VIP as
//! a /32 on a local interface, and the pod network's routes to other
//! nodes. Add and remove are idempotent: "already there" and "not there"
//! are success, so a retry or a restart never fails on them.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{AddressMessageBuilder, Handle, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: cannot open a socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("netlink: {op}: {source}")]
    Request {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("netlink: no interface named {0}")]
    NoSuchInterface(String),
    #[error(
        "netlink: no interface holds this node's address {0}; name one in apiEndpoint.interface"
    )]
    NoInterfaceWithAddress(Ipv4Addr),
    #[error("netlink: interface {0} has no 6-byte hardware address (not Ethernet?)")]
    NoMac(String),
}

/// The interface the VIP lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

/// A netlink connection; its I/O task ends when this is dropped.
pub struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// Kernel answers for "already there" and "not there".
const EEXIST: i32 = libc::EEXIST;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace; needs
    /// a tokio runtime.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        let task = tokio::spawn(conn);
        Ok(Netlink { handle, task })
    }

    /// The interface called `name`, or (no name) the one holding `node_ip`.
    pub async fn find_iface(
        &self,
        name: Option<&str>,
        node_ip: Ipv4Addr,
    ) -> Result<Iface, NetlinkError> {
        let index = match name {
            Some(name) => self.link_index_by_name(name).await?,
            None => self.index_holding(node_ip).await?,
        };
        let index = index.ok_or_else(|| match name {
            Some(n) => NetlinkError::NoSuchInterface(n.to_string()),
            None => NetlinkError::NoInterfaceWithAddress(node_ip),
        })?;
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(|source| NetlinkError::Request {
                op: format!("get link {index}"),
                source,
            })?
            .ok_or_else(|| NetlinkError::NoSuchInterface(format!("#{index}")))?;
        let mut iface_name = format!("#{index}");
        let mut mac = None;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => iface_name = n.clone(),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    mac = <[u8; 6]>::try_from(a.as_slice()).ok()
                }
                _ => {}
            }
        }
        let mac = mac.ok_or_else(|| NetlinkError::NoMac(iface_name.clone()))?;
        Ok(Iface {
            name: iface_name,
            index,
            mac,
        })
    }

    async fn link_index_by_name(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(NetlinkError::Request {
                op: format!("get link {name}"),
                source,
            }),
        }
    }

    async fn index_holding(&self, ip: Ipv4Addr) -> Result<Option<u32>, NetlinkError> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_address_filter(IpAddr::V4(ip))
            .execute();
        let first = addrs
            .try_next()
            .await
            .map_err(|source| NetlinkError::Request {
                op: format!("find the interface of {ip}"),
                source,
            })?;
        Ok(first.map(|m| m.header.index))
    }

    /// Adds `vip/32` to the interface. True when it was not there before.
    pub async fn add(&self, iface: &Iface, vip: Ipv4Addr) -> Result<bool, NetlinkError> {
        match self
            .handle
            .address()
            .add(iface.index, IpAddr::V4(vip), 32)
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(false),
            Err(source) => Err(NetlinkError::Request {
                op: format!("add {vip}/32 to {}", iface.name),
                source,
            }),
        }
    }

    /// Adds `vip/32` to the interface, or renews it, with a kernel-enforced
    /// lifetime: the kernel removes the address `lifetime_secs` after the
    /// last call even if this process never runs again (a frozen or starved
    /// VIP holder; S4). Renewing replaces the lifetime of the address.
    pub async fn add_expiring(
        &self,
        iface: &Iface,
        vip: Ipv4Addr,
        lifetime_secs: u32,
    ) -> Result<(), NetlinkError> {
        use rtnetlink::packet_route::address::CacheInfo;
        let mut request = self
            .handle
            .address()
            .add(iface.index, IpAddr::V4(vip), 32)
            .replace();
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = lifetime_secs;
        lifetime.ifa_valid = lifetime_secs;
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
        request
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                op: format!("add {vip}/32 to {} for {lifetime_secs} s", iface.name),
                source,
            })
    }

    /// Removes `vip/32` from the interface. True when it was there.
    pub async fn remove(&self, iface: &Iface, vip: Ipv4Addr) -> Result<bool, NetlinkError> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(iface.index)
            .address(vip, 32)
            .build();
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(false),
            Err(source) => Err(NetlinkError::Request {
                op: format!("remove {vip}/32 from {}", iface.name),
                source,
            }),
        }
    }

    /// Whether `vip` is configured on the interface (any prefix length).
    pub async fn has(&self, iface: &Iface, vip: Ipv4Addr) -> Result<bool, NetlinkError> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(iface.index)
            .execute();
        loop {
            let next = addrs
                .try_next()
                .await
                .map_err(|source| NetlinkError::Request {
                    op: format!("list addresses of {}", iface.name),
                    source,
                })?;
            let Some(msg) = next else { return Ok(false) };
            let found = msg
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == vip));
            if found {
                return Ok(true);
            }
        }
    }
}

/// `ESRCH`: the kernel's "no such route" on delete.
const ESRCH: i32 = libc::ESRCH;

impl Netlink {
    /// `ip route replace DST via GATEWAY`: added, or changed if a route to
    /// `DST` exists with another gateway.
    pub async fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                op: format!("route replace {dst}/{prefix} via {gateway}"),
                source,
            })
    }

    /// `ip route del DST via GATEWAY`; a route already gone is success.
    pub async fn delete_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .gateway(gateway)
            .build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                op: format!("route del {dst}/{prefix} via {gateway}"),
                source,
            }),
        }
    }
}
