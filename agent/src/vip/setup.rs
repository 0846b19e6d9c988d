//! Boot phase 7 as the agent runs it: the VIP manager built from the
//! cluster config (mover per mode, timers from `apiEndpoint.timing`), and
//! this node's part in the election kept in the status.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{Instrument, info, info_span};

use super::aws::AwsMover;
use super::bgp::{BgpMover, BgpPeer, BgpSettings};
use super::election::Timing;
use super::gce::GceMover;
use super::{
    AnyMover, ArpMover, EtcdAccess, HealthCheck, MoverError, RenewalLog, VipConfig, VipError,
    VipManager, VipRole,
};
use crate::cloud::aws::InstanceSession;
use crate::config::{Config, VipMode};
use crate::etcd::client::client_url;
use crate::metadata::{self, InstanceFacts};
use crate::pki::NodePki;
use crate::state::now_secs;
use crate::state::{StatusBoard, VipStatus};

/// A running VIP manager.
pub struct VipTask {
    pub handle: tokio::task::JoinHandle<Result<(), VipError>>,
    pub vip: Ipv4Addr,
    pub mode: VipMode,
}

/// What the manager needs from the rest of the agent.
pub struct VipInputs<'a> {
    pub config: &'a Config,
    pub facts: &'a InstanceFacts,
    /// This node's private address (the mover's source address).
    pub ip: Ipv4Addr,
    pub node_pki: &'a NodePki,
    /// etcd endpoints to try after the local member (the peers' client URLs).
    pub peer_endpoints: Vec<String>,
    pub imds: &'a metadata::Options,
    pub board: &'a StatusBoard,
}

/// Starts the VIP manager when the config has a VIP and a mode (`arp`,
/// `bgp`, `aws`, `gce`). It campaigns only while `health` says this node may serve the
/// API, so it runs on every node: a worker never becomes a candidate.
pub async fn start<H: HealthCheck + 'static>(
    inputs: VipInputs<'_>,
    health: H,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<VipTask>, VipError> {
    let VipInputs {
        config,
        facts,
        ip,
        node_pki,
        peer_endpoints,
        imds,
        board,
    } = inputs;
    let endpoint = &config.api_endpoint;
    let mode = endpoint.resolved_mode(VipMode::for_platform(facts.provider.as_str()));
    let Some(vip) = endpoint.vip else {
        return Ok(None);
    };
    let interface = endpoint.interface.as_deref();
    let mover = match mode {
        VipMode::Arp => AnyMover::Arp(ArpMover::new(vip, interface, ip).await?),
        VipMode::Bgp => {
            let Some(bgp) = &endpoint.bgp else {
                return Ok(None); // refused by validation
            };
            let settings = BgpSettings {
                local_asn: bgp.local_asn,
                router_id: ip,
                hold_time: bgp.hold_time.unwrap_or(super::bgp::DEFAULT_HOLD_TIME),
                peers: bgp
                    .peers
                    .iter()
                    .map(|p| BgpPeer {
                        address: p.address,
                        asn: p.asn,
                        port: super::bgp::BGP_PORT,
                    })
                    .collect(),
            };
            AnyMover::Bgp(BgpMover::new(vip, &settings, interface).await?)
        }
        VipMode::Aws => {
            let region = facts.region.as_deref().ok_or(VipError::NoRegion)?;
            let endpoint = config.cloud.endpoint_url();
            let aws = InstanceSession::new(region, endpoint.as_ref(), imds, AWS_BACKOFF)
                .await
                .map_err(|e| VipError::from(MoverError::Aws(Box::new(e))))?;
            let mover = AwsMover::new(
                vip,
                facts.instance_id.clone(),
                std::sync::Arc::new(aws),
                interface,
                ip,
            )
            .await?;
            AnyMover::Aws(mover)
        }
        VipMode::Gce => {
            let client = gce_client(config, imds).map_err(|e| MoverError::Gce(Box::new(e)))?;
            AnyMover::Gce(GceMover::new(vip, std::sync::Arc::new(client), interface, ip).await?)
        }
        VipMode::None => return Ok(None),
    };
    // The local member first: the manager tries endpoints in order.
    let mut endpoints = vec![client_url(ip)];
    endpoints.extend(peer_endpoints);
    let timing = Timing::from_settings(&endpoint.timing);
    let vip_config = VipConfig {
        vip,
        holder_id: facts.instance_id.clone(),
        etcd: EtcdAccess::mtls(endpoints, node_pki)?,
        timing,
        shed_etcd_leadership: endpoint.shed_etcd_leadership.unwrap_or(true),
    };
    let manager = VipManager::new(vip_config, mover, health)?;
    tokio::spawn(report(
        board.clone(),
        vip,
        mode,
        manager.role(),
        manager.renewals(),
    ));
    info!(%vip, mode = mode.as_str(), ?timing, "api endpoint: VIP manager started");
    Ok(Some(VipTask {
        handle: tokio::spawn(manager.run(shutdown).instrument(info_span!("api-endpoint"))),
        vip,
        mode,
    }))
}

/// Cloud calls of the movers (AWS, GCE): a takeover is waiting on them, so retry briefly
/// and let the election hand the VIP on instead of waiting long.
const AWS_BACKOFF: crate::retry::Backoff = crate::retry::Backoff {
    initial: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
    total: Duration::from_secs(5),
};

/// The Compute API client of the GCE mover: the metadata server at the
/// agent's metadata endpoint (token, project, instance), the API at
/// `cloud.endpoint` when set.
fn gce_client(
    config: &Config,
    imds: &metadata::Options,
) -> Result<crate::cloud::gce::GceClient, crate::cloud::gce::GceError> {
    use crate::cloud::gce::{GceClient, GceOptions};
    let mut opts = GceOptions {
        backoff: AWS_BACKOFF,
        ..GceOptions::default()
    };
    if let Some(base) = &imds.endpoint {
        opts.metadata_base = base.clone();
    }
    if let Some(api) = config.cloud.endpoint_url() {
        opts.api_base = api;
    }
    GceClient::new(opts)
}

/// How often the renewal figures in the status are refreshed.
const RENEWALS_SHOWN_EVERY: Duration = Duration::from_secs(5);

/// Keeps the status's `vip` in step with this node's part in the election
/// (at once on a change, the renewal figures every few seconds), until the
/// manager is gone.
async fn report(
    board: StatusBoard,
    address: Ipv4Addr,
    mode: VipMode,
    mut role: watch::Receiver<VipRole>,
    renewals: RenewalLog,
) {
    let mut current = *role.borrow_and_update();
    let mut since = now_secs();
    let mut takeovers = u32::from(current == VipRole::Holder);
    let mut refresh = tokio::time::interval(RENEWALS_SHOWN_EVERY);
    loop {
        let status = VipStatus {
            address,
            mode: mode.as_str().to_string(),
            role: current.as_str().to_string(),
            holder: current == VipRole::Holder,
            since,
            takeovers,
            renewals: renewals.summary(),
        };
        if let Err(e) = board.update(|s| s.vip = Some(status)) {
            tracing::warn!("cannot write status: {e}");
        }
        tokio::select! {
            changed = role.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *role.borrow_and_update();
                if now != current {
                    current = now;
                    since = now_secs();
                    takeovers += u32::from(now == VipRole::Holder);
                }
            }
            _ = refresh.tick() => {}
        }
    }
}
