//! "May this node serve the API?" once Kubernetes runs: its own
//! kube-apiserver answers `/readyz` with `ok`. The VIP follows it, so a
//! node whose apiserver is down (or whose etcd member is, which readyz
//! includes) never holds the VIP.

use std::path::PathBuf;
use std::time::Duration;

use crate::vip::HealthCheck;

/// One readiness check may take this long; slower is unhealthy.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1000);

/// Readiness of the local apiserver, asked with the agent's own
/// kubeconfig (`https://127.0.0.1:PORT`, admin client certificate).
pub struct ApiServerHealth {
    kubeconfig: PathBuf,
    client: Option<kube::Client>,
}

impl ApiServerHealth {
    pub fn new(kubeconfig: PathBuf) -> ApiServerHealth {
        ApiServerHealth {
            kubeconfig,
            client: None,
        }
    }

    async fn check(&mut self) -> bool {
        if self.client.is_none() {
            // Until the Kubernetes phase has written it, nothing serves.
            self.client = super::client::from_kubeconfig(&self.kubeconfig, CHECK_TIMEOUT)
                .await
                .ok();
        }
        match &self.client {
            Some(c) => super::client::ready(c, CHECK_TIMEOUT).await,
            None => false,
        }
    }
}

impl HealthCheck for ApiServerHealth {
    fn healthy(&mut self) -> impl Future<Output = bool> + Send {
        self.check()
    }
}
