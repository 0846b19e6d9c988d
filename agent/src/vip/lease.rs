//! The election key on etcd: read it, claim it with a txn, touch it, keep
//! its lease alive, revoke. Only I/O; what to do with the answers is
//! `election`'s business.
//!
//! The key `/muster/vip/<vip>` holds the holder's id and is bound to the
//! holder's lease. A *touch* rewrites the same value under the same lease
//! only if both are still ours: its new `mod_revision` is the heartbeat
//! candidates time on their own clocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, PutOptions, TlsOptions, Txn,
    TxnOp, TxnOpResponse,
};

use super::election::{Expect, KeyView};
use crate::pki::{CertKind, NodePki};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("etcd election at {endpoints}: {op}: {source}")]
    Rpc {
        endpoints: String,
        op: &'static str,
        source: etcd_client::Error,
    },
    #[error("etcd election at {endpoints}: {op}: no answer within {timeout:?}")]
    Timeout {
        endpoints: String,
        op: &'static str,
        timeout: Duration,
    },
    #[error("etcd election: no etcd endpoint configured")]
    NoEndpoints,
    #[error("etcd election: key {key} holds a value that is not UTF-8")]
    BadValue { key: String },
    #[error("etcd election: node pki in {dir}: cannot read the {what}")]
    Pki { dir: String, what: &'static str },
}

/// How to reach etcd: endpoints and, in production, the agent's client
/// certificate (plain `http://` endpoints need none; tests use that).
#[derive(Clone)]
pub struct EtcdAccess {
    pub endpoints: Vec<String>,
    tls: Option<(String, String, String)>,
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EtcdAccess {{ endpoints: {:?}, tls: {} }}",
            self.endpoints,
            self.tls.is_some()
        )
    }
}

impl EtcdAccess {
    pub fn plain(endpoints: Vec<String>) -> EtcdAccess {
        EtcdAccess {
            endpoints,
            tls: None,
        }
    }

    /// Mutual TLS with the node's client certificate and the cluster CA.
    pub fn mtls(endpoints: Vec<String>, pki: &NodePki) -> Result<EtcdAccess, LeaseError> {
        let dir = pki.dir.display().to_string();
        let client = pki.get(CertKind::Client).ok_or(LeaseError::Pki {
            dir: dir.clone(),
            what: "client certificate",
        })?;
        let ca = std::fs::read_to_string(&pki.ca_path).map_err(|_| LeaseError::Pki {
            dir,
            what: "cluster CA",
        })?;
        let tls = Some((
            ca,
            client.cert_pem.clone(),
            client.key_pem.expose().to_string(),
        ));
        Ok(EtcdAccess { endpoints, tls })
    }

    pub(crate) fn options(&self, timeout: Duration) -> ConnectOptions {
        // require_leader: a member cut off from its cluster must fail our
        // calls at once instead of serving them from a stale view.
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_require_leader(true);
        match &self.tls {
            Some((ca, cert, key)) => opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .identity(Identity::from_pem(cert, key)),
            ),
            None => opts,
        }
    }
}

/// A TLS handshake on a busy machine may take a while; calls are bounded
/// separately and much tighter.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The election key of `vip`.
pub fn key_for(vip: std::net::Ipv4Addr) -> String {
    format!("/muster/vip/{vip}")
}

/// Connections to etcd, bound to one election key and holder id.
///
/// One client per endpoint, used one at a time and sticky: a balanced
/// channel keeps sending a share of the calls to a dead member until they
/// time out, which would make a healthy holder miss its renewals. A failed
/// call moves on to the next endpoint. Put the local member first.
#[derive(Clone)]
pub struct Store {
    clients: Arc<Vec<(String, Client)>>,
    current: Arc<AtomicUsize>,
    key: String,
    me: String,
    timeout: Duration,
}

impl Store {
    /// `timeout` bounds each call; connecting may take [`CONNECT_TIMEOUT`].
    pub async fn connect(
        access: &EtcdAccess,
        key: String,
        me: String,
        timeout: Duration,
    ) -> Result<Store, LeaseError> {
        let mut clients = Vec::with_capacity(access.endpoints.len());
        let mut last_error = None;
        for endpoint in &access.endpoints {
            let connect = Client::connect([endpoint], Some(access.options(CONNECT_TIMEOUT)));
            match within(endpoint, "connect", CONNECT_TIMEOUT, connect).await {
                Ok(c) => clients.push((endpoint.clone(), c)),
                Err(e) => last_error = Some(e),
            }
        }
        if clients.is_empty() {
            return Err(last_error.unwrap_or(LeaseError::NoEndpoints));
        }
        Ok(Store {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(0)),
            key,
            me,
            timeout,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Runs `f` on the current endpoint's client; on failure the next
    /// call goes to the next endpoint.
    async fn call<T, Fut>(
        &self,
        op: &'static str,
        f: impl FnOnce(Client) -> Fut,
    ) -> Result<T, LeaseError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        let (endpoint, client) = &self.clients[i];
        let r = within(endpoint, op, self.timeout, f(client.clone())).await;
        if r.is_err() {
            let next = (i + 1) % self.clients.len();
            let _ = self
                .current
                .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
        }
        r
    }

    /// The key as it is now (a linearizable read).
    pub async fn read(&self) -> Result<KeyView, LeaseError> {
        let key = self.key.clone();
        let r = self
            .call("get", |mut c| async move { c.get(key, None).await })
            .await?;
        match r.kvs().first() {
            None => Ok(KeyView::Absent),
            Some(kv) => Ok(KeyView::Held {
                holder: kv
                    .value_str()
                    .map_err(|_| LeaseError::BadValue {
                        key: self.key.clone(),
                    })?
                    .to_string(),
                lease: kv.lease(),
                mod_revision: kv.mod_revision(),
            }),
        }
    }

    /// A new lease; returns its id and the TTL etcd granted (it raises
    /// TTLs below its own minimum, 1.5 election timeouts).
    pub async fn grant(&self, ttl_secs: i64) -> Result<(i64, Duration), LeaseError> {
        let grant = |mut c: Client| async move { c.lease_grant(ttl_secs, None).await };
        let r = self.call("lease grant", grant).await?;
        Ok((r.id(), Duration::from_secs(r.ttl().max(0) as u64)))
    }

    /// Writes our id under `lease` if the key is as `expect` says. The
    /// revision of the write when we now hold it.
    pub async fn claim(&self, expect: Expect, lease: i64) -> Result<Option<i64>, LeaseError> {
        let compare = match expect {
            Expect::Absent => Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0),
            Expect::ModRevision(rev) => {
                Compare::mod_revision(self.key.as_str(), CompareOp::Equal, rev)
            }
        };
        self.put_if(vec![compare], lease, "claim").await
    }

    /// Rewrites our claim if the key still names us under `lease`: a new
    /// revision that restarts every candidate's wait. False: we lost it.
    pub async fn touch(&self, lease: i64) -> Result<bool, LeaseError> {
        let compares = vec![
            Compare::value(self.key.as_str(), CompareOp::Equal, self.me.as_str()),
            Compare::lease(self.key.as_str(), CompareOp::Equal, lease),
        ];
        Ok(self.put_if(compares, lease, "touch").await?.is_some())
    }

    async fn put_if(
        &self,
        compares: Vec<Compare>,
        lease: i64,
        op: &'static str,
    ) -> Result<Option<i64>, LeaseError> {
        let put = TxnOp::put(
            self.key.as_str(),
            self.me.as_str(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let txn = Txn::new().when(compares).and_then(vec![put]);
        let r = self
            .call(op, |mut c| async move { c.txn(txn).await })
            .await?;
        // A succeeded txn carries our put's response; nothing else to check.
        let ours = r.succeeded()
            && r.op_responses()
                .iter()
                .all(|o| matches!(o, TxnOpResponse::Put(_)));
        Ok(ours.then(|| r.header().map_or(0, |h| h.revision())))
    }

    /// Renews `lease` once. False: the lease is gone (expired or revoked).
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, LeaseError> {
        // A fresh stream per renewal: its one answer can only be for the
        // request just sent, so the send time we record is the right one.
        let renew = |mut c: Client| async move { c.lease_keep_alive(lease).await };
        match self.call("lease keep-alive", renew).await {
            Ok(_) => Ok(true),
            Err(LeaseError::Rpc {
                source: etcd_client::Error::LeaseKeepAliveError(_),
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Revokes `lease` (deleting our key with it). An unknown lease is fine.
    pub async fn revoke(&self, lease: i64) -> Result<(), LeaseError> {
        let revoke = |mut c: Client| async move { c.lease_revoke(lease).await };
        match self.call("lease revoke", revoke).await {
            Ok(_) => Ok(()),
            Err(LeaseError::Rpc {
                source: etcd_client::Error::GRpcStatus(s),
                ..
            }) if s.message().contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Store {
    /// If the *first* endpoint's member (the local one) leads etcd, asks it
    /// to hand leadership to another voting member, so that one machine's
    /// crash never costs both the VIP holder and the etcd leader (the new
    /// holder's txn would wait for etcd's re-election). Returns the member
    /// that now leads, if leadership moved.
    pub async fn shed_leadership(&self) -> Result<Option<u64>, LeaseError> {
        let (endpoint, client) = &self.clients[0];
        let mut c = client.clone();
        let status = within(endpoint, "status", self.timeout, c.status()).await?;
        let me = status.header().map(|h| h.member_id()).unwrap_or(0);
        if me == 0 || status.leader() != me {
            return Ok(None);
        }
        let members = within(endpoint, "member list", self.timeout, c.member_list()).await?;
        let Some(target) = members
            .members()
            .iter()
            .find(|m| m.id() != me && !m.is_learner() && !m.client_urls().is_empty())
            .map(|m| m.id())
        else {
            return Ok(None);
        };
        // A transfer waits for the target to catch up and win: allow an
        // election's worth of time, not one call's.
        let transfer = c.move_leader(target);
        within(endpoint, "move leader", CONNECT_TIMEOUT, transfer).await?;
        Ok(Some(target))
    }
}

async fn within<T>(
    endpoints: &str,
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(LeaseError::Rpc {
            endpoints: endpoints.to_string(),
            op,
            source,
        }),
        Err(_) => Err(LeaseError::Timeout {
            endpoints: endpoints.to_string(),
            op,
            timeout,
        }),
    }
}
