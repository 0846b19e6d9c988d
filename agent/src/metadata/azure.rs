//! Azure Instance Metadata Service.
//!
//! Fetching: one GET of `metadata/instance?api-version=2021-02-01` with
//! `Metadata: true` (IMDS rejects requests without it). Parsing: [`parse`]
//! reads the JSON, purely. All IMDS primitives are strings; missing values
//! are empty strings, which we treat as absent.
//!
//! Mapping: `compute.vmId` → instance id; `compute.osProfile.computerName`
//! (else `compute.name`) → hostname; `location` → region; `zone` → zone;
//! `vmScaleSetName` → group; `tagsList` (else the `tags` string
//! `k:v;k:v`) → tags; `userData` (base64) → user data;
//! `network.interface[0].ipv4.ipAddress[0]` → addresses.
//!
//! Docs: <https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>.

use std::collections::BTreeMap;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::http::{self, HttpClient};
use super::value::{ipv4, non_empty};
use super::{InstanceFacts, MetadataError, Options, ProviderKind, local};

const P: ProviderKind = ProviderKind::Azure;

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254/";
/// 2021-02-01 is the oldest version with both `userData` and `tagsList`.
pub const INSTANCE_PATH: &str = "metadata/instance?api-version=2021-02-01";
pub const HEADER: (&str, &str) = ("Metadata", "true");
const ORIGIN: &str = "metadata/instance";

#[derive(Deserialize)]
struct Instance {
    compute: Compute,
    #[serde(default)]
    network: Option<Network>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Compute {
    vm_id: Option<String>,
    name: Option<String>,
    os_profile: Option<OsProfile>,
    location: Option<String>,
    zone: Option<String>,
    vm_scale_set_name: Option<String>,
    tags: Option<String>,
    tags_list: Option<Vec<Tag>>,
    user_data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsProfile {
    computer_name: Option<String>,
}

#[derive(Deserialize)]
pub struct Tag {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Deserialize)]
struct Network {
    #[serde(default)]
    interface: Vec<Interface>,
}

#[derive(Deserialize)]
struct Interface {
    ipv4: Option<Ipv4Block>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ipv4Block {
    #[serde(default)]
    ip_address: Vec<IpAddress>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpAddress {
    private_ip_address: Option<String>,
    public_ip_address: Option<String>,
}

/// Parses the `/metadata/instance` JSON. Pure.
pub fn parse(body: &[u8]) -> Result<InstanceFacts, MetadataError> {
    let i: Instance =
        serde_json::from_slice(body).map_err(|e| MetadataError::parse(P, ORIGIN, e.to_string()))?;
    let c = &i.compute;
    let instance_id = non_empty(c.vm_id.as_deref())
        .ok_or_else(|| MetadataError::parse(P, ORIGIN, "no instance id (compute.vmId)"))?;
    let address = i
        .network
        .as_ref()
        .and_then(|n| n.interface.first())
        .and_then(|nic| nic.ipv4.as_ref())
        .and_then(|v4| v4.ip_address.first());
    let tags = match &c.tags_list {
        Some(list) => list
            .iter()
            .filter(|t| !t.name.is_empty())
            .map(|t| (t.name.clone(), t.value.clone()))
            .collect(),
        None => parse_tags(c.tags.as_deref().unwrap_or("")),
    };
    let user_data = match non_empty(c.user_data.as_deref()) {
        Some(encoded) => decode_user_data(&encoded)?,
        None => None,
    };
    Ok(InstanceFacts {
        provider: P,
        instance_id,
        hostname: non_empty(
            c.os_profile
                .as_ref()
                .and_then(|o| o.computer_name.as_deref()),
        )
        .or_else(|| non_empty(c.name.as_deref())),
        private_ipv4: ipv4(
            P,
            "network.interface[0].ipv4.ipAddress[0].privateIpAddress",
            address.and_then(|a| a.private_ip_address.as_deref()),
        )?,
        public_ipv4: ipv4(
            P,
            "network.interface[0].ipv4.ipAddress[0].publicIpAddress",
            address.and_then(|a| a.public_ip_address.as_deref()),
        )?,
        region: non_empty(c.location.as_deref()),
        zone: non_empty(c.zone.as_deref()),
        group: non_empty(c.vm_scale_set_name.as_deref()),
        tags,
        user_data,
    })
}

/// The legacy `tags` string, `key:value;key:value`. Azure itself warns it is
/// ambiguous when tags contain `;`, which is why `tagsList` wins when present.
pub fn parse_tags(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|pair| {
            let (k, v) = pair.split_once(':').unwrap_or((pair, ""));
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The `tagsList` form (JSON array of `{name, value}`), as the docs' sample shows.
pub fn parse_tags_list(body: &[u8]) -> Result<BTreeMap<String, String>, MetadataError> {
    let list: Vec<Tag> = serde_json::from_slice(body)
        .map_err(|e| MetadataError::parse(P, "compute.tagsList", e.to_string()))?;
    Ok(list
        .into_iter()
        .filter(|t| !t.name.is_empty())
        .map(|t| (t.name, t.value))
        .collect())
}

fn decode_user_data(encoded: &str) -> Result<Option<String>, MetadataError> {
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            MetadataError::parse(P, "compute.userData", format!("not valid base64 ({e})"))
        })?;
    local::user_data(P, "compute.userData", &bytes)
}

/// Fetches the instance metadata and parses it.
#[tracing::instrument(name = "metadata.azure", skip_all, fields(endpoint))]
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    let base = http::endpoint(P, opts, DEFAULT_ENDPOINT)?;
    tracing::Span::current().record("endpoint", base.as_str());
    let client = HttpClient::new(P, opts)?;
    let url = http::join(P, &base, INSTANCE_PATH)?;
    let reply = client.send(Method::GET, &url, &[HEADER]).await?;
    if reply.status != StatusCode::OK {
        return Err(MetadataError::Http {
            provider: P,
            url: url.to_string(),
            cause: format!("HTTP {}", reply.status),
        });
    }
    let facts = parse(&reply.body)?;
    tracing::info!(
        instance_id = %facts.instance_id,
        group = ?facts.group,
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified from Azure IMDS"
    );
    Ok(facts)
}

/// Detection probe: `/metadata/instance` answers 200 with a `compute` object.
pub(crate) async fn probe(client: &HttpClient, base: &Url, opts: &Options) -> Result<(), String> {
    let url = http::join(P, base, INSTANCE_PATH).map_err(|e| e.to_string())?;
    let reply = client
        .probe(Method::GET, &url, &[HEADER], opts.probe_timeout)
        .await?;
    if reply.status != StatusCode::OK {
        return Err(format!("HTTP {}", reply.status));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&reply.body).map_err(|_| "answer is not JSON".to_string())?;
    if value.get("compute").is_some() {
        Ok(())
    } else {
        Err("answer has no \"compute\" object".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_tag_string() {
        let t = parse_tags("Department:IT;ReferenceNumber:123456;TestStatus:Pending");
        assert_eq!(t.len(), 3);
        assert_eq!(t.get("ReferenceNumber").map(String::as_str), Some("123456"));
        assert!(parse_tags("").is_empty());
        assert_eq!(
            parse_tags("url:http://x").get("url").map(String::as_str),
            Some("http://x")
        );
    }

    #[test]
    fn user_data_must_be_base64_and_error_hides_it() {
        let body = br#"{"compute":{"vmId":"v","userData":"c2VjcmV0IQ=="}}"#;
        assert_eq!(
            parse(body).expect("parses").user_data.as_deref(),
            Some("secret!")
        );
        let body = br#"{"compute":{"vmId":"v","userData":"not base64 hunter2!"}}"#;
        let e = parse(body).expect_err("bad base64");
        assert!(e.to_string().contains("compute.userData"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn tags_list_wins_over_tags_string() {
        let body =
            br#"{"compute":{"vmId":"v","tags":"a:1","tagsList":[{"name":"b","value":"2"}]}}"#;
        let f = parse(body).expect("parses");
        assert_eq!(f.tags.len(), 1);
        assert_eq!(f.tags.get("b").map(String::as_str), Some("2"));
    }
}
