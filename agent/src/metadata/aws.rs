//! AWS EC2 instance metadata (IMDSv2).
//!
//! Fetching: PUT `latest/api/token` for a session token, then one GET per
//! documented path with the token header; a 401 means the token expired, so
//! we fetch a new one and retry that GET once. IMDSv1 (no token) is used only
//! when `Options::allow_imdsv1` is set, because IMDSv1 is open to SSRF.
//! Parsing: [`parse`] turns the collected answers into facts, purely.
//!
//! Docs: <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html>,
//! <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/work-with-tags-in-IMDS.html>.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::http::{self, HttpClient};
use super::value::{ipv4, non_empty};
use super::{InstanceFacts, MetadataError, Options, ProviderKind, local};

const P: ProviderKind = ProviderKind::Aws;

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254/";
pub const TOKEN_PATH: &str = "latest/api/token";
pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Six hours, the documented maximum; we only need minutes, and a 401 refreshes it anyway.
const TOKEN_TTL_SECONDS: &str = "21600";
/// The tag AWS Auto Scaling puts on every instance it launches.
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";

pub const INSTANCE_ID: &str = "latest/meta-data/instance-id";
pub const LOCAL_HOSTNAME: &str = "latest/meta-data/local-hostname";
pub const LOCAL_IPV4: &str = "latest/meta-data/local-ipv4";
pub const PUBLIC_IPV4: &str = "latest/meta-data/public-ipv4";
pub const REGION: &str = "latest/meta-data/placement/region";
pub const AVAILABILITY_ZONE: &str = "latest/meta-data/placement/availability-zone";
pub const IDENTITY_DOCUMENT: &str = "latest/dynamic/instance-identity/document";
pub const TAGS: &str = "latest/meta-data/tags/instance";
pub const USER_DATA: &str = "latest/user-data";
/// Lists the instance role's name; `<that>/<role>` holds its credentials.
pub const ROLE_CREDENTIALS: &str = "latest/meta-data/iam/security-credentials/";

/// The raw IMDS answers, one per path; `None` where IMDS said 404.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Responses {
    pub instance_id: Option<String>,
    pub local_hostname: Option<String>,
    pub local_ipv4: Option<String>,
    pub public_ipv4: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    /// Fetched only when the placement paths are missing (older IMDS, emulators).
    pub identity_document: Option<String>,
    pub tags: Vec<(String, String)>,
    pub user_data: Option<Vec<u8>>,
}

impl std::fmt::Debug for Responses {
    // User data may hold the cluster secret: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses")
            .field("instance_id", &self.instance_id)
            .field("local_hostname", &self.local_hostname)
            .field("local_ipv4", &self.local_ipv4)
            .field("public_ipv4", &self.public_ipv4)
            .field("region", &self.region)
            .field("availability_zone", &self.availability_zone)
            .field("identity_document", &self.identity_document)
            .field("tags", &self.tags)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|u| format!("<{} bytes>", u.len())),
            )
            .finish()
    }
}

/// The fields of `dynamic/instance-identity/document` we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDocument {
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    pub account_id: Option<String>,
}

/// Parses the instance identity document (JSON).
pub fn parse_identity_document(text: &str) -> Result<IdentityDocument, MetadataError> {
    serde_json::from_str(text)
        .map_err(|e| MetadataError::parse(P, IDENTITY_DOCUMENT, e.to_string()))
}

/// Parses the `tags/instance` listing: one tag key per line.
pub fn parse_tag_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// Turns the collected answers into facts. Pure.
pub fn parse(r: &Responses) -> Result<InstanceFacts, MetadataError> {
    let doc = r
        .identity_document
        .as_deref()
        .map(parse_identity_document)
        .transpose()?;
    let doc = doc.unwrap_or_default();
    let instance_id = non_empty(r.instance_id.as_deref())
        .or_else(|| non_empty(doc.instance_id.as_deref()))
        .ok_or_else(|| MetadataError::parse(P, INSTANCE_ID, "IMDS gave no instance id"))?;
    let private_ipv4 = match non_empty(r.local_ipv4.as_deref()) {
        Some(ip) => ipv4(P, LOCAL_IPV4, Some(&ip))?,
        None => ipv4(P, IDENTITY_DOCUMENT, doc.private_ip.as_deref())?,
    };
    let tags: BTreeMap<String, String> = r.tags.iter().cloned().collect();
    let user_data = match &r.user_data {
        Some(bytes) => local::user_data(P, USER_DATA, bytes)?,
        None => None,
    };
    Ok(InstanceFacts {
        provider: P,
        instance_id,
        hostname: non_empty(r.local_hostname.as_deref()),
        private_ipv4,
        public_ipv4: ipv4(P, PUBLIC_IPV4, r.public_ipv4.as_deref())?,
        region: non_empty(r.region.as_deref()).or_else(|| non_empty(doc.region.as_deref())),
        zone: non_empty(r.availability_zone.as_deref())
            .or_else(|| non_empty(doc.availability_zone.as_deref())),
        group: non_empty(tags.get(GROUP_TAG).map(String::as_str)),
        tags,
        user_data,
    })
}

/// Fetches everything from IMDS and parses it.
#[tracing::instrument(name = "metadata.aws", skip_all, fields(endpoint))]
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    let base = http::endpoint(P, opts, DEFAULT_ENDPOINT)?;
    tracing::Span::current().record("endpoint", base.as_str());
    let client = HttpClient::new(P, opts)?;
    let mut imds = Imds::connect(&client, &base, opts.allow_imdsv1).await?;

    let mut r = Responses {
        instance_id: imds.get_text(INSTANCE_ID).await?,
        local_hostname: imds.get_text(LOCAL_HOSTNAME).await?,
        local_ipv4: imds.get_text(LOCAL_IPV4).await?,
        public_ipv4: imds.get_text(PUBLIC_IPV4).await?,
        region: imds.get_text(REGION).await?,
        availability_zone: imds.get_text(AVAILABILITY_ZONE).await?,
        ..Responses::default()
    };
    if r.instance_id.is_none() || r.region.is_none() || r.availability_zone.is_none() {
        r.identity_document = imds.get_text(IDENTITY_DOCUMENT).await?;
    }
    // 404 here means "tags in metadata" is not enabled on the instance.
    if let Some(listing) = imds.get_text(TAGS).await? {
        for key in parse_tag_keys(&listing) {
            let url = tag_url(&base, &key)?;
            if let Some(value) = imds.get_url(&url).await? {
                r.tags
                    .push((key, http::text(P, &url, value)?.trim().to_string()));
            }
        }
    } else {
        tracing::debug!("instance tags are not exposed in IMDS (404); tags will be empty");
    }
    r.user_data = imds.get(USER_DATA).await?;
    let facts = parse(&r)?;
    tracing::info!(
        instance_id = %facts.instance_id,
        imdsv2 = imds.token.is_some(),
        token_requests = imds.token_requests,
        tags = facts.tags.len(),
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified from AWS IMDS"
    );
    Ok(facts)
}

/// The JSON credentials document of the instance role, or `None` when the
/// instance has no role (404). Parsed by `cloud::aws::parse_imds_role_credentials`;
/// never logged (it holds a secret key).
#[tracing::instrument(name = "metadata.aws.role_credentials", skip_all)]
pub async fn role_credentials(opts: &Options) -> Result<Option<String>, MetadataError> {
    let base = http::endpoint(P, opts, DEFAULT_ENDPOINT)?;
    let client = HttpClient::new(P, opts)?;
    let mut imds = Imds::connect(&client, &base, opts.allow_imdsv1).await?;
    let Some(listing) = imds.get_text(ROLE_CREDENTIALS).await? else {
        return Ok(None);
    };
    let Some(role) = listing.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    imds.get_text(&format!("{ROLE_CREDENTIALS}{role}")).await
}

/// `tags/instance/<key>`: the key goes in as one path segment, because keys
/// such as `aws:autoscaling:groupName` would otherwise parse as a URL scheme.
fn tag_url(base: &Url, key: &str) -> Result<Url, MetadataError> {
    let mut url = http::join(P, base, TAGS)?;
    url.path_segments_mut()
        .map_err(|()| MetadataError::NotConfigured {
            provider: P,
            what: format!("endpoint {base} cannot carry a path"),
        })?
        .push(key);
    Ok(url)
}

/// An IMDS session: the token (None under IMDSv1) and how often we asked for one.
struct Imds<'a> {
    client: &'a HttpClient,
    base: &'a Url,
    token: Option<String>,
    token_requests: u32,
}

enum TokenError {
    /// IMDS answered and said no (4xx): IMDSv2 is off or the request is not allowed.
    Refused(String),
    Other(MetadataError),
}

impl<'a> Imds<'a> {
    async fn connect(
        client: &'a HttpClient,
        base: &'a Url,
        allow_imdsv1: bool,
    ) -> Result<Self, MetadataError> {
        let mut imds = Imds {
            client,
            base,
            token: None,
            token_requests: 0,
        };
        let token_url = http::join(P, base, TOKEN_PATH)?;
        match imds.request_token(&token_url).await {
            Ok(token) => imds.token = Some(token),
            Err(TokenError::Refused(cause)) if allow_imdsv1 => {
                tracing::warn!(%cause, "IMDSv2 token refused; falling back to IMDSv1 because it is allowed");
            }
            Err(TokenError::Refused(cause)) => {
                return Err(MetadataError::Imdsv2Refused {
                    url: token_url.to_string(),
                    cause,
                });
            }
            // A token PUT that never answers while GETs do is the classic
            // hop-limit case (containers); IMDSv1 may still work if allowed.
            Err(TokenError::Other(e @ MetadataError::Unreachable { .. })) if allow_imdsv1 => {
                tracing::warn!(error = %e, "no IMDSv2 token; trying IMDSv1 because it is allowed");
            }
            Err(TokenError::Other(e)) => return Err(e),
        }
        Ok(imds)
    }

    async fn request_token(&mut self, url: &Url) -> Result<String, TokenError> {
        self.token_requests += 1;
        let reply = self
            .client
            .send(Method::PUT, url, &[(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)])
            .await
            .map_err(TokenError::Other)?;
        if reply.status.is_client_error() {
            return Err(TokenError::Refused(format!("HTTP {}", reply.status)));
        }
        if reply.status != StatusCode::OK {
            return Err(TokenError::Other(MetadataError::Http {
                provider: P,
                url: url.to_string(),
                cause: format!("unexpected HTTP {} for the token request", reply.status),
            }));
        }
        let token = http::text(P, url, reply.body).map_err(TokenError::Other)?;
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Other(MetadataError::parse(
                P,
                url.as_str(),
                "empty IMDSv2 token",
            )));
        }
        Ok(token.to_string())
    }

    async fn get_text(&mut self, path: &str) -> Result<Option<String>, MetadataError> {
        let url = http::join(P, self.base, path)?;
        self.get_url(&url)
            .await?
            .map(|b| http::text(P, &url, b))
            .transpose()
    }

    async fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        let url = http::join(P, self.base, path)?;
        self.get_url(&url).await
    }

    /// GET with the token; 404 is `None`; a 401 refreshes the token once.
    async fn get_url(&mut self, url: &Url) -> Result<Option<Vec<u8>>, MetadataError> {
        let mut reply = self.send_get(url).await?;
        if reply.status == StatusCode::UNAUTHORIZED && self.token.is_some() {
            tracing::debug!(%url, "IMDS token rejected (expired?); requesting a new one");
            let token_url = http::join(P, self.base, TOKEN_PATH)?;
            self.token = Some(self.request_token(&token_url).await.map_err(|e| match e {
                TokenError::Refused(cause) => MetadataError::Imdsv2Refused {
                    url: token_url.to_string(),
                    cause,
                },
                TokenError::Other(e) => e,
            })?);
            reply = self.send_get(url).await?;
        }
        match reply.status {
            StatusCode::OK => Ok(Some(reply.body)),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED if self.token.is_none() => Err(MetadataError::Http {
                provider: P,
                url: url.to_string(),
                cause: "HTTP 401 Unauthorized: this instance requires IMDSv2 tokens".into(),
            }),
            status => Err(MetadataError::Http {
                provider: P,
                url: url.to_string(),
                cause: format!("HTTP {status}"),
            }),
        }
    }

    async fn send_get(&self, url: &Url) -> Result<http::Reply, MetadataError> {
        match &self.token {
            Some(token) => {
                self.client
                    .send(Method::GET, url, &[(TOKEN_HEADER, token)])
                    .await
            }
            None => self.client.send(Method::GET, url, &[]).await,
        }
    }
}

/// Detection probe: does a token PUT succeed? (With IMDSv1 allowed, an
/// answering `instance-id` GET counts too.)
pub(crate) async fn probe(client: &HttpClient, base: &Url, opts: &Options) -> Result<(), String> {
    let url = http::join(P, base, TOKEN_PATH).map_err(|e| e.to_string())?;
    let reply = client
        .probe(
            Method::PUT,
            &url,
            &[(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)],
            opts.probe_timeout,
        )
        .await?;
    if reply.status == StatusCode::OK {
        return Ok(());
    }
    if opts.allow_imdsv1 {
        let url = http::join(P, base, INSTANCE_ID).map_err(|e| e.to_string())?;
        let reply = client
            .probe(Method::GET, &url, &[], opts.probe_timeout)
            .await?;
        if reply.status == StatusCode::OK {
            return Ok(());
        }
    }
    Err(format!("token PUT answered HTTP {}", reply.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_become_single_path_segments() {
        let base = Url::parse("http://127.0.0.1:1/").expect("url");
        let u = tag_url(&base, GROUP_TAG).expect("url");
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:1/latest/meta-data/tags/instance/aws:autoscaling:groupName"
        );
        let u = tag_url(&base, "a/b c").expect("url");
        assert_eq!(u.path(), "/latest/meta-data/tags/instance/a%2Fb%20c");
    }

    #[test]
    fn identity_document_fills_gaps() {
        let r = Responses {
            identity_document: Some(
                r#"{"instanceId":"i-1","region":"eu-west-1","availabilityZone":"eu-west-1a","privateIp":"10.1.2.3"}"#
                    .into(),
            ),
            ..Responses::default()
        };
        let f = parse(&r).expect("parses");
        assert_eq!(f.instance_id, "i-1");
        assert_eq!(f.region.as_deref(), Some("eu-west-1"));
        assert_eq!(f.zone.as_deref(), Some("eu-west-1a"));
        assert_eq!(f.private_ipv4, Some(std::net::Ipv4Addr::new(10, 1, 2, 3)));
    }

    #[test]
    fn missing_instance_id_and_bad_addresses_are_errors() {
        let e = parse(&Responses::default()).expect_err("no id");
        assert!(e.to_string().contains("no instance id"), "{e}");
        let r = Responses {
            instance_id: Some("i-1".into()),
            public_ipv4: Some("not-an-ip".into()),
            ..Responses::default()
        };
        let e = parse(&r).expect_err("bad ip");
        assert!(e.to_string().contains(PUBLIC_IPV4), "{e}");
    }

    #[test]
    fn debug_never_shows_user_data() {
        let r = Responses {
            user_data: Some(b"secret: hunter2".to_vec()),
            ..Responses::default()
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("<15 bytes>"));
    }
}
