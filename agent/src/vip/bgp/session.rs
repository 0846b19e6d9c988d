//! One BGP session with one router, kept up for the life of the mover
//! whether or not this node holds the VIP, so a takeover only has to send
//! one UPDATE. The session is ours to open (we connect to the router's
//! port 179); it follows `desired` (announce with a MED, or not), and
//! reconnects with capped backoff after any failure. Fate-sharing is the
//! point: when the agent dies, the kernel closes the socket and the router
//! drops our route at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use rustbgpd_wire::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::message::{self, Malformed, Negotiated, OpenRefused, Speaker};
use crate::retry::Backoff;

/// Reconnect schedule: quick at first (a router restarting), then every
/// 10 s at most; a session never gives up.
const RECONNECT: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max_delay: Duration::from_secs(10),
    total: Duration::MAX,
};
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long we wait for the router's OPEN and first KEEPALIVE.
const OPEN_WAIT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where this session stands, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Connecting,
    /// Up; `announced`: the router has our VIP route.
    Established {
        announced: bool,
    },
}

/// One router to peer with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub me: Speaker,
    pub peer: SocketAddr,
    pub peer_asn: u32,
    pub vip: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{0}: timed out")]
    Timeout(&'static str),
    #[error("refused the router's OPEN: {0}")]
    Refused(#[from] OpenRefused),
    #[error("the router sent NOTIFICATION code {code} subcode {subcode}")]
    Notified { code: u8, subcode: u8 },
    #[error("{0}")]
    Malformed(#[from] Malformed),
    #[error("the router closed the connection")]
    Closed,
    #[error("unexpected {0} from the router")]
    Unexpected(&'static str),
    #[error("no message from the router within the hold time {0:?}")]
    HoldExpired(Duration),
}

/// Runs the session until `desired`'s sender is dropped (the mover is gone).
/// `desired`: `Some(med)` = announce the VIP with that MED, `None` = not.
pub async fn run(
    cfg: SessionConfig,
    mut desired: watch::Receiver<Option<u32>>,
    state: watch::Sender<PeerState>,
) {
    let mut attempt = 0u32;
    let mut failing = false;
    loop {
        state.send_replace(PeerState::Connecting);
        let mut established = false;
        let outcome = session_once(&cfg, &mut desired, &state, &mut established).await;
        match outcome {
            Ok(()) => return,
            Err(e) => {
                if established {
                    warn!(peer = %cfg.peer, "bgp: session lost: {e}");
                    attempt = 0;
                    failing = false;
                } else if failing {
                    debug!(peer = %cfg.peer, "bgp: {e}");
                } else {
                    warn!(peer = %cfg.peer, "bgp: cannot establish a session: {e}; retrying");
                    failing = true;
                }
            }
        }
        state.send_replace(PeerState::Connecting);
        tokio::select! {
            _ = sleep(RECONNECT.delay(attempt)) => {}
            r = desired.changed() => if r.is_err() { return },
        }
        attempt = attempt.saturating_add(1);
    }
}

/// One connection, from connect to its end. `Ok` only when the mover is gone.
async fn session_once(
    cfg: &SessionConfig,
    desired: &mut watch::Receiver<Option<u32>>,
    state: &watch::Sender<PeerState>,
    established: &mut bool,
) -> Result<(), SessionError> {
    let io = |op| move |source| SessionError::Io { op, source };
    let socket = TcpSocket::new_v4().map_err(io("socket"))?;
    // The router knows us by this address (its `neighbor` line).
    socket
        .bind(SocketAddr::from((cfg.me.router_id, 0)))
        .map_err(io("bind"))?;
    let stream = timeout(CONNECT_TIMEOUT, socket.connect(cfg.peer))
        .await
        .map_err(|_| SessionError::Timeout("connect"))?
        .map_err(io("connect"))?;
    stream.set_nodelay(true).map_err(io("set TCP_NODELAY"))?;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);

    send(&mut wr, &message::open(&cfg.me)).await?;
    let theirs = match read_one(&mut rd, &mut buf, OPEN_WAIT).await? {
        Message::Open(o) => o,
        other => return Err(unexpected(&other)),
    };
    let neg = match message::accept_open(&cfg.me, cfg.peer_asn, &theirs) {
        Ok(n) => n,
        Err(refused) => {
            let _ = send(&mut wr, &refused.notification()).await;
            return Err(refused.into());
        }
    };
    send(&mut wr, &message::keepalive()).await?;
    match read_one(&mut rd, &mut buf, OPEN_WAIT).await? {
        Message::Keepalive => {}
        other => return Err(unexpected(&other)),
    }
    *established = true;
    state.send_replace(PeerState::Established { announced: false });
    info!(peer = %cfg.peer, hold = ?neg.hold_time, "bgp: session established");
    established_loop(cfg, &neg, desired, state, &mut rd, &mut wr, &mut buf).await
}

async fn established_loop(
    cfg: &SessionConfig,
    neg: &Negotiated,
    desired: &mut watch::Receiver<Option<u32>>,
    state: &watch::Sender<PeerState>,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    buf: &mut BytesMut,
) -> Result<(), SessionError> {
    let hold = (!neg.hold_time.is_zero()).then_some(neg.hold_time);
    let keepalive_every = neg.keepalive_every();
    let mut hold_deadline = hold.map(|h| Instant::now() + h);
    let mut next_keepalive = keepalive_every.map(|k| Instant::now() + k);
    let mut announced: Option<u32> = None;
    loop {
        let want = *desired.borrow_and_update();
        if want != announced {
            let msg = match want {
                Some(med) => message::announce(&cfg.me, neg, cfg.vip, med),
                None => message::withdraw(neg, cfg.vip),
            };
            send(wr, &msg).await?;
            announced = want;
            state.send_replace(PeerState::Established {
                announced: want.is_some(),
            });
            debug!(peer = %cfg.peer, announced = want.is_some(), "bgp: route sent");
        }
        tokio::select! {
            r = desired.changed() => if r.is_err() { return Ok(()) },
            _ = sleep_until(next_keepalive.unwrap_or_else(far_future)), if next_keepalive.is_some() => {
                send(wr, &message::keepalive()).await?;
                next_keepalive = keepalive_every.map(|k| Instant::now() + k);
            }
            _ = sleep_until(hold_deadline.unwrap_or_else(far_future)), if hold_deadline.is_some() => {
                let _ = send(wr, &message::hold_timer_expired()).await;
                return Err(SessionError::HoldExpired(neg.hold_time));
            }
            n = rd.read_buf(buf) => {
                if n.map_err(|source| SessionError::Io { op: "read", source })? == 0 {
                    return Err(SessionError::Closed);
                }
                while let Some(msg) = message::next_message(buf)? {
                    match msg {
                        Message::Keepalive | Message::Update(_) => {
                            hold_deadline = hold.map(|h| Instant::now() + h);
                        }
                        // The router asks for our routes again.
                        Message::RouteRefresh(_) => {
                            if let Some(med) = announced {
                                send(wr, &message::announce(&cfg.me, neg, cfg.vip, med)).await?;
                            }
                        }
                        other => return Err(unexpected(&other)),
                    }
                }
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

async fn send(wr: &mut OwnedWriteHalf, msg: &Message) -> Result<(), SessionError> {
    let bytes = message::encode(msg)?;
    timeout(WRITE_TIMEOUT, wr.write_all(&bytes))
        .await
        .map_err(|_| SessionError::Timeout("write"))?
        .map_err(|source| SessionError::Io {
            op: "write",
            source,
        })
}

/// Reads until one whole message is in `buf`, within `within`.
async fn read_one(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    within: Duration,
) -> Result<Message, SessionError> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(msg) = message::next_message(buf)? {
            return Ok(msg);
        }
        let n = tokio::time::timeout_at(deadline, rd.read_buf(buf))
            .await
            .map_err(|_| SessionError::Timeout("waiting for the router's OPEN / KEEPALIVE"))?
            .map_err(|source| SessionError::Io { op: "read", source })?;
        if n == 0 {
            return Err(SessionError::Closed);
        }
    }
}

fn unexpected(msg: &Message) -> SessionError {
    match msg {
        Message::Notification(n) => SessionError::Notified {
            code: n.code.as_u8(),
            subcode: n.subcode,
        },
        Message::Open(_) => SessionError::Unexpected("OPEN"),
        Message::Update(_) => SessionError::Unexpected("UPDATE"),
        Message::Keepalive => SessionError::Unexpected("KEEPALIVE"),
        Message::RouteRefresh(_) => SessionError::Unexpected("ROUTE-REFRESH"),
        _ => SessionError::Unexpected("message"),
    }
}
