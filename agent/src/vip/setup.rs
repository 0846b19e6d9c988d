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
    /// This node's part in the election, as it changes.
    pub role: tokio::sync::watch::Receiver<super::VipRole>,
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
    /// True while the group terminates this machine on purpose: the VIP
    /// is handed on at once ([`VipManager::withdraw_when`]).
    pub leaving: tokio::sync::watch::Receiver<bool>,
}

/// How this node's mover is made, decided from the config alone; owned,
/// so that the mover is built on the VIP thread (its netlink and cloud
/// connections then run there too).
enum MoverSpec {
    Arp,
    Bgp(BgpSettings),
    Aws {
        region: String,
        instance_id: String,
        endpoint: Option<url::Url>,
        imds: metadata::Options,
    },
    Gce(crate::cloud::gce::GceOptions),
}

impl MoverSpec {
    /// The mover for `mode`; `None` when there is nothing to run. Pure.
    fn plan(
        mode: VipMode,
        config: &Config,
        facts: &InstanceFacts,
        ip: Ipv4Addr,
        imds: &metadata::Options,
    ) -> Result<Option<MoverSpec>, VipError> {
        let endpoint = &config.api_endpoint;
        Ok(Some(match mode {
            VipMode::Arp => MoverSpec::Arp,
            VipMode::Bgp => {
                let Some(bgp) = &endpoint.bgp else {
                    return Ok(None); // refused by validation
                };
                MoverSpec::Bgp(BgpSettings {
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
                })
            }
            VipMode::Aws => MoverSpec::Aws {
                region: facts.region.clone().ok_or(VipError::NoRegion)?,
                instance_id: facts.instance_id.clone(),
                endpoint: config.cloud.endpoint_url(),
                imds: imds.clone(),
            },
            VipMode::Gce => MoverSpec::Gce(gce_options(config, imds)),
            VipMode::None => return Ok(None),
        }))
    }

    /// Opens the mover's sockets and clients, on the calling thread.
    async fn build(
        self,
        vip: Ipv4Addr,
        interface: Option<&str>,
        ip: Ipv4Addr,
    ) -> Result<AnyMover, VipError> {
        Ok(match self {
            MoverSpec::Arp => AnyMover::Arp(ArpMover::new(vip, interface, ip).await?),
            MoverSpec::Bgp(settings) => {
                AnyMover::Bgp(BgpMover::new(vip, &settings, interface).await?)
            }
            MoverSpec::Aws {
                region,
                instance_id,
                endpoint,
                imds,
            } => {
                let aws = InstanceSession::new(&region, endpoint.as_ref(), &imds, CLOUD_BACKOFF)
                    .await
                    .map_err(|e| VipError::from(MoverError::Aws(Box::new(e))))?;
                let mover =
                    AwsMover::new(vip, instance_id, std::sync::Arc::new(aws), interface, ip)
                        .await?;
                AnyMover::Aws(mover)
            }
            MoverSpec::Gce(opts) => {
                let client = crate::cloud::gce::GceClient::new(opts)
                    .map_err(|e| MoverError::Gce(Box::new(e)))?;
                AnyMover::Gce(GceMover::new(vip, std::sync::Arc::new(client), interface, ip).await?)
            }
        })
    }
}

/// Starts the VIP manager when the config has a VIP and a mode (`arp`,
/// `bgp`, `aws`, `gce`). It campaigns only while `health` says this node
/// may serve the API, so it runs on every node: a worker never becomes a
/// candidate. The manager runs on its own thread at a real-time priority
/// where the node allows it (`realtime.rs`), so a starved node's other
/// work cannot make the holder drop the address late (S4).
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
        leaving,
    } = inputs;
    let endpoint = &config.api_endpoint;
    let mode = endpoint.resolved_mode(VipMode::for_platform(facts.provider.as_str()));
    let Some(vip) = endpoint.vip else {
        return Ok(None);
    };
    let Some(spec) = MoverSpec::plan(mode, config, facts, ip, imds)? else {
        return Ok(None);
    };
    let interface = endpoint.interface.clone();
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
    let board = board.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<
        Result<tokio::sync::watch::Receiver<super::VipRole>, VipError>,
    >();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), VipError>>();
    let thread = std::thread::Builder::new()
        .name("muster-vip".into())
        .spawn(move || {
            let priority = match super::realtime::raise_this_thread(super::realtime::PRIORITY) {
                Ok(()) => "real-time".to_string(),
                Err(e) => format!("normal ({e})"),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(VipError::Thread(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let built = async {
                    let mover = spec.build(vip, interface.as_deref(), ip).await?;
                    VipManager::new(vip_config, mover, health).map(|m| m.withdraw_when(leaving))
                }
                .await;
                let manager = match built {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                info!(%vip, mode = mode.as_str(), ?timing, %priority, "api endpoint: VIP manager started");
                tokio::spawn(report(
                    board,
                    vip,
                    mode,
                    priority,
                    manager.role(),
                    manager.renewals(),
                ));
                let _ = ready_tx.send(Ok(manager.role()));
                let ended = manager
                    .run(shutdown)
                    .instrument(info_span!("api-endpoint"))
                    .await;
                let _ = done_tx.send(ended);
            });
        })
        .map_err(VipError::Thread)?;
    let role = match ready_rx.await {
        Ok(Ok(role)) => role,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let _ = thread.join();
            return Err(VipError::Thread(std::io::Error::other(
                "the VIP thread ended before its manager started",
            )));
        }
    };
    Ok(Some(VipTask {
        handle: tokio::spawn(async move {
            done_rx.await.unwrap_or_else(|_| {
                Err(VipError::Thread(std::io::Error::other(
                    "the VIP thread ended without a result",
                )))
            })
        }),
        vip,
        mode,
        role,
    }))
}

/// Where the GCE mover's client goes: the metadata server at the agent's
/// metadata endpoint (token, project, instance), the Compute API at
/// `cloud.endpoint` when set.
fn gce_options(config: &Config, imds: &metadata::Options) -> crate::cloud::gce::GceOptions {
    crate::cloud::gce::GceOptions::with_endpoints(
        imds.endpoint.as_ref(),
        config.cloud.endpoint_url().as_ref(),
        CLOUD_BACKOFF,
    )
}

/// Cloud calls of the movers (AWS, GCE): a takeover is waiting on them, so
/// retry briefly and let the election hand the VIP on instead of waiting.
const CLOUD_BACKOFF: crate::retry::Backoff = crate::retry::Backoff {
    initial: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
    total: Duration::from_secs(5),
};

/// How often the renewal figures in the status are refreshed.
const RENEWALS_SHOWN_EVERY: Duration = Duration::from_secs(5);

/// Keeps the status's `vip` in step with this node's part in the election
/// (at once on a change, the renewal figures every few seconds), until the
/// manager is gone.
async fn report(
    board: StatusBoard,
    address: Ipv4Addr,
    mode: VipMode,
    priority: String,
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
            priority: Some(priority.clone()),
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
