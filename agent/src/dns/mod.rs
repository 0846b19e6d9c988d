//! Boot phase 10: publish the API and node names in the cluster's zone,
//! in ExternalDNS's ownership format, so that an ExternalDNS started later
//! with the same owner id adopts them (docs/design/dns.md).
//!
//! - `records`: which names the cluster wants (pure render);
//! - `plan`: what to change given what the zone holds (pure);
//! - `registry`: ExternalDNS's TXT names and values (pure);
//! - one module per provider: list the zone, apply a plan;
//! - `phase`: the loop that runs it on the elected publisher.

pub mod cloudflare;
pub mod coordination;
pub mod error;
pub mod google;
pub mod handover;
pub mod phase;
pub mod plan;
pub mod records;
pub mod registry;
pub mod rfc2136;
pub mod route53;

use tracing::info;

use crate::config::{Dns, DnsProvider};
pub use error::{DnsError, Fault};
use plan::{Change, DnsPlan, Ownership, RecordSet, Scope, Wanted};

/// What a provider may need from the machine: the AWS region and the
/// metadata service (instance-role credentials), the API endpoint override.
#[derive(Debug, Clone, Default)]
pub struct ProviderContext {
    pub region: Option<String>,
    pub imds: crate::metadata::Options,
    pub cloud_endpoint: Option<url::Url>,
    /// The GCE metadata server's root when not the default (tests).
    pub gce_metadata: Option<url::Url>,
}

/// A configured DNS provider. An enum, not a trait object: the set is
/// closed and each arm's futures stay `Send` without boxing.
pub enum Provider {
    Rfc2136(rfc2136::Rfc2136Provider),
    Route53(route53::Route53Provider),
    Cloudflare(cloudflare::CloudflareProvider),
    Google(google::GoogleProvider),
}

impl Provider {
    /// `Ok(None)` when `dns.provider` is `none`. Async: Route 53 fetches
    /// the instance role's credentials first.
    pub async fn connect(dns: &Dns, ctx: &ProviderContext) -> Result<Option<Provider>, DnsError> {
        Ok(match dns.provider {
            DnsProvider::None => None,
            DnsProvider::Rfc2136 => {
                let cfg = dns.rfc2136.as_ref().ok_or_else(|| {
                    DnsError::config(
                        "rfc2136",
                        "dns.rfc2136",
                        "provider `rfc2136` needs `dns.rfc2136`",
                    )
                })?;
                Some(Provider::Rfc2136(rfc2136::Rfc2136Provider::new(cfg)?))
            }
            DnsProvider::Route53 => {
                let region = ctx.region.as_deref().unwrap_or("us-east-1");
                let session = crate::cloud::aws::InstanceSession::new(
                    region,
                    ctx.cloud_endpoint.as_ref(),
                    &ctx.imds,
                    crate::cloud::aws::API_BACKOFF,
                )
                .await
                .map_err(|e| DnsError::transient("route53", format!("credentials: {e}")))?;
                let zone_id = dns.route53.as_ref().and_then(|r| r.hosted_zone_id.clone());
                Some(Provider::Route53(route53::Route53Provider::new(
                    session, zone_id,
                )))
            }
            DnsProvider::Cloudflare => {
                let cfg = dns.cloudflare.as_ref().ok_or_else(|| {
                    DnsError::config(
                        "cloudflare",
                        "dns.cloudflare",
                        "provider `cloudflare` needs `dns.cloudflare`",
                    )
                })?;
                let token = match (&cfg.api_token, &cfg.api_token_file) {
                    (Some(t), _) => t.expose().to_string(),
                    (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
                        DnsError::config(
                            "cloudflare",
                            "dns.cloudflare.apiTokenFile",
                            format!("{file}: {e}"),
                        )
                    })?,
                    (None, None) => {
                        return Err(DnsError::config(
                            "cloudflare",
                            "dns.cloudflare",
                            "needs `apiToken` or `apiTokenFile`",
                        ));
                    }
                };
                let base = std::env::var(cloudflare::ENDPOINT_ENV)
                    .unwrap_or_else(|_| cloudflare::DEFAULT_API.into());
                let base = url::Url::parse(&base).map_err(|e| {
                    DnsError::config("cloudflare", "dns.cloudflare", format!("{base}: {e}"))
                })?;
                Some(Provider::Cloudflare(cloudflare::CloudflareProvider::new(
                    token, base,
                )?))
            }
            DnsProvider::Google => {
                let cfg = dns.google.clone().unwrap_or_default();
                let opts = crate::cloud::gce::GceOptions::with_endpoints(
                    ctx.gce_metadata.as_ref(),
                    None,
                    crate::cloud::aws::API_BACKOFF,
                );
                let client = crate::cloud::gce::GceClient::new(opts)
                    .map_err(|e| DnsError::config("google", "dns.google", e.to_string()))?;
                let api = std::env::var(google::ENDPOINT_ENV)
                    .unwrap_or_else(|_| google::DEFAULT_API.into());
                let api = url::Url::parse(&api)
                    .map_err(|e| DnsError::config("google", "dns.google", format!("{api}: {e}")))?;
                Some(Provider::Google(google::GoogleProvider::new(
                    client,
                    api,
                    cfg.project,
                    cfg.managed_zone,
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Provider::Rfc2136(_) => "rfc2136",
            Provider::Route53(_) => "route53",
            Provider::Cloudflare(_) => "cloudflare",
            Provider::Google(_) => "google",
        }
    }

    /// The TTL ExternalDNS writes (and deletes by) for ownership records.
    pub fn txt_ttl(&self) -> u32 {
        match self {
            // Cloudflare's "automatic", as ExternalDNS writes it.
            Provider::Cloudflare(_) => 1,
            _ => 300,
        }
    }

    pub async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, DnsError> {
        match self {
            Provider::Rfc2136(p) => p.list(zone).await,
            Provider::Route53(p) => p.list(zone).await,
            Provider::Cloudflare(p) => p.list(zone).await,
            Provider::Google(p) => p.list(zone).await,
        }
    }

    /// Applies `changes`; nothing is sent when there are none.
    pub async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), DnsError> {
        if changes.is_empty() {
            return Ok(());
        }
        match self {
            Provider::Rfc2136(p) => p.apply(zone, changes).await,
            Provider::Route53(p) => p.apply(zone, changes).await,
            Provider::Cloudflare(p) => p.apply(zone, changes).await,
            Provider::Google(p) => p.apply(zone, changes).await,
        }
    }
}

/// One reconcile: list the zone, plan, apply. Returns the plan that was
/// applied (its conflicts were left alone).
pub async fn reconcile(
    provider: &Provider,
    zone: &str,
    wanted: &[Wanted],
    owner: &str,
    scope: &Scope,
) -> Result<DnsPlan, DnsError> {
    let observed = provider.list(zone).await?;
    let own = Ownership {
        owner,
        txt_ttl: provider.txt_ttl(),
    };
    let plan = plan::plan(wanted, &observed, &own, scope);
    if !plan.changes.is_empty() {
        info!(
            provider = provider.name(),
            changes = ?plan.changes.iter().map(describe).collect::<Vec<_>>(),
            "dns: applying"
        );
        provider.apply(zone, &plan.changes).await?;
    }
    Ok(plan)
}

fn describe(c: &Change) -> String {
    match c {
        Change::Put { old: None, new } => format!("create {} {}", new.kind.as_str(), new.name),
        Change::Put { new, .. } => format!("update {} {}", new.kind.as_str(), new.name),
        Change::Delete(old) => format!("delete {} {}", old.kind.as_str(), old.name),
    }
}
