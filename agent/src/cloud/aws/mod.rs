//! A light AWS client: SigV4 (via `aws-sigv4`) over reqwest, the Query API
//! (form-encoded `Action=…&Version=…`, XML answers), retries, typed errors.
//! Every AWS call Muster makes goes through [`AwsClient::query`]: discovery
//! (autoscaling, EC2), the VIP's secondary private IP (network interfaces);
//! and, through [`AwsClient::rest`], Route 53's REST API (DNS names). The full AWS SDK is deliberately not used (docs/machines.md: +18 min of
//! build and +8 GB of RAM for two read-only calls).
//!
//! Response parsing is pure (`parse_*` in each service module) and tested on
//! answers recorded from the AWS API reference and from moto.

pub mod autoscaling;
mod credentials;
pub mod ec2;
mod error;
pub mod network_interfaces;
mod query;
pub mod s3;
mod session;
pub(crate) mod xml;

use std::sync::RwLock;
use std::time::Duration;

use url::Url;

pub use credentials::{Credentials, parse_imds_role_credentials};
pub use error::{ApiError, AwsError};
pub use session::{AWS_ENDPOINT_ENV, InstanceSession, resolve_endpoint};
pub use xml::{ErrorBody, parse_error_response};

use crate::retry::Backoff;

/// One AWS service as the Query API sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The endpoint prefix: `https://{prefix}.{region}.amazonaws.com`.
    pub endpoint_prefix: &'static str,
    /// The SigV4 signing name (the same as the prefix for the services here).
    pub signing_name: &'static str,
    /// The API version every request names.
    pub api_version: &'static str,
    /// A global service (Route 53) has one endpoint and signs for one
    /// region, whatever the instance's.
    pub signing_region: Option<&'static str>,
    /// S3: the payload hash is signed into `x-amz-content-sha256` and
    /// object paths are signed as written.
    pub object_store: bool,
}

/// EC2 Auto Scaling.
pub const AUTOSCALING: Service = Service {
    endpoint_prefix: "autoscaling",
    signing_name: "autoscaling",
    api_version: "2011-01-01",
    signing_region: None,
    object_store: false,
};

/// EC2 (instances, network interfaces, addresses).
pub const EC2: Service = Service {
    endpoint_prefix: "ec2",
    signing_name: "ec2",
    api_version: "2016-11-15",
    signing_region: None,
    object_store: false,
};

/// Route 53: global, `https://route53.amazonaws.com/`, signed for us-east-1.
pub const ROUTE53: Service = Service {
    endpoint_prefix: "route53",
    signing_name: "route53",
    api_version: "2013-04-01",
    signing_region: Some("us-east-1"),
    object_store: false,
};

/// S3, for etcd backups: objects by path (see [`s3::object_url`]).
pub const S3: Service = Service {
    endpoint_prefix: "s3",
    signing_name: "s3",
    api_version: "2006-03-01",
    signing_region: None,
    object_store: true,
};

/// Retry policy for AWS API calls: AWS's throttling wants patience, the
/// boot wants an answer within a minute.
pub const API_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
    total: Duration::from_secs(60),
};

/// Where and how to reach AWS.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// The region, e.g. `eu-west-1` (from instance metadata).
    pub region: String,
    /// One base URL for every service (moto in tests, a private proxy);
    /// `None` means `https://{service}.{region}.amazonaws.com/`.
    pub endpoint: Option<Url>,
    pub backoff: Backoff,
    /// Timeout of a single HTTP attempt.
    pub request_timeout: Duration,
}

impl AwsOptions {
    pub fn new(region: impl Into<String>) -> Self {
        AwsOptions {
            region: region.into(),
            endpoint: None,
            backoff: API_BACKOFF,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The shared AWS client. Cheap to share by reference; credentials can be
/// swapped in place when instance-role credentials rotate.
pub struct AwsClient {
    http: reqwest::Client,
    opts: AwsOptions,
    credentials: RwLock<Credentials>,
}

impl std::fmt::Debug for AwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClient")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl AwsClient {
    pub fn new(opts: AwsOptions, credentials: Credentials) -> Result<Self, AwsError> {
        // The region becomes part of a host name: refuse anything else.
        let region_ok = !opts.region.is_empty()
            && opts
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(AwsError::Config {
                what: format!(
                    "{:?} is not an AWS region name (like eu-west-1)",
                    opts.region
                ),
            });
        }
        if let Some(url) = &opts.endpoint
            && (!matches!(url.scheme(), "http" | "https") || url.host_str().is_none())
        {
            return Err(AwsError::Config {
                what: format!("endpoint {url} is not an http(s) URL with a host"),
            });
        }
        let http = crate::cloud::http::client(opts.request_timeout, true).map_err(|cause| {
            AwsError::Config {
                what: format!("cannot build an HTTP client: {cause}"),
            }
        })?;
        Ok(AwsClient {
            http,
            opts,
            credentials: RwLock::new(credentials),
        })
    }

    pub fn region(&self) -> &str {
        &self.opts.region
    }

    /// Replaces the credentials (instance-role credentials rotate hourly).
    pub fn set_credentials(&self, credentials: Credentials) {
        // A poisoned lock only means a panic elsewhere; the value is still whole.
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = credentials;
    }

    pub(crate) fn credentials(&self) -> Credentials {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The URL requests for `service` go to.
    pub fn endpoint(&self, service: &Service) -> Url {
        if let Some(url) = &self.opts.endpoint {
            return url.clone();
        }
        // China regions live under their own domain.
        let domain = if self.opts.region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        let text = match service.signing_region {
            Some(_) => format!("https://{}.{domain}/", service.endpoint_prefix),
            None => format!(
                "https://{}.{}.{domain}/",
                service.endpoint_prefix, self.opts.region
            ),
        };
        // Cannot fail: the prefix is ours and the region was checked in `new`.
        Url::parse(&text).unwrap_or_else(|e| unreachable!("built-in endpoint {text}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(region: &str, endpoint: Option<&str>) -> Result<AwsClient, AwsError> {
        let mut opts = AwsOptions::new(region);
        opts.endpoint = endpoint.map(|e| Url::parse(e).expect("url"));
        AwsClient::new(opts, Credentials::new("AKID", "secret", None))
    }

    #[test]
    fn endpoints_per_service_and_region() {
        let c = client("eu-west-1", None).expect("client");
        assert_eq!(
            c.endpoint(&AUTOSCALING).as_str(),
            "https://autoscaling.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            c.endpoint(&EC2).as_str(),
            "https://ec2.eu-west-1.amazonaws.com/"
        );
        let c = client("cn-north-1", None).expect("client");
        assert_eq!(
            c.endpoint(&EC2).as_str(),
            "https://ec2.cn-north-1.amazonaws.com.cn/"
        );
        let c = client("us-east-1", Some("http://127.0.0.1:5000/")).expect("client");
        assert_eq!(c.endpoint(&AUTOSCALING).as_str(), "http://127.0.0.1:5000/");
    }

    #[test]
    fn bad_regions_and_endpoints_are_refused() {
        for region in ["", "EU-WEST-1", "eu-west-1.evil.com/", "us east"] {
            let e = client(region, None).expect_err(region).to_string();
            assert!(e.contains("not an AWS region"), "{e}");
        }
        assert!(client("us-east-1", Some("file:///etc/passwd")).is_err());
    }

    #[test]
    fn credentials_can_be_swapped_and_never_show() {
        let c = client("us-east-1", None).expect("client");
        c.set_credentials(Credentials::new("AKID2", "secret2", Some("tok".into())));
        assert_eq!(c.credentials().access_key_id(), "AKID2");
        assert!(!format!("{c:?}").contains("secret2"));
    }
}
