//! `dns.provider: google`: Cloud DNS (v1) with the instance's service
//! account token from the metadata server (`cloud::gce`). The project
//! comes from the config or the metadata server (`project/project-id`),
//! the managed zone from the config or a lookup by DNS name. A plan is one
//! change (`additions` + `deletions`), applied atomically by Cloud DNS;
//! deletions name the record sets exactly as listed, which Cloud DNS
//! demands. A pending change is polled until it is done.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::error::DnsError;
use super::plan::{Change, RecordSet};
use super::registry::{self, RecordType};
use crate::cloud::gce::{GceClient, GceError};

const PROVIDER: &str = "google";
pub const DEFAULT_API: &str = "https://dns.googleapis.com/dns/v1/";
/// Where tests point the provider instead (a fake API on loopback).
pub const ENDPOINT_ENV: &str = "MUSTER_GOOGLE_DNS_ENDPOINT";
const POLL_EVERY: Duration = Duration::from_millis(500);
const POLL_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZoneList {
    #[serde(default)]
    managed_zones: Vec<ManagedZone>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagedZone {
    name: String,
    dns_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RrSet {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub ttl: u32,
    #[serde(default)]
    pub rrdatas: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RrSetPage {
    #[serde(default)]
    rrsets: Vec<RrSet>,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChangeState {
    id: String,
    status: String,
}

pub struct GoogleProvider {
    client: GceClient,
    api: Url,
    project: Option<String>,
    managed_zone: Option<String>,
    /// (zone, `projects/P/managedZones/Z`) once found.
    found: std::sync::Mutex<Option<(String, String)>>,
}

impl GoogleProvider {
    pub fn new(
        client: GceClient,
        api: Url,
        project: Option<String>,
        managed_zone: Option<String>,
    ) -> Self {
        GoogleProvider {
            client,
            api,
            project,
            managed_zone,
            found: std::sync::Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> Result<Url, DnsError> {
        self.api
            .join(path)
            .map_err(|e| DnsError::config(PROVIDER, "dns.google", format!("{path}: {e}")))
    }

    async fn call(
        &self,
        method: Method,
        what: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<String, DnsError> {
        let url = self.url(path)?;
        self.client
            .call_with_body(method, what, &url, body)
            .await
            .map_err(|e| classify(&e))
    }

    async fn project(&self) -> Result<String, DnsError> {
        if let Some(p) = &self.project {
            return Ok(p.clone());
        }
        self.client
            .metadata_value("project/project-id")
            .await
            .map_err(|e| DnsError::transient(PROVIDER, format!("the project id: {e}")))
    }

    async fn zone_path(&self, zone: &str) -> Result<String, DnsError> {
        if let Some((z, path)) = self.found.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && z == zone
        {
            return Ok(path);
        }
        let project = self.project().await?;
        let name = match &self.managed_zone {
            Some(z) => z.clone(),
            None => {
                let dns_name = format!("{}.", zone.trim_end_matches('.'));
                let path = format!("projects/{project}/managedZones?dnsName={dns_name}");
                let text = self
                    .call(Method::GET, "managedZones.list", &path, None)
                    .await?;
                parse_zone_name(&text, zone)?.ok_or_else(|| {
                    DnsError::config(
                        PROVIDER,
                        "dns.zone",
                        format!("no managed zone for `{zone}` in project `{project}`"),
                    )
                })?
            }
        };
        let path = format!("projects/{project}/managedZones/{name}");
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((zone.to_string(), path.clone()));
        Ok(path)
    }

    pub async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, DnsError> {
        let base = self.zone_path(zone).await?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("{base}/rrsets?maxResults=1000");
            if let Some(t) = &token {
                let t: String = url::form_urlencoded::byte_serialize(t.as_bytes()).collect();
                path.push_str(&format!("&pageToken={t}"));
            }
            let text = self
                .call(Method::GET, "resourceRecordSets.list", &path, None)
                .await?;
            let (mut sets, next) = parse_rrsets(&text)?;
            out.append(&mut sets);
            match next {
                Some(n) if Some(&n) != token.as_ref() => token = Some(n),
                _ => break,
            }
        }
        Ok(out)
    }

    pub async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), DnsError> {
        let base = self.zone_path(zone).await?;
        let text = self
            .call(
                Method::POST,
                "changes.create",
                &format!("{base}/changes"),
                Some(change_body(changes).to_string()),
            )
            .await?;
        let mut state: ChangeState = serde_json::from_str(&text)
            .map_err(|e| DnsError::transient(PROVIDER, format!("changes.create answer: {e}")))?;
        let deadline = tokio::time::Instant::now() + POLL_FOR;
        while state.status != "done" {
            if tokio::time::Instant::now() > deadline {
                return Err(DnsError::transient(
                    PROVIDER,
                    format!(
                        "change {} still {} after {POLL_FOR:?}",
                        state.id, state.status
                    ),
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
            let text = self
                .call(
                    Method::GET,
                    "changes.get",
                    &format!("{base}/changes/{}", state.id),
                    None,
                )
                .await?;
            state = serde_json::from_str(&text)
                .map_err(|e| DnsError::transient(PROVIDER, format!("changes.get answer: {e}")))?;
        }
        Ok(())
    }
}

fn classify(e: &GceError) -> DnsError {
    let message = e.to_string();
    match e.status() {
        Some(401 | 403) => DnsError::config(
            PROVIDER,
            "dns.google",
            format!(
                "the service account may not change this zone (it needs roles/dns.admin): {message}"
            ),
        ),
        Some(404) => DnsError::config(PROVIDER, "dns.google.managedZone", message),
        Some(429) => DnsError::rate_limited(PROVIDER, None, message),
        _ => DnsError::transient(PROVIDER, message),
    }
}

/// The managed zone serving exactly `zone` in a managedZones.list answer.
pub fn parse_zone_name(text: &str, zone: &str) -> Result<Option<String>, DnsError> {
    let list: ZoneList = serde_json::from_str(text)
        .map_err(|e| DnsError::transient(PROVIDER, format!("managedZones.list answer: {e}")))?;
    let wanted = format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase());
    Ok(list
        .managed_zones
        .into_iter()
        .find(|z| z.dns_name.to_ascii_lowercase() == wanted)
        .map(|z| z.name))
}

/// One page of rrsets (A, AAAA, TXT) and the next page's token.
pub fn parse_rrsets(text: &str) -> Result<(Vec<RecordSet>, Option<String>), DnsError> {
    let page: RrSetPage = serde_json::from_str(text).map_err(|e| {
        DnsError::transient(PROVIDER, format!("resourceRecordSets.list answer: {e}"))
    })?;
    let sets = page
        .rrsets
        .into_iter()
        .filter_map(|r| {
            let kind = RecordType::parse(&r.kind)?;
            Some(RecordSet {
                name: r.name.trim_end_matches('.').to_ascii_lowercase(),
                kind,
                ttl: r.ttl,
                values: r
                    .rrdatas
                    .iter()
                    .map(|v| match kind {
                        RecordType::Txt => registry::unquoted(v),
                        _ => v.clone(),
                    })
                    .collect::<BTreeSet<_>>(),
            })
        })
        .collect();
    Ok((sets, page.next_page_token))
}

fn rrset(set: &RecordSet) -> serde_json::Value {
    let rrdatas: Vec<String> = set
        .values
        .iter()
        .map(|v| match set.kind {
            RecordType::Txt => registry::quoted(v),
            _ => v.clone(),
        })
        .collect();
    json!({"name": format!("{}.", set.name), "type": set.kind.as_str(), "ttl": set.ttl, "rrdatas": rrdatas})
}

/// A Change body: deletions of the exact old sets, additions of the new.
pub fn change_body(changes: &[Change]) -> serde_json::Value {
    let mut additions = Vec::new();
    let mut deletions = Vec::new();
    for c in changes {
        match c {
            Change::Put { old, new } => {
                if let Some(old) = old {
                    deletions.push(rrset(old));
                }
                additions.push(rrset(new));
            }
            Change::Delete(old) => deletions.push(rrset(old)),
        }
    }
    json!({"kind": "dns#change", "additions": additions, "deletions": deletions})
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the resourceRecordSets.list example of the Cloud DNS
    // API reference.
    const PAGE: &str = r#"{
      "kind": "dns#resourceRecordSetsListResponse",
      "rrsets": [
        {"kind": "dns#resourceRecordSet", "name": "example.com.", "type": "SOA", "ttl": 21600,
         "rrdatas": ["ns-cloud-e1.googledomains.com. cloud-dns-hostmaster.google.com. 1 21600 3600 259200 300"]},
        {"kind": "dns#resourceRecordSet", "name": "api.example.com.", "type": "A", "ttl": 60, "rrdatas": ["10.0.0.100"]},
        {"kind": "dns#resourceRecordSet", "name": "a-api.example.com.", "type": "TXT", "ttl": 300,
         "rrdatas": ["\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api\""]}
      ],
      "nextPageToken": "CgZhLWFwaS4"
    }"#;

    #[test]
    fn rrsets_are_read_with_the_next_page_token() {
        let (sets, next) = parse_rrsets(PAGE).expect("parses");
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].name, "api.example.com");
        assert_eq!(
            sets[1].values.iter().next().map(String::as_str),
            Some(
                "heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api"
            )
        );
        assert_eq!(next.as_deref(), Some("CgZhLWFwaS4"));
    }

    #[test]
    fn a_plan_is_one_change_with_exact_deletions_and_quoted_txt() {
        let set = |name: &str, kind, ttl, v: &str| RecordSet {
            name: name.into(),
            kind,
            ttl,
            values: [v.to_string()].into(),
        };
        let body = change_body(&[
            Change::Put {
                old: Some(set("api.example.com", RecordType::A, 60, "10.0.0.1")),
                new: set("api.example.com", RecordType::A, 60, "10.0.0.2"),
            },
            Change::Put {
                old: None,
                new: set(
                    "a-n1.example.com",
                    RecordType::Txt,
                    300,
                    "heritage=external-dns",
                ),
            },
            Change::Delete(set("old.example.com", RecordType::A, 60, "10.0.0.9")),
        ]);
        assert_eq!(
            body,
            json!({"kind": "dns#change",
                "additions": [
                    {"name": "api.example.com.", "type": "A", "ttl": 60, "rrdatas": ["10.0.0.2"]},
                    {"name": "a-n1.example.com.", "type": "TXT", "ttl": 300, "rrdatas": ["\"heritage=external-dns\""]}],
                "deletions": [
                    {"name": "api.example.com.", "type": "A", "ttl": 60, "rrdatas": ["10.0.0.1"]},
                    {"name": "old.example.com.", "type": "A", "ttl": 60, "rrdatas": ["10.0.0.9"]}]})
        );
        let zones = r#"{"managedZones":[{"kind":"dns#managedZone","name":"prod-zone","dnsName":"example.com.","id":"123","visibility":"public"}]}"#;
        assert_eq!(
            parse_zone_name(zones, "example.com")
                .expect("ok")
                .as_deref(),
            Some("prod-zone")
        );
        assert_eq!(parse_zone_name(zones, "other.com").expect("ok"), None);
    }
}
