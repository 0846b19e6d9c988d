//! Picks the discovery source from the config and lists the group's peers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use url::Url;

use super::error::DiscoveryError;
use super::{Peer, aws_asg, static_list};
use crate::cloud::aws::{AwsClient, AwsOptions, Credentials, parse_imds_role_credentials};
use crate::config::{CloudProvider, DiscoveryMethod, DnsRecord};
use crate::metadata::{self, InstanceFacts, ProviderKind};

/// Environment variable pointing the AWS client at another endpoint (moto in
/// tests, a VPC endpoint proxy in production).
pub const AWS_ENDPOINT_ENV: &str = "MUSTER_AWS_ENDPOINT";

/// How often instance-role credentials are fetched again. AWS rotates them
/// at least five minutes before they expire, and they last hours.
const ROLE_REFRESH: Duration = Duration::from_secs(15 * 60);

/// A configured source of peers.
pub enum PeerSource {
    Static(Vec<String>),
    /// DNS A records of a name (resolved through the system resolver).
    DnsA(String),
    AwsGroup {
        client: Box<AwsClient>,
        group: String,
        /// Where to refresh instance-role credentials; `None` when the
        /// credentials came from the environment.
        role: Option<Box<RoleCredentials>>,
    },
}

/// Instance-role credentials from IMDS and when they were last fetched.
pub struct RoleCredentials {
    imds: metadata::Options,
    fetched: Mutex<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("discovery: {0}")]
    Resolve(#[from] static_list::ResolveError),
    #[error(
        "discovery: {what} is not built yet; use `discovery.static`, DNS A records or an AWS group"
    )]
    NotBuilt { what: &'static str },
    #[error("discovery: {0}")]
    Setup(String),
}

/// The instance role's credentials, via IMDS (never logged).
async fn imds_credentials(imds: &metadata::Options) -> Result<Credentials, SourceError> {
    let json = metadata::aws::role_credentials(imds)
        .await
        .map_err(|e| SourceError::Setup(format!("AWS credentials: {e}")))?
        .ok_or_else(|| {
            SourceError::Setup(
                "AWS credentials: none in the environment and the instance has no IAM role".into(),
            )
        })?;
    parse_imds_role_credentials(&json).map_err(|e| SourceError::Setup(e.to_string()))
}

impl PeerSource {
    /// Builds the source the config names, with the instance's facts filling
    /// the defaults (its own group, its region).
    pub async fn from_config(
        method: DiscoveryMethod<'_>,
        facts: &InstanceFacts,
        imds: &metadata::Options,
    ) -> Result<PeerSource, SourceError> {
        match method {
            DiscoveryMethod::Static(s) => Ok(PeerSource::Static(s.peers.clone())),
            DiscoveryMethod::Dns(d) => match d.record {
                DnsRecord::A => Ok(PeerSource::DnsA(d.name.clone())),
                DnsRecord::Srv => Err(SourceError::NotBuilt {
                    what: "SRV record discovery",
                }),
            },
            DiscoveryMethod::CloudGroup(g) => {
                let provider = g.provider.unwrap_or(match facts.provider {
                    ProviderKind::Gce => CloudProvider::Gce,
                    _ => CloudProvider::Aws,
                });
                if provider == CloudProvider::Gce {
                    return Err(SourceError::NotBuilt {
                        what: "GCE managed instance group discovery in the agent loop",
                    });
                }
                let group = g.name.clone().or_else(|| facts.group.clone()).ok_or_else(|| {
                    SourceError::Setup("no autoscaling group: set discovery.cloudGroup.name or tag the instance".into())
                })?;
                let region = facts.region.clone().ok_or_else(|| {
                    SourceError::Setup("the instance metadata has no region for the AWS API".into())
                })?;
                let mut opts = AwsOptions::new(region);
                if let Ok(endpoint) = std::env::var(AWS_ENDPOINT_ENV) {
                    let url = Url::parse(&endpoint)
                        .map_err(|e| SourceError::Setup(format!("{AWS_ENDPOINT_ENV}: {e}")))?;
                    opts.endpoint = Some(url);
                }
                // Credentials from the environment win (tests, unusual
                // setups); an instance normally uses its IAM role.
                let (credentials, role) = match Credentials::from_env() {
                    Ok(c) => (c, None),
                    Err(_) => {
                        let role = RoleCredentials {
                            imds: imds.clone(),
                            fetched: Mutex::new(Instant::now()),
                        };
                        (imds_credentials(imds).await?, Some(Box::new(role)))
                    }
                };
                let client = AwsClient::new(opts, credentials)
                    .map_err(|e| SourceError::Setup(e.to_string()))?;
                Ok(PeerSource::AwsGroup {
                    client: Box::new(client),
                    group,
                    role,
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
            PeerSource::DnsA(_) => Duration::from_secs(5),
            // AWS documents Describe* calls as eventually consistent, within
            // seconds; 10 s leaves a margin at little cost to a boot.
            PeerSource::AwsGroup { .. } => Duration::from_secs(10),
        }
    }

    /// Lists the peers now.
    pub async fn list(&self) -> Result<Vec<Peer>, SourceError> {
        match self {
            PeerSource::Static(entries) => Ok(static_list::resolve(entries).await?),
            PeerSource::DnsA(name) => Ok(static_list::resolve_all(name).await?),
            PeerSource::AwsGroup {
                client,
                group,
                role,
            } => {
                if let Some(role) = role {
                    let due = role
                        .fetched
                        .lock()
                        .map(|t| t.elapsed() >= ROLE_REFRESH)
                        .unwrap_or(true);
                    if due {
                        client.set_credentials(imds_credentials(&role.imds).await?);
                        if let Ok(mut fetched) = role.fetched.lock() {
                            *fetched = Instant::now();
                        }
                    }
                }
                Ok(aws_asg::list_group(client, group).await?.peers)
            }
        }
    }
}
