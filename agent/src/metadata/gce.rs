//! Google Compute Engine metadata server.
//!
//! Fetching: one GET of `computeMetadata/v1/instance/?recursive=true` with
//! `Metadata-Flavor: Google`; the answer must carry the same header back,
//! which is how we know it really is GCE (Google documents the header for
//! exactly this purpose). Parsing: [`parse`] reads the JSON, purely.
//!
//! Mapping: `id` (a JSON number) → instance id; `zone`
//! (`projects/N/zones/us-central1-a`) → zone and region (`us-central1`);
//! `networkInterfaces[0].ip` / `.accessConfigs[0].externalIp` → addresses;
//! attribute `created-by` (`projects/N/zones|regions/X/instanceGroupManagers/NAME`)
//! → group NAME; attribute `user-data` → user data. GCE exposes no key/value
//! labels to the VM: network tags become tag keys with empty values. Other
//! custom attributes are not copied, since they commonly carry secrets.
//!
//! Docs: <https://cloud.google.com/compute/docs/metadata/querying-metadata>,
//! <https://cloud.google.com/compute/docs/metadata/predefined-metadata-keys>.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::http::{self, HttpClient};
use super::value::{ipv4, non_empty};
use super::{InstanceFacts, MetadataError, Options, ProviderKind, local};

const P: ProviderKind = ProviderKind::Gce;

/// The metadata server's address; `metadata.google.internal` resolves to it,
/// and the IP needs no DNS this early in boot.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254/";
pub const INSTANCE_PATH: &str = "computeMetadata/v1/instance/?recursive=true&alt=json";
pub const FLAVOR_HEADER: &str = "Metadata-Flavor";
pub const FLAVOR: &str = "Google";
const ORIGIN: &str = "computeMetadata/v1/instance/";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    id: Option<serde_json::Value>,
    hostname: Option<String>,
    name: Option<String>,
    zone: Option<String>,
    #[serde(default)]
    network_interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    tags: Vec<serde_json::Value>,
    #[serde(default)]
    attributes: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkInterface {
    ip: Option<String>,
    #[serde(default)]
    access_configs: Vec<AccessConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessConfig {
    external_ip: Option<String>,
}

/// Parses the recursive instance JSON. Pure.
pub fn parse(body: &[u8]) -> Result<InstanceFacts, MetadataError> {
    let i: Instance =
        serde_json::from_slice(body).map_err(|e| MetadataError::parse(P, ORIGIN, e.to_string()))?;
    // The id is a JSON number (up to 2^64) in the recursive form, a string elsewhere.
    let instance_id = match &i.id {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => non_empty(Some(s)),
        _ => None,
    }
    .ok_or_else(|| MetadataError::parse(P, ORIGIN, "no instance id (field \"id\")"))?;
    let (zone, region) = match i.zone.as_deref().map(split_zone) {
        Some((zone, region)) => (Some(zone), region),
        None => (None, None),
    };
    let nic = i.network_interfaces.first();
    let private_ipv4 = ipv4(
        P,
        "networkInterfaces[0].ip",
        nic.and_then(|n| n.ip.as_deref()),
    )?;
    let external = nic
        .and_then(|n| n.access_configs.first())
        .and_then(|a| a.external_ip.as_deref());
    let public_ipv4 = ipv4(
        P,
        "networkInterfaces[0].accessConfigs[0].externalIp",
        external,
    )?;
    let attribute = |key: &str| match i.attributes.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    // cloud-init's GCE source: `user-data-encoding: base64` marks the
    // attribute as base64 (a way to pass gzip, which an attribute cannot
    // hold as raw bytes).
    let user_data = match (attribute("user-data"), attribute("user-data-encoding")) {
        (Some(text), Some("base64")) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| {
                    MetadataError::parse(
                        P,
                        "attributes.user-data",
                        format!("user-data-encoding is base64 but the value is not: {e}"),
                    )
                })?;
            local::user_data(P, "attributes.user-data", &bytes)?
        }
        (Some(text), _) => local::user_data(P, "attributes.user-data", text.as_bytes())?,
        (None, _) => None,
    };
    let tags = i
        .tags
        .iter()
        .filter_map(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_string(), String::new()))
        .collect();
    Ok(InstanceFacts {
        provider: P,
        instance_id,
        hostname: non_empty(i.hostname.as_deref()).or_else(|| non_empty(i.name.as_deref())),
        private_ipv4,
        public_ipv4,
        region,
        zone: non_empty(zone.as_deref()),
        group: attribute("created-by").and_then(group_from_created_by),
        tags,
        user_data,
    })
}

/// `projects/N/zones/us-central1-a` → (`us-central1-a`, `us-central1`).
/// A bare zone name is accepted too.
pub fn split_zone(path: &str) -> (String, Option<String>) {
    let zone = path.rsplit('/').next().unwrap_or(path).trim().to_string();
    let region = zone
        .rsplit_once('-')
        .map(|(region, _)| region.to_string())
        .filter(|r| !r.is_empty());
    (zone, region)
}

/// `projects/N/zones/Z/instanceGroupManagers/NAME` (or `regions/R/...`) → NAME.
pub fn group_from_created_by(created_by: &str) -> Option<String> {
    let mut parts = created_by.trim().split('/');
    while let Some(part) = parts.next() {
        if part == "instanceGroupManagers" {
            return non_empty(parts.next());
        }
    }
    None
}

/// Fetches the instance metadata and parses it.
#[tracing::instrument(name = "metadata.gce", skip_all, fields(endpoint))]
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    let base = http::endpoint(P, opts, DEFAULT_ENDPOINT)?;
    tracing::Span::current().record("endpoint", base.as_str());
    let client = HttpClient::new(P, opts)?;
    let url = http::join(P, &base, INSTANCE_PATH)?;
    let reply = client
        .send(Method::GET, &url, &[(FLAVOR_HEADER, FLAVOR)])
        .await?;
    if reply.status != StatusCode::OK {
        return Err(MetadataError::Http {
            provider: P,
            url: url.to_string(),
            cause: format!("HTTP {}", reply.status),
        });
    }
    check_flavor(&reply.headers).map_err(|why| MetadataError::WrongService {
        provider: P,
        url: url.to_string(),
        why,
    })?;
    let facts = parse(&reply.body)?;
    tracing::info!(
        instance_id = %facts.instance_id,
        group = ?facts.group,
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified from the GCE metadata server"
    );
    Ok(facts)
}

fn check_flavor(headers: &reqwest::header::HeaderMap) -> Result<(), String> {
    match headers.get(FLAVOR_HEADER).map(|v| v.to_str()) {
        Some(Ok(v)) if v == FLAVOR => Ok(()),
        Some(_) => Err(format!("response header {FLAVOR_HEADER} is not {FLAVOR:?}")),
        None => Err(format!(
            "response lacks the {FLAVOR_HEADER}: {FLAVOR} header"
        )),
    }
}

/// Detection probe: the metadata root answers with `Metadata-Flavor: Google`.
pub(crate) async fn probe(client: &HttpClient, base: &Url, opts: &Options) -> Result<(), String> {
    let url = http::join(P, base, "computeMetadata/v1/").map_err(|e| e.to_string())?;
    let reply = client
        .probe(
            Method::GET,
            &url,
            &[(FLAVOR_HEADER, FLAVOR)],
            opts.probe_timeout,
        )
        .await?;
    if reply.status != StatusCode::OK {
        return Err(format!("HTTP {}", reply.status));
    }
    check_flavor(&reply.headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_split_into_zone_and_region() {
        assert_eq!(
            split_zone("projects/123/zones/us-central1-a"),
            ("us-central1-a".into(), Some("us-central1".into()))
        );
        assert_eq!(
            split_zone("europe-west4-b"),
            ("europe-west4-b".into(), Some("europe-west4".into()))
        );
        assert_eq!(split_zone("nodash"), ("nodash".into(), None));
    }

    #[test]
    fn group_comes_from_zonal_and_regional_managers() {
        assert_eq!(
            group_from_created_by(
                "projects/123/zones/us-central1-a/instanceGroupManagers/etcd-mig"
            )
            .as_deref(),
            Some("etcd-mig")
        );
        assert_eq!(
            group_from_created_by("projects/123/regions/us-central1/instanceGroupManagers/cp")
                .as_deref(),
            Some("cp")
        );
        assert_eq!(
            group_from_created_by("projects/123/zones/z/instanceGroupManagers/"),
            None
        );
        assert_eq!(group_from_created_by("someone"), None);
    }

    #[test]
    fn base64_user_data_is_decoded_and_may_be_gzip() {
        use base64::Engine;
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"cluster: {name: a}\n").expect("write");
        let b64 = base64::engine::general_purpose::STANDARD.encode(z.finish().expect("gzip"));
        let doc = format!(
            r#"{{"id":"42","zone":"projects/1/zones/a-b","attributes":{{"user-data":"{b64}","user-data-encoding":"base64"}}}}"#
        );
        let f = parse(doc.as_bytes()).expect("parses");
        assert_eq!(f.user_data.as_deref(), Some("cluster: {name: a}\n"));
        let bad = r#"{"id":"42","zone":"projects/1/zones/a-b","attributes":{"user-data":"%%%","user-data-encoding":"base64"}}"#;
        let e = parse(bad.as_bytes()).expect_err("not base64");
        assert!(
            e.to_string().contains("user-data-encoding is base64"),
            "{e}"
        );
    }

    #[test]
    fn string_ids_and_missing_ids() {
        let f = parse(br#"{"id":"42","zone":"projects/1/zones/a-b"}"#).expect("parses");
        assert_eq!(f.instance_id, "42");
        assert!(parse(br#"{"zone":"x"}"#).is_err());
        assert!(parse(br#"{"id":true}"#).is_err());
    }
}
