//! The DNS phase's loop: register this node, elect the publisher, and on
//! the publisher reconcile the zone once per `dns.interval` (sooner after a
//! transient failure, with capped backoff). DNS is off the critical path:
//! a failure here is reported in status and retried, the boot goes on.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use super::coordination::{self, Coordinator, NodeEntry};
use super::handover::{self, HandOver};
use super::plan::{self, Ownership, Scope};
use super::records::{self, Names};
use super::{DnsError, Fault, Provider, reconcile};
use crate::config::Config;
use crate::discovery::Peer;
use crate::retry::Backoff;
use crate::roles::Role;
use crate::state::{DnsStatus, StatusBoard};
use crate::vip::lease::{EtcdAccess, LeaseError};

/// How long a clean shutdown may spend removing this node's record.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

pub struct DnsInputs {
    pub provider: super::ProviderContext,
    pub hostname: String,
    pub ip: IpAddr,
    /// The agent's kubeconfig on a control-plane node when Kubernetes runs:
    /// where the hand-over to ExternalDNS is written.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// TLS material for etcd; its endpoints follow the group.
    pub etcd: EtcdAccess,
    pub roles: watch::Receiver<Option<Role>>,
    pub views: watch::Receiver<Vec<Peer>>,
    pub board: StatusBoard,
}

/// Starts the phase when `dns.provider` is set; the handle finishes after
/// `shutdown`, once this node's own record is removed.
pub fn start(
    config: &Config,
    inputs: DnsInputs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let names = Names::from_config(&config.dns, &config.cluster.name)?;
    let phase = Phase {
        names,
        dns: config.dns.clone(),
        provider: None,
        vip: config.api_endpoint.vip.map(IpAddr::V4),
        interval: config.dns.interval.0,
        inputs,
        coordinator: None,
        status: DnsStatus {
            provider: config.dns.provider.as_str().into(),
            state: "starting".into(),
            ..DnsStatus::default()
        },
    };
    Some(tokio::spawn(
        phase.run(shutdown).instrument(info_span!("dns")),
    ))
}

struct Phase {
    names: Names,
    dns: crate::config::Dns,
    /// Made on the first tick that needs it (Route 53 fetches credentials).
    provider: Option<Provider>,
    vip: Option<IpAddr>,
    interval: Duration,
    inputs: DnsInputs,
    coordinator: Option<Coordinator>,
    status: DnsStatus,
}

#[derive(Debug, thiserror::Error)]
enum TickError {
    #[error("etcd: {0}")]
    Etcd(#[from] LeaseError),
    #[error(transparent)]
    Dns(#[from] DnsError),
}

fn handover_text(h: &HandOver) -> &'static str {
    match h {
        HandOver::Described => "described as DNSEndpoints; no ExternalDNS has observed them yet",
        HandOver::Adopted => "adopted by ExternalDNS",
    }
}

/// The wait before the next tick after `failures` failures in a row.
fn next_wait(interval: Duration, failures: u32, last: Option<&TickError>) -> Duration {
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        max_delay: interval,
        total: Duration::MAX,
    };
    match last {
        None => interval,
        // A config problem (bad key, no rights) does not fix itself quickly.
        Some(TickError::Dns(DnsError {
            fault: Fault::Config { .. },
            ..
        })) => interval,
        Some(TickError::Dns(DnsError {
            fault: Fault::RateLimited { after },
            ..
        })) => backoff
            .delay(failures.saturating_sub(1))
            .max(after.unwrap_or_default()),
        Some(_) => backoff.delay(failures.saturating_sub(1)),
    }
}

impl Phase {
    async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failures = 0;
        loop {
            let result = self.tick().await;
            if let Err(e) = &result {
                failures += 1;
                warn!("dns: {e}");
                self.status.state = "failing".into();
                self.status.message = Some(e.to_string());
                if matches!(e, TickError::Etcd(_)) {
                    self.coordinator = None;
                }
            } else {
                failures = 0;
            }
            self.report();
            let wait = next_wait(self.interval, failures, result.as_ref().err());
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if tokio::time::timeout(SHUTDOWN_BUDGET, self.leave())
            .await
            .is_err()
        {
            warn!("dns: could not remove this node's record within {SHUTDOWN_BUDGET:?}");
        }
    }

    fn report(&self) {
        if let Err(e) = self
            .inputs
            .board
            .update(|s| s.dns = Some(self.status.clone()))
        {
            warn!("cannot write status: {e}");
        }
    }

    fn group(&self) -> BTreeSet<IpAddr> {
        crate::discovery::live_addresses(&self.inputs.views.borrow())
    }

    async fn coordinator(
        &mut self,
        group: &BTreeSet<IpAddr>,
    ) -> Result<&mut Coordinator, LeaseError> {
        if self.coordinator.is_none() {
            // The local member first, then the rest of the group.
            let mut endpoints = vec![crate::etcd::client::client_url(self.inputs.ip)];
            endpoints.extend(
                group
                    .iter()
                    .filter(|ip| **ip != self.inputs.ip)
                    .map(crate::etcd::client::client_url),
            );
            let mut access = self.inputs.etcd.clone();
            access.endpoints = endpoints;
            self.coordinator =
                Some(Coordinator::connect(&access, self.inputs.ip.to_string()).await?);
        }
        self.coordinator.as_mut().ok_or(LeaseError::NoEndpoints)
    }

    async fn tick(&mut self) -> Result<(), TickError> {
        let Some(role) = *self.inputs.roles.borrow() else {
            self.status.state = "starting".into();
            self.status.message = Some("waiting for this node's role".into());
            return Ok(());
        };
        let group = self.group();
        if group.is_empty() {
            self.status.state = "starting".into();
            self.status.message = Some("waiting for the group's member list".into());
            return Ok(());
        }
        let entry = NodeEntry {
            ip: self.inputs.ip,
            control_plane: role == Role::ControlPlane,
        };
        let hostname = self.inputs.hostname.clone();
        let lease_ttl = (2 * self.interval.as_secs()).max(15) as i64;
        let coordinator = self.coordinator(&group).await?;
        coordinator.register(&hostname, &entry).await?;
        // Only control-plane nodes publish: they hold the agent's
        // kubeconfig for the hand-over, and there are few of them.
        let publisher = match role {
            Role::ControlPlane => coordinator.elect(lease_ttl).await?,
            _ => Some(String::new()),
        };
        if let Some(publisher) = publisher {
            self.status.state = "standby".into();
            self.status.message = None;
            self.status.publisher = Some(publisher).filter(|p| !p.is_empty());
            self.status.records.clear();
            self.status.conflicts.clear();
            self.status.handover = None;
            return Ok(());
        }
        let entries = coordinator.entries().await?;
        for gone in coordination::departed(&entries, &group) {
            info!(node = %gone, "dns: the node left the group; forgetting its name");
            coordinator.forget(&gone).await?;
        }
        let targets = coordination::api_targets(self.vip, &entries, &group);
        let nodes = coordination::named_nodes(&entries, &group);
        let (wanted, scope) = records::render(&self.names, &targets, &nodes);
        self.status.records = wanted.iter().map(|w| w.name.clone()).collect();
        self.status.publisher = Some(self.inputs.ip.to_string());
        if self.hand_over(&wanted).await == Some(HandOver::Adopted) {
            self.status.state = "handed over".into();
            self.status.message =
                Some("ExternalDNS owns the zone; the agent keeps the DNSEndpoints current".into());
            self.status.conflicts.clear();
            return Ok(());
        }
        if self.provider.is_none() {
            self.provider = Provider::connect(&self.dns, &self.inputs.provider).await?;
        }
        let Some(provider) = self.provider.as_ref() else {
            return Ok(());
        };
        let plan = reconcile(
            provider,
            &self.names.zone,
            &wanted,
            &self.names.owner,
            &scope,
        )
        .await?;
        self.status.state = "publishing".into();
        self.status.message = None;
        self.status.conflicts = plan.conflicts.iter().map(|c| c.to_string()).collect();
        self.status.writes += plan.changes.len() as u64;
        Ok(())
    }

    /// Describes `wanted` as DNSEndpoint objects once this node's API
    /// answers; `None` before that (or without Kubernetes). A failure is
    /// reported, not fatal: the agent keeps writing DNS itself.
    async fn hand_over(&mut self, wanted: &[super::plan::Wanted]) -> Option<HandOver> {
        let kubeconfig = self.inputs.kubeconfig.as_ref().filter(|k| k.exists())?;
        let mut known = vec![records::API_ENDPOINT_OBJECT];
        if self.names.nodes.is_some() {
            known.push(records::NODES_ENDPOINT_OBJECT);
        }
        match handover::describe(kubeconfig, wanted, &known).await {
            Ok(h) => {
                if self.status.handover.as_deref() != Some(handover_text(&h)) {
                    info!("dns: hand-over: {}", handover_text(&h));
                }
                self.status.handover = Some(handover_text(&h).into());
                Some(h)
            }
            Err(e) => {
                self.status.handover = Some(format!("failing: {e}"));
                None
            }
        }
    }

    /// Clean shutdown: unregister, stop publishing, and remove this node's
    /// own record now rather than at the next publisher's tick.
    async fn leave(&mut self) {
        if let Some(c) = self.coordinator.as_mut() {
            if let Err(e) = c.forget(&self.inputs.hostname).await {
                warn!("dns: cannot unregister: {e}");
            }
            c.resign().await;
        }
        let Some(own) = self.names.node_name(&self.inputs.hostname) else {
            return;
        };
        // A node that never published has no provider yet.
        if self.provider.is_none() {
            match Provider::connect(&self.dns, &self.inputs.provider).await {
                Ok(p) => self.provider = p,
                Err(e) => warn!("dns: cannot remove this node's record {own}: {e}"),
            }
        }
        let Some(provider) = self.provider.as_ref() else {
            return;
        };
        let scope = Scope {
            names: [own.clone()].into(),
            subdomains: Vec::new(),
        };
        let removed = async {
            let observed = provider.list(&self.names.zone).await?;
            let ownership = Ownership {
                owner: &self.names.owner,
                txt_ttl: provider.txt_ttl(),
            };
            let plan = plan::plan(&[], &observed, &ownership, &scope);
            provider.apply(&self.names.zone, &plan.changes).await?;
            Ok::<_, DnsError>(plan.changes.len())
        };
        match removed.await {
            Ok(n) => info!(name = %own, changes = n, "dns: removed this node's record"),
            Err(e) => warn!("dns: cannot remove this node's record {own}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_up_to_the_interval_and_config_errors_wait_it_out() {
        let i = Duration::from_secs(30);
        let transient = TickError::Dns(DnsError::transient("rfc2136", "timeout"));
        assert_eq!(next_wait(i, 0, None), i);
        assert_eq!(next_wait(i, 1, Some(&transient)), Duration::from_secs(1));
        assert_eq!(next_wait(i, 3, Some(&transient)), Duration::from_secs(4));
        assert_eq!(next_wait(i, 9, Some(&transient)), i);
        let bad = TickError::Dns(DnsError::config("rfc2136", "dns.zone", "no"));
        assert_eq!(next_wait(i, 1, Some(&bad)), i);
        let slow = TickError::Dns(DnsError::rate_limited(
            "route53",
            Some(Duration::from_secs(7)),
            "Throttling",
        ));
        assert_eq!(next_wait(i, 1, Some(&slow)), Duration::from_secs(7));
    }
}
