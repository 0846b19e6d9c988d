//! "May this node serve the API?" A candidate campaigns only when healthy,
//! and a holder that stays unhealthy hands the VIP on. Today healthy means
//! the local etcd member answers and knows a leader; once Kubernetes runs,
//! a check of the local kube-apiserver replaces it (any [`HealthCheck`],
//! a closure included).

use std::future::Future;
use std::time::Duration;

use etcd_client::Client;

use super::lease::EtcdAccess;

/// Longest a check may take; slower counts as unhealthy.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1000);

pub trait HealthCheck: Send {
    fn healthy(&mut self) -> impl Future<Output = bool> + Send;
}

/// Any `FnMut() -> impl Future<Output = bool>` is a health check.
impl<F, Fut> HealthCheck for F
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = bool> + Send,
{
    fn healthy(&mut self) -> impl Future<Output = bool> + Send {
        self()
    }
}

/// Healthy when the local etcd member answers and knows a leader. Keeps
/// one connection and reconnects after failures.
pub struct EtcdMemberHealth {
    access: EtcdAccess,
    client: Option<Client>,
    timeout: Duration,
}

impl EtcdMemberHealth {
    /// `access`: the local member only (e.g. `https://127.0.0.1:2379`).
    pub fn new(access: EtcdAccess) -> EtcdMemberHealth {
        EtcdMemberHealth {
            access,
            client: None,
            timeout: CHECK_TIMEOUT,
        }
    }

    /// The same check, allowed `timeout` (at least [`CHECK_TIMEOUT`]):
    /// slow machines' timers are longer.
    pub fn with_timeout(mut self, timeout: Duration) -> EtcdMemberHealth {
        self.timeout = timeout.max(CHECK_TIMEOUT);
        self
    }

    async fn check(&mut self) -> Result<bool, etcd_client::Error> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self.client.insert(
                Client::connect(
                    &self.access.endpoints,
                    Some(self.access.options(self.timeout)),
                )
                .await?,
            ),
        };
        Ok(client.status().await?.leader() != 0)
    }
}

impl HealthCheck for EtcdMemberHealth {
    async fn healthy(&mut self) -> bool {
        match tokio::time::timeout(self.timeout, self.check()).await {
            Ok(Ok(has_leader)) => has_leader,
            Ok(Err(e)) => {
                tracing::debug!("vip health: local etcd member: {e}");
                self.client = None;
                false
            }
            Err(_) => false,
        }
    }
}
