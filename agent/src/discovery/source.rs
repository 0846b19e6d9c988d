//! Picks the discovery source from the config and lists the group's peers.

use std::time::Duration;

use url::Url;

use super::error::DiscoveryError;
use super::{Peer, aws_asg, static_list};
use crate::cloud::aws::{API_BACKOFF, InstanceSession, autoscaling};
use crate::config::{CloudProvider, DiscoveryMethod, DnsRecord};
use crate::metadata::{self, InstanceFacts, ProviderKind};

/// A configured source of peers.
pub enum PeerSource {
    Static(Vec<String>),
    /// DNS A records of a name (resolved through the system resolver).
    DnsA(String),
    /// The targets of a DNS SRV record set.
    DnsSrv(Box<super::dns_srv::SrvSource>),
    AwsGroup {
        session: Box<InstanceSession>,
        group: String,
        /// EC2 details of settled members, for workers' listings.
        known: std::sync::Mutex<aws_asg::KnownInstances>,
    },
    /// A GCE managed instance group, through the Compute API with the
    /// instance's service-account token.
    GceGroup {
        client: Box<crate::cloud::gce::GceClient>,
        mig: crate::cloud::gce::compute::MigRef,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("discovery: {0}")]
    Resolve(#[from] static_list::ResolveError),
    #[error("discovery: {0}")]
    Srv(#[from] super::dns_srv::SrvError),
    #[error("discovery: {0}")]
    Setup(String),
}

impl PeerSource {
    /// Builds the source the config names, with the instance's facts filling
    /// the defaults (its own group, its region). `api_endpoint` is the
    /// config's `cloud.endpoint`.
    pub async fn from_config(
        method: DiscoveryMethod<'_>,
        api_endpoint: Option<&Url>,
        facts: &InstanceFacts,
        imds: &metadata::Options,
    ) -> Result<PeerSource, SourceError> {
        match method {
            DiscoveryMethod::Static(s) => Ok(PeerSource::Static(s.peers.clone())),
            DiscoveryMethod::Dns(d) => match d.record {
                DnsRecord::A => Ok(PeerSource::DnsA(d.name.clone())),
                DnsRecord::Srv => Ok(PeerSource::DnsSrv(Box::new(
                    super::dns_srv::SrvSource::new(&d.name, d.nameserver.as_deref())?,
                ))),
            },
            DiscoveryMethod::CloudGroup(g) => {
                let provider = g.provider.unwrap_or(match facts.provider {
                    ProviderKind::Gce => CloudProvider::Gce,
                    _ => CloudProvider::Aws,
                });
                if provider == CloudProvider::Gce {
                    return gce_group(g.name.as_deref(), api_endpoint, imds).await;
                }
                let group = g.name.clone().or_else(|| facts.group.clone()).ok_or_else(|| {
                    SourceError::Setup("no autoscaling group: set discovery.cloudGroup.name or tag the instance".into())
                })?;
                let region = facts.region.clone().ok_or_else(|| {
                    SourceError::Setup("the instance metadata has no region for the AWS API".into())
                })?;
                let session = InstanceSession::new(&region, api_endpoint, imds, API_BACKOFF)
                    .await
                    .map_err(|e| SourceError::Setup(e.to_string()))?;
                Ok(PeerSource::AwsGroup {
                    session: Box::new(session),
                    group,
                    known: Default::default(),
                })
            }
        }
    }

    /// How long a view must stay unchanged (and the formation set's last
    /// launch be past) before this node may form a cluster: the bound on
    /// the source's staleness that the S1 argument assumes (bootstrap.md).
    pub fn settle_time(&self) -> Duration {
        match self {
            // The same list on every node: nothing to wait for.
            PeerSource::Static(_) => Duration::ZERO,
            PeerSource::DnsA(_) | PeerSource::DnsSrv(_) => Duration::from_secs(5),
            // AWS documents Describe* calls as eventually consistent, within
            // seconds; 10 s leaves a margin at little cost to a boot. The
            // Compute API's lists are read-after-write within a group's
            // operation, but a new instance may show before its address:
            // the same margin.
            PeerSource::AwsGroup { .. } | PeerSource::GceGroup { .. } => Duration::from_secs(10),
        }
    }

    /// Lets the group go on terminating this instance: completes the
    /// termination lifecycle actions that hold it (an AWS group with a
    /// `Terminating:Wait` hook). Returns how many hooks were completed; 0
    /// for sources without lifecycle hooks.
    pub async fn let_go(&self, instance_id: &str) -> Result<usize, SourceError> {
        let PeerSource::AwsGroup { session, group, .. } = self else {
            return Ok(0);
        };
        let client = session
            .client()
            .await
            .map_err(|e| SourceError::Setup(e.to_string()))?;
        let fail = |e: crate::cloud::aws::AwsError| SourceError::Setup(e.to_string());
        let hooks = autoscaling::termination_hooks(client, group)
            .await
            .map_err(fail)?;
        for hook in &hooks {
            autoscaling::complete_lifecycle_action(client, group, &hook.name, instance_id)
                .await
                .map_err(fail)?;
        }
        Ok(hooks.len())
    }

    /// Lists the peers now, every detail afresh.
    pub async fn list(&self) -> Result<Vec<Peer>, SourceError> {
        self.list_with(aws_asg::Freshness::Full).await
    }

    /// Lists the peers, asking an AWS group's EC2 again only for what
    /// `freshness` says (`Freshness::KnownAddresses`, a worker's: members
    /// not yet seen settled); other sources list as [`PeerSource::list`].
    pub async fn list_with(&self, freshness: aws_asg::Freshness) -> Result<Vec<Peer>, SourceError> {
        crate::calls::group_listed();
        match self {
            PeerSource::Static(entries) => Ok(static_list::resolve(entries).await?),
            PeerSource::DnsA(name) => Ok(static_list::resolve_all(name).await?),
            PeerSource::DnsSrv(source) => Ok(source.list().await?),
            PeerSource::AwsGroup {
                session,
                group,
                known,
            } => {
                let client = session
                    .client()
                    .await
                    .map_err(|e| SourceError::Setup(e.to_string()))?;
                // Taken out for the call (no lock held across an await),
                // put back after; a failed listing forgets nothing.
                let mut mine = known
                    .lock()
                    .map(|mut k| std::mem::take(&mut *k))
                    .unwrap_or_default();
                let listed = aws_asg::list_group_with(client, group, &mut mine, freshness).await;
                if let Ok(mut k) = known.lock() {
                    *k = mine;
                }
                Ok(listed?.peers)
            }
            PeerSource::GceGroup { client, mig } => {
                Ok(super::gce_mig::list_group(client, mig).await?.peers)
            }
        }
    }
}

/// The instance's own managed instance group (or the one `name`s, in the
/// same zone or region): project id and `created-by` from the metadata
/// server, the Compute API at `cloud.endpoint` when set.
async fn gce_group(
    name: Option<&str>,
    api_endpoint: Option<&Url>,
    imds: &metadata::Options,
) -> Result<PeerSource, SourceError> {
    use crate::cloud::gce::{GceClient, GceOptions};
    let opts = GceOptions::with_endpoints(imds.endpoint.as_ref(), api_endpoint, API_BACKOFF);
    let client = GceClient::new(opts).map_err(|e| SourceError::Setup(e.to_string()))?;
    let project = client
        .metadata_value("project/project-id")
        .await
        .map_err(|e| SourceError::Setup(format!("GCE project id: {e}")))?;
    let created_by = client
        .metadata_value("instance/attributes/created-by")
        .await
        .map_err(|e| {
            SourceError::Setup(format!(
                "this instance is in no managed instance group (created-by: {e})"
            ))
        })?;
    let mig =
        super::gce_mig::mig_from_created_by(&created_by, &project, name).ok_or_else(|| {
            SourceError::Setup(format!(
                "created-by `{created_by}` does not name a managed instance group"
            ))
        })?;
    tracing::info!(group = %mig, "discovery: GCE managed instance group");
    Ok(PeerSource::GceGroup {
        client: Box::new(client),
        mig,
    })
}
