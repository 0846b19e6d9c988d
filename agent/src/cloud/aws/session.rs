//! The AWS client of this instance: its region, an optional endpoint
//! override, and credentials from the environment or the instance role
//! (fetched from IMDS and refreshed). Discovery and the VIP mover each hold
//! one; this is the one place that knows how to make it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use url::Url;

use super::{AwsClient, AwsError, AwsOptions, Credentials, parse_imds_role_credentials};
use crate::metadata;
use crate::retry::Backoff;

/// Environment variable pointing the AWS client at another endpoint (moto in
/// tests). It wins over the config's `cloud.endpoint`, so a test harness can
/// redirect an agent whatever its config says.
pub const AWS_ENDPOINT_ENV: &str = "MUSTER_AWS_ENDPOINT";

/// How often instance-role credentials are fetched again. AWS rotates them
/// at least five minutes before they expire, and they last hours.
const ROLE_REFRESH: Duration = Duration::from_secs(15 * 60);

/// An AWS client plus what it needs to keep its credentials fresh.
pub struct InstanceSession {
    client: AwsClient,
    /// Where to refresh instance-role credentials; `None` when they came
    /// from the environment.
    role: Option<RoleCredentials>,
}

struct RoleCredentials {
    imds: metadata::Options,
    fetched: Mutex<Instant>,
}

impl InstanceSession {
    /// A client for `region` with `backoff`. The endpoint is
    /// `MUSTER_AWS_ENDPOINT` when set, else `configured` (the config's
    /// `cloud.endpoint`), else AWS's own. Credentials from the environment
    /// win (tests, unusual setups); an instance normally uses its IAM role.
    pub async fn new(
        region: &str,
        configured: Option<&Url>,
        imds: &metadata::Options,
        backoff: Backoff,
    ) -> Result<InstanceSession, AwsError> {
        let mut opts = AwsOptions::new(region);
        opts.backoff = backoff;
        opts.endpoint = resolve_endpoint(std::env::var(AWS_ENDPOINT_ENV).ok(), configured)?;
        if let Some(url) = &opts.endpoint {
            tracing::info!(endpoint = %url, "AWS API calls go to an endpoint override");
        }
        let (credentials, role) = match Credentials::from_env() {
            Ok(c) => (c, None),
            Err(_) => {
                let role = RoleCredentials {
                    imds: imds.clone(),
                    fetched: Mutex::new(Instant::now()),
                };
                (imds_credentials(imds).await?, Some(role))
            }
        };
        Ok(InstanceSession {
            client: AwsClient::new(opts, credentials)?,
            role,
        })
    }

    /// A session around a ready client whose credentials never need a
    /// refresh (static keys: tests, unusual setups).
    pub fn with_client(client: AwsClient) -> InstanceSession {
        InstanceSession { client, role: None }
    }

    /// The client, with credentials refreshed first when they are due.
    pub async fn client(&self) -> Result<&AwsClient, AwsError> {
        if let Some(role) = &self.role {
            let due = role
                .fetched
                .lock()
                .map(|t| t.elapsed() >= ROLE_REFRESH)
                .unwrap_or(true);
            if due {
                self.client
                    .set_credentials(imds_credentials(&role.imds).await?);
                if let Ok(mut fetched) = role.fetched.lock() {
                    *fetched = Instant::now();
                }
            }
        }
        Ok(&self.client)
    }
}

/// The endpoint in force: the environment variable's value (`env`) when
/// set, else the configured one, else none (AWS's regional endpoints).
pub fn resolve_endpoint(
    env: Option<String>,
    configured: Option<&Url>,
) -> Result<Option<Url>, AwsError> {
    match env {
        None => Ok(configured.cloned()),
        Some(text) => Url::parse(&text).map(Some).map_err(|e| AwsError::Config {
            what: format!("{AWS_ENDPOINT_ENV}={text}: {e}"),
        }),
    }
}

/// The instance role's credentials, via IMDS (never logged).
async fn imds_credentials(imds: &metadata::Options) -> Result<Credentials, AwsError> {
    let json = metadata::aws::role_credentials(imds)
        .await
        .map_err(|e| AwsError::Credentials {
            what: format!("from the instance role: {e}"),
        })?
        .ok_or_else(|| AwsError::Credentials {
            what: "none in the environment and the instance has no IAM role".into(),
        })?;
    parse_imds_role_credentials(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_config() {
        let configured = Url::parse("http://10.77.0.1:5000/").expect("url");
        let env = Some("http://127.0.0.1:5000".to_string());
        assert_eq!(
            resolve_endpoint(env, Some(&configured))
                .expect("ok")
                .map(String::from),
            Some("http://127.0.0.1:5000/".to_string())
        );
        assert_eq!(
            resolve_endpoint(None, Some(&configured)).expect("ok"),
            Some(configured)
        );
        assert_eq!(resolve_endpoint(None, None).expect("ok"), None);
        let err = resolve_endpoint(Some("not a url".into()), None).expect_err("bad env");
        assert!(err.to_string().contains(AWS_ENDPOINT_ENV), "{err}");
    }
}
