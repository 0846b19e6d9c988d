//! Talking to etcd over mutual TLS: probing peers for a cluster, reading
//! membership and health, and the membership changes. Thin wrappers over
//! etcd-client that turn its answers into this crate's plain types.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, LockOptions, MemberAddOptions,
    TlsOptions,
};

use crate::formation::{CLIENT_PORT, FoundCluster, FoundMember};
use crate::pki::{CertKind, NodePki};

/// How long one probe or health check may take: a dead peer must not stall
/// the loop.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd at {endpoints}: {source}")]
    Rpc {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: no answer within {timeout_ms} ms")]
    Timeout { endpoints: String, timeout_ms: u128 },
    #[error("node pki in {dir}: no {kind} certificate")]
    MissingCert { dir: String, kind: &'static str },
}

/// The agent's client identity and the cluster CA, as PEM.
#[derive(Clone)]
pub struct EtcdTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdTls { <certificates and key redacted> }")
    }
}

impl EtcdTls {
    /// The agent's client certificate from the node's pki dir.
    pub fn from_pki(pki: &NodePki) -> Result<EtcdTls, EtcdError> {
        let client = pki
            .get(CertKind::Client)
            .ok_or_else(|| EtcdError::MissingCert {
                dir: pki.dir.display().to_string(),
                kind: CertKind::Client.stem(),
            })?;
        let ca_pem = std::fs::read_to_string(&pki.ca_path).map_err(|_| EtcdError::MissingCert {
            dir: pki.dir.display().to_string(),
            kind: "ca",
        })?;
        Ok(EtcdTls {
            ca_pem,
            cert_pem: client.cert_pem.clone(),
            key_pem: client.key_pem.expose().to_string(),
        })
    }

    fn options(&self, timeout: Duration) -> ConnectOptions {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
    }
}

/// The client URL of the member at `ip`.
pub fn client_url(ip: impl std::fmt::Display) -> String {
    format!("https://{ip}:{CLIENT_PORT}")
}

/// Runs an etcd call with a deadline, naming the endpoints on failure.
async fn within<T>(
    endpoints: &[String],
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Rpc {
            endpoints: endpoints.join(","),
            source,
        }),
        Err(_) => Err(EtcdError::Timeout {
            endpoints: endpoints.join(","),
            timeout_ms: timeout.as_millis(),
        }),
    }
}

/// The lock held while etcd's membership changes.
pub const MEMBERSHIP_LOCK: &str = "muster/membership";

/// A connection to a cluster through the given endpoints. Clones share it.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: Vec<String>,
    timeout: Duration,
}

impl Etcd {
    pub async fn connect(
        endpoints: Vec<String>,
        tls: &EtcdTls,
        timeout: Duration,
    ) -> Result<Etcd, EtcdError> {
        crate::calls::etcd_connected();
        let client = within(
            &endpoints,
            timeout,
            Client::connect(endpoints.clone(), Some(tls.options(timeout))),
        )
        .await?;
        Ok(Etcd {
            client,
            endpoints,
            timeout,
        })
    }

    /// Cluster id, this endpoint's member id and the leader it knows (0: none).
    pub async fn status(&mut self) -> Result<(u64, u64, u64), EtcdError> {
        let s = within(&self.endpoints, self.timeout, self.client.status()).await?;
        let (cluster, member) = s
            .header()
            .map(|h| (h.cluster_id(), h.member_id()))
            .unwrap_or((0, 0));
        Ok((cluster, member, s.leader()))
    }

    pub async fn members(&mut self) -> Result<Vec<FoundMember>, EtcdError> {
        let list = within(&self.endpoints, self.timeout, self.client.member_list()).await?;
        Ok(list
            .members()
            .iter()
            .map(|m| FoundMember {
                id: m.id(),
                name: m.name().to_string(),
                peer_urls: m.peer_urls().to_vec(),
                is_learner: m.is_learner(),
                healthy: false,
            })
            .collect())
    }

    /// Adds a learner; returns its member id.
    pub async fn add_learner(&mut self, peer_url: &str) -> Result<u64, EtcdError> {
        let options = MemberAddOptions::new().with_is_learner();
        let r = within(
            &self.endpoints,
            self.timeout,
            self.client.member_add([peer_url], Some(options)),
        )
        .await?;
        Ok(r.member().map(|m| m.id()).unwrap_or(0))
    }

    pub async fn promote(&mut self, id: u64) -> Result<(), EtcdError> {
        within(
            &self.endpoints,
            self.timeout,
            self.client.member_promote(id),
        )
        .await
        .map(|_| ())
    }

    /// Hands leadership to member `to` (asked of the leader itself).
    pub async fn move_leader(&mut self, to: u64) -> Result<(), EtcdError> {
        within(&self.endpoints, self.timeout, self.client.move_leader(to))
            .await
            .map(|_| ())
    }

    pub async fn remove(&mut self, id: u64) -> Result<(), EtcdError> {
        within(&self.endpoints, self.timeout, self.client.member_remove(id))
            .await
            .map(|_| ())
    }

    /// Takes the cluster-wide lock `name` (e.g. [`MEMBERSHIP_LOCK`]), held
    /// by a lease of `ttl_s` seconds so a crashed holder cannot keep it.
    /// Returns (lock key, lease).
    pub async fn lock(&mut self, name: &str, ttl_s: i64) -> Result<(Vec<u8>, i64), EtcdError> {
        let lease = within(
            &self.endpoints,
            self.timeout,
            self.client.lease_grant(ttl_s, None),
        )
        .await?
        .id();
        let options = LockOptions::new().with_lease(lease);
        let wait = self.timeout * 4;
        let key = within(&self.endpoints, wait, self.client.lock(name, Some(options))).await?;
        Ok((key.key().to_vec(), lease))
    }

    pub async fn unlock(&mut self, key: Vec<u8>, lease: i64) {
        // Revoking the lease releases the lock even if unlock fails.
        let _ = within(&self.endpoints, self.timeout, self.client.unlock(key)).await;
        let _ = within(
            &self.endpoints,
            self.timeout,
            self.client.lease_revoke(lease),
        )
        .await;
    }

    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), EtcdError> {
        within(
            &self.endpoints,
            self.timeout,
            self.client.put(key, value, None),
        )
        .await
        .map(|_| ())
    }

    /// Whether this member serves: a linearizable read (what etcd's own
    /// `/health` does) goes through raft's read index, so it fails on a
    /// member without a leader and on one whose server stopped. Status and
    /// the member list are answered from memory even then: etcd 3.5 keeps
    /// the process of a removed member running, answering with the member
    /// list it had (seen by the fault campaign, seed 0xc0df001f).
    pub async fn serves(&mut self) -> Result<(), EtcdError> {
        let options = GetOptions::new().with_keys_only().with_limit(1);
        within(
            &self.endpoints,
            self.timeout,
            self.client.get(SERVES_PROBE_KEY, Some(options)),
        )
        .await
        .map(|_| ())
    }

    /// A snapshot of this member's backend, streamed whole into memory
    /// (etcd sends it in chunks). `budget` bounds the whole transfer.
    pub async fn snapshot(&mut self, budget: Duration) -> Result<Vec<u8>, EtcdError> {
        let endpoints = self.endpoints.clone();
        let client = &mut self.client;
        within(&endpoints, budget, async move {
            let mut stream = client.snapshot().await?;
            let mut db = Vec::new();
            while let Some(part) = stream.message().await? {
                db.extend_from_slice(part.blob());
            }
            Ok(db)
        })
        .await
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<String>, EtcdError> {
        let r = within(&self.endpoints, self.timeout, self.client.get(key, None)).await?;
        Ok(r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

/// The key the serving check reads (it need not exist).
const SERVES_PROBE_KEY: &str = "muster/serves";

/// Asks one peer's etcd what cluster it belongs to. `None` when nothing
/// answers (no etcd there yet, machine down, or a certificate we reject).
pub async fn probe(endpoint: String, tls: &EtcdTls) -> Option<FoundCluster> {
    let mut etcd = Etcd::connect(vec![endpoint], tls, PROBE_TIMEOUT)
        .await
        .ok()?;
    let (cluster_id, member_id, leader) = etcd.status().await.ok()?;
    let members = etcd.members().await.ok()?;
    // A voter that knows a leader but cannot serve a read speaks from a
    // stale memory (a removed member's process): its list must not outvote
    // the serving members' (removed_from, and merging in probe_peers).
    // Learners refuse linearizable reads by design.
    let learner = members.iter().any(|m| m.id == member_id && m.is_learner);
    let has_leader = leader != 0 && (learner || etcd.serves().await.is_ok());
    Some(FoundCluster {
        cluster_id,
        members,
        has_leader,
    })
}

/// Whether the etcd at `peer_url` answers on its peer URL (`GET /version`
/// with the agent's client certificate). etcd serves its peer URL from the
/// moment it starts, while its client URL stays closed until it has
/// applied the log up to its own publication: a learner that catches up
/// answers here and nowhere else. (etcd 3.5 also registers gRPC on the
/// peer port, but behind TLS it wraps TLS twice and no client gets an
/// answer; plain HTTP works.)
pub async fn peer_answers(peer_url: &str, tls: &EtcdTls, timeout: Duration) -> bool {
    crate::http::install_crypto_provider();
    let identity = format!("{}\n{}", tls.cert_pem, tls.key_pem);
    let client = match (
        reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()),
        reqwest::Identity::from_pem(identity.as_bytes()),
    ) {
        (Ok(ca), Ok(identity)) => reqwest::Client::builder()
            .tls_certs_only([ca])
            .identity(identity)
            .timeout(timeout)
            .no_proxy()
            .build(),
        _ => return false,
    };
    let Ok(client) = client else {
        return false;
    };
    let url = format!("{}/version", peer_url.trim_end_matches('/'));
    matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
}

/// Whether the member serving `endpoint` answers, knows a leader and (a
/// voter) serves a linearizable read. Learners refuse linearizable reads
/// by design, so for them status must do.
pub async fn healthy(endpoint: String, tls: &EtcdTls, learner: bool) -> bool {
    match Etcd::connect(vec![endpoint], tls, PROBE_TIMEOUT).await {
        Ok(mut etcd) => member_serves(&mut etcd, learner).await,
        Err(_) => false,
    }
}

/// `healthy` over a connection already made.
pub async fn member_serves(etcd: &mut Etcd, learner: bool) -> bool {
    matches!(etcd.status().await, Ok((_, _, leader)) if leader != 0)
        && (learner || etcd.serves().await.is_ok())
}
