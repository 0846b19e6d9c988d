//! BGP mode: the VIP as a /32 on a local interface (`lo` unless
//! `apiEndpoint.interface` names one), announced to the configured routers
//! by a speaker embedded in the agent.
//!
//! Why embedded and not a local bird/frr driven by the agent: the route
//! then shares the agent's fate. If the agent dies, the kernel closes its
//! sessions and every router drops the route at once; a separate daemon
//! would go on announcing a VIP that nobody manages, until someone noticed.
//! The speaker is small because it only ever announces one prefix and
//! accepts none: OPEN, KEEPALIVE, one UPDATE to announce, one to withdraw
//! (`message.rs`, over the `rustbgpd-wire` codec).
//!
//! Which holder the router prefers: each announcement carries a MED derived
//! from the etcd revision of the holder's claim, newer claims lower. A
//! crashed holder's route lingers in the router until its hold timer fires
//! (we propose 9 s), but it loses to its successor's at once.

pub mod message;
pub mod session;

use std::net::{Ipv4Addr, SocketAddr};

use tokio::sync::watch;
use tracing::{Instrument, debug, info_span};

use super::AbortOnDrop;
use super::mover::{Mover, MoverError, Takeover};
use crate::netlink::{Iface, Netlink};
pub use session::PeerState;

/// The hold time this node proposes, in seconds: a router that hears
/// nothing for this long drops the session (and our route).
pub const DEFAULT_HOLD_TIME: u16 = 9;
/// Routers listen here (RFC 4271).
pub const BGP_PORT: u16 = 179;

/// One router to announce to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpPeer {
    pub address: Ipv4Addr,
    pub asn: u32,
    /// 179 but in tests.
    pub port: u16,
}

/// This node's side of the peering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpSettings {
    pub local_asn: u32,
    /// The node's own address: BGP identifier, NEXT_HOP and source address.
    pub router_id: Ipv4Addr,
    pub hold_time: u16,
    pub peers: Vec<BgpPeer>,
}

/// See the module docs.
pub struct BgpMover {
    vip: Ipv4Addr,
    iface: Iface,
    netlink: Netlink,
    desired: watch::Sender<Option<u32>>,
    peers: Vec<(Ipv4Addr, watch::Receiver<PeerState>)>,
    _sessions: Vec<AbortOnDrop>,
}

impl BgpMover {
    /// Opens netlink and starts one session per peer, in the calling
    /// thread's network namespace (needs a tokio runtime).
    pub async fn new(
        vip: Ipv4Addr,
        settings: &BgpSettings,
        interface: Option<&str>,
    ) -> Result<BgpMover, MoverError> {
        let netlink = Netlink::open()?;
        let iface = netlink
            .find_iface(Some(interface.unwrap_or("lo")), settings.router_id)
            .await?;
        let me = message::Speaker {
            asn: settings.local_asn,
            router_id: settings.router_id,
            hold_time: settings.hold_time,
        };
        let (desired, _) = watch::channel(None);
        let mut peers = Vec::new();
        let mut sessions = Vec::new();
        for p in &settings.peers {
            let (state_tx, state_rx) = watch::channel(PeerState::Connecting);
            let cfg = session::SessionConfig {
                me,
                peer: SocketAddr::from((p.address, p.port)),
                peer_asn: p.asn,
                vip,
            };
            let span = info_span!("bgp", peer = %p.address, asn = p.asn);
            let task = session::run(cfg, desired.subscribe(), state_tx).instrument(span);
            sessions.push(AbortOnDrop(tokio::spawn(task)));
            peers.push((p.address, state_rx));
        }
        debug!(iface = %iface.name, peers = peers.len(), "vip: bgp mover ready");
        Ok(BgpMover {
            vip,
            iface,
            netlink,
            desired,
            peers,
            _sessions: sessions,
        })
    }

    /// Each router and where its session stands.
    pub fn peer_states(&self) -> Vec<(Ipv4Addr, PeerState)> {
        self.peers.iter().map(|(a, s)| (*a, *s.borrow())).collect()
    }

    pub fn iface(&self) -> &Iface {
        &self.iface
    }
}

impl Mover for BgpMover {
    async fn acquire(&mut self, takeover: Takeover) -> Result<(), MoverError> {
        // Accept the traffic before asking for it.
        self.netlink.add(&self.iface, self.vip).await?;
        self.desired
            .send_replace(Some(message::med_for_claim(takeover.revision)));
        Ok(())
    }

    async fn announce(&mut self) -> Result<(), MoverError> {
        // Sessions announce on their own whenever they (re)establish.
        Ok(())
    }

    async fn release(&mut self) -> Result<(), MoverError> {
        // Local first: from here on this node answers nothing for the VIP
        // (S4); the withdrawal follows on every established session.
        self.netlink.remove(&self.iface, self.vip).await?;
        self.desired.send_replace(None);
        Ok(())
    }
}
