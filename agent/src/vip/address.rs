//! The VIP's local address (a /32 on an interface), changed by a helper
//! thread of normal priority that owns its own netlink socket.
//!
//! Why a thread: adding, renewing or removing an address takes the
//! kernel's rtnl lock inside the netlink `sendmsg`, synchronously. On a
//! starved node the lock may be held for a long time by a process that
//! does not get the CPU (measured: a holder's election loop stalled about
//! 1.2 s in the VIP benchmark with two CPU hogs, while `ip link` commands
//! ran). The election loop runs at real-time priority and renews the
//! address with every proof; it must never wait on that lock. Renewals are
//! fire-and-forget; `set` and `remove` wait for the helper. All changes go
//! through the one queue, in order, so a renewal sent while holding can
//! never land after the removal that ends the hold (IPv4 `RTM_NEWADDR`
//! creates the address even without `NLM_F_CREATE`).

use std::net::Ipv4Addr;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::mover::MoverError;
use crate::netlink::{Iface, Netlink, NetlinkError};

type Reply<T> = oneshot::Sender<Result<T, NetlinkError>>;

enum Op {
    /// Add or renew with a kernel lifetime; a renewal has no reply.
    Set {
        lifetime_secs: u32,
        reply: Option<Reply<()>>,
    },
    Remove(Reply<bool>),
    Has(Reply<bool>),
}

/// See the module docs.
pub struct LocalAddress {
    iface: Iface,
    lifetime_secs: u32,
    ops: mpsc::UnboundedSender<Op>,
}

fn gone() -> MoverError {
    MoverError::Cloud("the VIP address thread has stopped".into())
}

impl LocalAddress {
    /// Finds the interface (`interface`, or the one holding `node_ip`) and
    /// starts the helper, both in the calling thread's network namespace
    /// (a new thread inherits it).
    pub async fn open(
        vip: Ipv4Addr,
        interface: Option<&str>,
        node_ip: Ipv4Addr,
    ) -> Result<LocalAddress, MoverError> {
        let iface = Netlink::open()?.find_iface(interface, node_ip).await?;
        let (ops, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_iface = iface.clone();
        std::thread::Builder::new()
            .name("muster-vip-addr".into())
            .spawn(move || serve(vip, thread_iface, rx, ready_tx))
            .map_err(|e| MoverError::Cloud(format!("cannot start the VIP address thread: {e}")))?;
        ready_rx.await.map_err(|_| gone())??;
        Ok(LocalAddress {
            iface,
            lifetime_secs: 1,
            ops,
        })
    }

    pub fn iface(&self) -> &Iface {
        &self.iface
    }

    /// Adds the address (or renews it) with a kernel lifetime, and waits.
    pub async fn set(&mut self, lifetime_secs: u32) -> Result<(), MoverError> {
        self.lifetime_secs = lifetime_secs;
        let (reply, answer) = oneshot::channel();
        self.send(Op::Set {
            lifetime_secs,
            reply: Some(reply),
        })?;
        Ok(answer.await.map_err(|_| gone())??)
    }

    /// Renews the lifetime set last; does not wait.
    pub fn renew(&self) -> Result<(), MoverError> {
        self.send(Op::Set {
            lifetime_secs: self.lifetime_secs,
            reply: None,
        })
    }

    /// Removes the address (after every change queued before), and waits.
    /// True when it was there.
    pub async fn remove(&self) -> Result<bool, MoverError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Remove(reply))?;
        Ok(answer.await.map_err(|_| gone())??)
    }

    /// Whether the address is on the interface now.
    pub async fn has(&self) -> Result<bool, MoverError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Has(reply))?;
        Ok(answer.await.map_err(|_| gone())??)
    }

    fn send(&self, op: Op) -> Result<(), MoverError> {
        self.ops.send(op).map_err(|_| gone())
    }
}

/// The helper: its own runtime and netlink socket, one change at a time,
/// until the `LocalAddress` is dropped.
fn serve(
    vip: Ipv4Addr,
    iface: Iface,
    mut ops: mpsc::UnboundedReceiver<Op>,
    ready: oneshot::Sender<Result<(), NetlinkError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(NetlinkError::Open(e)));
            return;
        }
    };
    runtime.block_on(async move {
        let netlink = match Netlink::open() {
            Ok(n) => n,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut queued = None;
        loop {
            let op = match queued.take() {
                Some(op) => op,
                None => match ops.recv().await {
                    Some(op) => op,
                    None => return,
                },
            };
            // Renewals that piled up while the lock was held: only the
            // last of a run matters (order with set/remove is kept).
            if matches!(op, Op::Set { reply: None, .. })
                && let Ok(next) = ops.try_recv()
            {
                let also_renewal = matches!(next, Op::Set { reply: None, .. });
                queued = Some(next);
                if also_renewal {
                    continue;
                }
            }
            match op {
                Op::Set {
                    lifetime_secs,
                    reply,
                } => {
                    let r = netlink.add_expiring(&iface, vip, lifetime_secs).await;
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(r);
                        }
                        None => {
                            if let Err(e) = r {
                                warn!("vip: cannot renew the address's lifetime: {e}");
                            }
                        }
                    }
                }
                Op::Remove(reply) => {
                    let _ = reply.send(netlink.remove(&iface, vip).await);
                }
                Op::Has(reply) => {
                    let _ = reply.send(netlink.has(&iface, vip).await);
                }
            }
        }
    });
}
