//! Movers make this node answer for the VIP, or stop. The election does
//! not care how: `arp` (an address on a shared L2 segment, here), `bgp`
//! (a /32 announced to routers, `bgp/`) and `aws` (a secondary private IP
//! moved between network interfaces, `aws.rs`) and `gce` (an alias IP
//! range moved between instances' interfaces, `gce.rs`). Another plugs in
//! the same way: one more [`Mover`] and one arm in `AnyMover`.

use std::future::Future;
use std::net::Ipv4Addr;

use tracing::debug;

use super::address::LocalAddress;
use super::arp::{self, Arp, ArpSocket};
use crate::netlink::{Iface, NetlinkError};

#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("arp on {iface}: {source}")]
    Arp {
        iface: String,
        source: std::io::Error,
    },
    /// Boxed: the largest variant, and errors travel by value.
    #[error(transparent)]
    Aws(Box<crate::cloud::aws::AwsError>),
    #[error(transparent)]
    Gce(Box<crate::cloud::gce::GceError>),
    #[error("cloud: {0}")]
    Cloud(String),
}

/// What the election knows of a claim just won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    /// etcd revision of the winning txn: grows with every takeover, so
    /// movers can tell the network which holder is the newest (BGP MED).
    pub revision: i64,
    /// Kernel lifetime of a local address (`Timing::address_lifetime`);
    /// `refresh` renews it with every proof of the claim.
    pub address_lifetime: std::time::Duration,
}

impl Takeover {
    /// The lifetime in the kernel's unit, whole seconds (at least 1).
    pub fn lifetime_secs(&self) -> u32 {
        self.address_lifetime
            .as_secs()
            .clamp(1, u64::from(u32::MAX)) as u32
    }
}

/// How the VIP is moved. All methods are idempotent; `release` must be
/// quick and local where at all possible, because S4 waits on it.
pub trait Mover: Send {
    /// Start answering for the VIP and make the network know it.
    fn acquire(
        &mut self,
        takeover: Takeover,
    ) -> impl Future<Output = Result<(), MoverError>> + Send;
    /// Repeat the announcement (lost packets, slow switches). May be a no-op.
    fn announce(&mut self) -> impl Future<Output = Result<(), MoverError>> + Send;
    /// The claim was proven again: renew the local address's kernel
    /// lifetime. No-op for movers without an expiring address.
    fn refresh(&mut self) -> impl Future<Output = Result<(), MoverError>> + Send {
        async { Ok(()) }
    }
    /// Stop answering for the VIP.
    fn release(&mut self) -> impl Future<Output = Result<(), MoverError>> + Send;
}

/// L2 mode: the VIP as a /32 on an interface, announced by gratuitous ARP.
pub struct ArpMover {
    vip: Ipv4Addr,
    address: LocalAddress,
    socket: ArpSocket,
}

impl ArpMover {
    /// Finds the interface (`interface`, or the one holding `node_ip`) and
    /// opens the sockets, in the calling thread's network namespace.
    pub async fn new(
        vip: Ipv4Addr,
        interface: Option<&str>,
        node_ip: Ipv4Addr,
    ) -> Result<ArpMover, MoverError> {
        let address = LocalAddress::open(vip, interface, node_ip).await?;
        let iface = address.iface();
        let socket = ArpSocket::open(iface.index).map_err(|source| MoverError::Arp {
            iface: iface.name.clone(),
            source,
        })?;
        debug!(iface = %iface.name, mac = %arp::mac_string(&iface.mac), "vip: arp mover ready");
        Ok(ArpMover {
            vip,
            address,
            socket,
        })
    }

    pub fn iface(&self) -> &Iface {
        self.address.iface()
    }

    /// Whether the address is on the interface now.
    pub async fn holds(&self) -> Result<bool, MoverError> {
        self.address.has().await
    }

    fn send_announcements(&self) -> Result<(), MoverError> {
        let iface = self.address.iface();
        // Both forms: some neighbours heed only requests, some only replies.
        let frames = [
            Arp::announce_request(iface.mac, self.vip).frame(arp::BROADCAST),
            Arp::announce_reply(iface.mac, self.vip).frame(arp::BROADCAST),
        ];
        for f in &frames {
            self.socket.send(f).map_err(|source| MoverError::Arp {
                iface: iface.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

impl Mover for ArpMover {
    async fn acquire(&mut self, takeover: Takeover) -> Result<(), MoverError> {
        self.address.set(takeover.lifetime_secs()).await?;
        // The kernel sends no ARP on address add: announce ourselves.
        self.send_announcements()
    }

    async fn announce(&mut self) -> Result<(), MoverError> {
        self.send_announcements()
    }

    async fn refresh(&mut self) -> Result<(), MoverError> {
        self.address.renew()
    }

    async fn release(&mut self) -> Result<(), MoverError> {
        self.address.remove().await?;
        Ok(())
    }
}

/// The mover the config asked for, as one type for the manager.
pub enum AnyMover {
    Arp(ArpMover),
    Bgp(super::bgp::BgpMover),
    Aws(super::aws::AwsMover),
    Gce(super::gce::GceMover),
}

impl Mover for AnyMover {
    async fn acquire(&mut self, takeover: Takeover) -> Result<(), MoverError> {
        match self {
            AnyMover::Arp(m) => m.acquire(takeover).await,
            AnyMover::Bgp(m) => m.acquire(takeover).await,
            AnyMover::Aws(m) => m.acquire(takeover).await,
            AnyMover::Gce(m) => m.acquire(takeover).await,
        }
    }

    async fn announce(&mut self) -> Result<(), MoverError> {
        match self {
            AnyMover::Arp(m) => m.announce().await,
            AnyMover::Bgp(m) => m.announce().await,
            AnyMover::Aws(m) => m.announce().await,
            AnyMover::Gce(m) => m.announce().await,
        }
    }

    async fn refresh(&mut self) -> Result<(), MoverError> {
        match self {
            AnyMover::Arp(m) => m.refresh().await,
            AnyMover::Bgp(m) => m.refresh().await,
            AnyMover::Aws(m) => m.refresh().await,
            AnyMover::Gce(m) => m.refresh().await,
        }
    }

    async fn release(&mut self) -> Result<(), MoverError> {
        match self {
            AnyMover::Arp(m) => m.release().await,
            AnyMover::Bgp(m) => m.release().await,
            AnyMover::Aws(m) => m.release().await,
            AnyMover::Gce(m) => m.release().await,
        }
    }
}
