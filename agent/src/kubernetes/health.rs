//! "May this node serve the API?" once Kubernetes runs: its own
//! kube-apiserver answers `/readyz` with `ok`. The VIP follows it, so a
//! node whose apiserver is down (or whose etcd member is, which readyz
//! includes) never holds the VIP.

use std::path::PathBuf;
use std::time::Duration;

use crate::vip::HealthCheck;

/// The shortest time one readiness check may take before it counts as
/// unhealthy.
pub const MIN_CHECK_TIMEOUT: Duration = Duration::from_millis(1000);

/// Readiness of the local apiserver, asked with the agent's own
/// kubeconfig (`https://127.0.0.1:PORT`, admin client certificate).
pub struct ApiServerHealth {
    kubeconfig: PathBuf,
    timeout: Duration,
    client: Option<kube::Client>,
}

impl ApiServerHealth {
    /// `timeout`: how long one check may take. It gets what each etcd call
    /// of the VIP holder's renewal round gets (half the hold time), and at
    /// least [`MIN_CHECK_TIMEOUT`]; it runs beside those rounds.
    pub fn new(kubeconfig: PathBuf, timeout: Duration) -> ApiServerHealth {
        ApiServerHealth {
            kubeconfig,
            timeout: timeout.max(MIN_CHECK_TIMEOUT),
            client: None,
        }
    }

    async fn check(&mut self) -> bool {
        if self.client.is_none() {
            // Until the Kubernetes phase has written it, nothing serves.
            self.client = super::client::from_kubeconfig(&self.kubeconfig, self.timeout)
                .await
                .ok();
        }
        match &self.client {
            Some(c) => super::client::ready(c, self.timeout).await,
            None => false,
        }
    }
}

impl HealthCheck for ApiServerHealth {
    fn healthy(&mut self) -> impl Future<Output = bool> + Send {
        self.check()
    }
}
