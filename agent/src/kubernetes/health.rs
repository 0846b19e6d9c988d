//! "May this node serve the API?" once Kubernetes runs: its own
//! kube-apiserver answers `/readyz` with `ok`. The VIP follows it, so a
//! node whose apiserver is down never holds the VIP.
//!
//! With stacked etcd the apiserver's own etcd checks are left out of that
//! request and the local etcd member is asked directly instead (does it
//! answer, does it know a leader). The apiserver's `etcd` check is a read
//! through the whole cluster with a fixed 2 s deadline: it fails on every
//! apiserver at once while etcd is merely slow (a member joining, a
//! snapshot, a loaded host), and moving the VIP then only adds a gap
//! (measured under TCG: five hand-ons in ten minutes while a replacement
//! control plane joined). What it would catch locally (this node's member
//! gone, or cut off from the leader) the direct check catches; whether the
//! node may hold the VIP at all stays proven by the claim's renewals on
//! etcd (S4).

use std::path::PathBuf;
use std::time::Duration;

use crate::vip::{EtcdMemberHealth, HealthCheck};

/// The shortest time one readiness check may take before it counts as
/// unhealthy.
pub const MIN_CHECK_TIMEOUT: Duration = Duration::from_millis(1000);

/// Readiness without the apiserver's two etcd checks (Kubernetes 1.28
/// names them `etcd` and `etcd-readiness`).
pub const READYZ_WITHOUT_ETCD: &str = "/readyz?exclude=etcd&exclude=etcd-readiness";

/// Readiness of the local apiserver, asked with the agent's own
/// kubeconfig (`https://127.0.0.1:PORT`, admin client certificate), and of
/// the local etcd member where it is stacked.
pub struct ApiServerHealth {
    kubeconfig: PathBuf,
    timeout: Duration,
    client: Option<kube::Client>,
    /// Boxed: an etcd client is large, and the check lives in the VIP task.
    local_etcd: Option<Box<EtcdMemberHealth>>,
}

impl ApiServerHealth {
    /// `timeout`: how long one check may take. It gets what each etcd call
    /// of the VIP holder's renewal round gets (half the hold time), and at
    /// least [`MIN_CHECK_TIMEOUT`]; it runs beside those rounds.
    /// `local_etcd`: the stacked member's check, or `None` when etcd runs
    /// on its own machines (then `/readyz` keeps its etcd checks).
    pub fn new(
        kubeconfig: PathBuf,
        timeout: Duration,
        local_etcd: Option<EtcdMemberHealth>,
    ) -> ApiServerHealth {
        let timeout = timeout.max(MIN_CHECK_TIMEOUT);
        ApiServerHealth {
            kubeconfig,
            timeout,
            client: None,
            local_etcd: local_etcd.map(|e| Box::new(e.with_timeout(timeout))),
        }
    }

    async fn check(&mut self) -> bool {
        let path = readyz_path(self.local_etcd.is_some());
        if self.client.is_none() {
            // Until the Kubernetes phase has written it, nothing serves.
            self.client = super::client::from_kubeconfig(&self.kubeconfig, self.timeout)
                .await
                .ok();
        }
        let Some(client) = &self.client else {
            return false;
        };
        let api = super::client::ready_at(client, path, self.timeout);
        match &mut self.local_etcd {
            Some(etcd) => {
                let (api, etcd) = tokio::join!(api, etcd.healthy());
                api && etcd
            }
            None => api.await,
        }
    }
}

/// `/readyz`, without its etcd checks when the local member is checked
/// directly.
pub fn readyz_path(etcd_checked_directly: bool) -> &'static str {
    if etcd_checked_directly {
        READYZ_WITHOUT_ETCD
    } else {
        "/readyz"
    }
}

impl HealthCheck for ApiServerHealth {
    fn healthy(&mut self) -> impl Future<Output = bool> + Send {
        self.check()
    }
}
