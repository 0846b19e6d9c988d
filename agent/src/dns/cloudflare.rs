//! `dns.provider: cloudflare`: Cloudflare's API v4 with an API token
//! (Zone:Read + DNS:Edit). The zone id is found by name; records are read
//! page by page; Cloudflare keeps one record per value, so a put deletes
//! the values no longer wanted and creates the new ones. TXT content is
//! written quoted, as ExternalDNS writes it, so that it can later find and
//! delete it by exact content. Records are not proxied (ExternalDNS's
//! default), TTL 1 means automatic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::error::DnsError;
use super::plan::{Change, RecordSet};
use super::registry::{self, RecordType};
use crate::cloud::http;

const PROVIDER: &str = "cloudflare";
pub const DEFAULT_API: &str = "https://api.cloudflare.com/client/v4/";
/// Where tests point the provider instead (a fake API on loopback).
pub const ENDPOINT_ENV: &str = "MUSTER_CLOUDFLARE_ENDPOINT";
const PER_PAGE: u32 = 1000;
const TIMEOUT: Duration = Duration::from_secs(15);

/// One record as Cloudflare lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CfRecord {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    pub ttl: u32,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<CfError>,
    result: Option<T>,
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize)]
struct CfError {
    code: i64,
    message: String,
}

#[derive(Debug, Deserialize)]
struct ResultInfo {
    #[serde(default)]
    total_pages: u32,
}

#[derive(Debug, Deserialize)]
struct Zone {
    id: String,
    name: String,
}

pub struct CloudflareProvider {
    http: reqwest::Client,
    base: Url,
    token: String,
    /// Record ids per (name, type) from the last listing: deletes need them.
    ids: Mutex<BTreeMap<(String, RecordType), Vec<CfRecord>>>,
    /// (zone name, id) once found.
    zone: Mutex<Option<(String, String)>>,
}

impl CloudflareProvider {
    pub fn new(token: String, base: Url) -> Result<Self, DnsError> {
        let http = http::client(TIMEOUT, true).map_err(|e| DnsError::transient(PROVIDER, e))?;
        Ok(CloudflareProvider {
            http,
            base,
            token: token.trim().to_string(),
            ids: Mutex::new(BTreeMap::new()),
            zone: Mutex::new(None),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, DnsError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| DnsError::config(PROVIDER, "dns.cloudflare", format!("{path}: {e}")))?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let reply = http::send(request, TIMEOUT)
            .await
            .map_err(|e| DnsError::transient(PROVIDER, format!("{method} {path}: {}", e.cause)))?;
        let status = reply.status.as_u16();
        if reply.status.is_success() {
            return Ok(reply.body);
        }
        let detail = serde_json::from_slice::<Envelope<serde_json::Value>>(&reply.body)
            .ok()
            .and_then(|e| {
                e.errors
                    .first()
                    .map(|e| format!("{} (code {})", e.message, e.code))
            })
            .unwrap_or_else(|| http::snippet(&reply.body, 200));
        let message = format!("{method} {path}: HTTP {status}: {detail}");
        Err(match status {
            401 | 403 => DnsError::config(
                PROVIDER,
                "dns.cloudflare.apiToken",
                format!("the token may not do this (it needs Zone:Read and DNS:Edit): {message}"),
            ),
            429 => DnsError::rate_limited(PROVIDER, reply.retry_after, message),
            _ => DnsError::transient(PROVIDER, message),
        })
    }

    async fn zone_id(&self, zone: &str) -> Result<String, DnsError> {
        if let Some((name, id)) = self.zone.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && name == zone
        {
            return Ok(id);
        }
        let body = self
            .call(reqwest::Method::GET, &format!("zones?name={zone}"), None)
            .await?;
        let id = parse_zone_id(&body, zone)?.ok_or_else(|| {
            DnsError::config(
                PROVIDER,
                "dns.zone",
                format!("no zone named `{zone}` is visible to this token"),
            )
        })?;
        *self.zone.lock().unwrap_or_else(|p| p.into_inner()) = Some((zone.to_string(), id.clone()));
        Ok(id)
    }

    pub async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, DnsError> {
        let id = self.zone_id(zone).await?;
        let mut records = Vec::new();
        let mut page = 1;
        loop {
            let path = format!("zones/{id}/dns_records?per_page={PER_PAGE}&page={page}");
            let body = self.call(reqwest::Method::GET, &path, None).await?;
            let (mut got, pages) = parse_records(&body)?;
            records.append(&mut got);
            if page >= pages {
                break;
            }
            page += 1;
        }
        let (sets, ids) = group(&records);
        *self.ids.lock().unwrap_or_else(|p| p.into_inner()) = ids;
        Ok(sets)
    }

    pub async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), DnsError> {
        let id = self.zone_id(zone).await?;
        let steps = {
            let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            requests(changes, &ids)
        };
        for step in steps {
            match step {
                Step::Delete(record) => {
                    self.call(
                        reqwest::Method::DELETE,
                        &format!("zones/{id}/dns_records/{record}"),
                        None,
                    )
                    .await?;
                }
                Step::Create(body) => {
                    self.call(
                        reqwest::Method::POST,
                        &format!("zones/{id}/dns_records"),
                        Some(body),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

fn envelope<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Envelope<T>, DnsError> {
    let e: Envelope<T> = serde_json::from_slice(body)
        .map_err(|e| DnsError::transient(PROVIDER, format!("unexpected answer: {e}")))?;
    if !e.success {
        let why = e
            .errors
            .first()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        return Err(DnsError::transient(
            PROVIDER,
            format!("the API says it failed: {why}"),
        ));
    }
    Ok(e)
}

/// The id of the zone named exactly `zone` in a `GET /zones?name=` answer.
pub fn parse_zone_id(body: &[u8], zone: &str) -> Result<Option<String>, DnsError> {
    let zones: Envelope<Vec<Zone>> = envelope(body)?;
    let wanted = zone.trim_end_matches('.').to_ascii_lowercase();
    Ok(zones
        .result
        .unwrap_or_default()
        .into_iter()
        .find(|z| z.name.to_ascii_lowercase() == wanted)
        .map(|z| z.id))
}

/// One page of `GET /zones/{id}/dns_records`: its records and the number
/// of pages.
pub fn parse_records(body: &[u8]) -> Result<(Vec<CfRecord>, u32), DnsError> {
    let page: Envelope<Vec<CfRecord>> = envelope(body)?;
    let pages = page.result_info.map_or(1, |i| i.total_pages.max(1));
    Ok((page.result.unwrap_or_default(), pages))
}

/// Records grouped into sets (A, AAAA, TXT only), and their ids.
#[allow(clippy::type_complexity)]
fn group(
    records: &[CfRecord],
) -> (
    Vec<RecordSet>,
    BTreeMap<(String, RecordType), Vec<CfRecord>>,
) {
    let mut ids: BTreeMap<(String, RecordType), Vec<CfRecord>> = BTreeMap::new();
    for r in records {
        if let Some(kind) = RecordType::parse(&r.kind) {
            ids.entry((r.name.trim_end_matches('.').to_ascii_lowercase(), kind))
                .or_default()
                .push(r.clone());
        }
    }
    let sets = ids
        .iter()
        .map(|((name, kind), rs)| RecordSet {
            name: name.clone(),
            kind: *kind,
            ttl: rs.first().map_or(0, |r| r.ttl),
            values: rs
                .iter()
                .map(|r| content_value(*kind, &r.content))
                .collect(),
        })
        .collect();
    (sets, ids)
}

fn content_value(kind: RecordType, content: &str) -> String {
    match kind {
        RecordType::Txt => registry::unquoted(content),
        _ => content.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Delete(String),
    Create(serde_json::Value),
}

/// The API calls for a plan: deletes of values no longer wanted (by id),
/// creates of new values. Pure.
pub fn requests(
    changes: &[Change],
    ids: &BTreeMap<(String, RecordType), Vec<CfRecord>>,
) -> Vec<Step> {
    let mut out = Vec::new();
    for change in changes {
        let (set, keep): (&RecordSet, BTreeSet<String>) = match change {
            Change::Put { new, .. } => (new, new.values.clone()),
            Change::Delete(old) => (old, BTreeSet::new()),
        };
        let existing = ids
            .get(&(set.name.clone(), set.kind))
            .cloned()
            .unwrap_or_default();
        let mut present = BTreeSet::new();
        for r in &existing {
            let value = content_value(set.kind, &r.content);
            if keep.contains(&value) && r.ttl == set.ttl {
                present.insert(value);
            } else {
                out.push(Step::Delete(r.id.clone()));
            }
        }
        if let Change::Put { new, .. } = change {
            for v in new.values.difference(&present) {
                let content = match new.kind {
                    RecordType::Txt => registry::quoted(v),
                    _ => v.clone(),
                };
                let mut body = json!({"type": new.kind.as_str(), "name": new.name, "content": content, "ttl": new.ttl});
                if new.kind != RecordType::Txt {
                    body["proxied"] = json!(false);
                }
                out.push(Step::Create(body));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the "List DNS Records" example of Cloudflare's API
    // reference (fields the provider does not read trimmed).
    const PAGE: &str = r#"{
      "success": true, "errors": [], "messages": [],
      "result": [
        {"id": "023e105f4ecef8ad9ca31a8372d0c353", "zone_id": "z1", "name": "api.example.com", "type": "A",
         "content": "198.51.100.4", "proxiable": true, "proxied": false, "ttl": 60, "comment": null, "tags": []},
        {"id": "023e105f4ecef8ad9ca31a8372d0c354", "zone_id": "z1", "name": "a-api.example.com", "type": "TXT",
         "content": "\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api\"",
         "proxiable": false, "proxied": false, "ttl": 1},
        {"id": "023e105f4ecef8ad9ca31a8372d0c355", "zone_id": "z1", "name": "example.com", "type": "MX",
         "content": "mx.example.com", "priority": 10, "ttl": 3600}
      ],
      "result_info": {"page": 1, "per_page": 1000, "count": 3, "total_count": 1003, "total_pages": 2}
    }"#;

    #[test]
    fn a_page_is_read_and_grouped() {
        let (records, pages) = parse_records(PAGE.as_bytes()).expect("parses");
        assert_eq!((records.len(), pages), (3, 2));
        let (sets, ids) = group(&records);
        assert_eq!(sets.len(), 2);
        assert_eq!(
            sets.iter()
                .find(|s| s.kind == RecordType::Txt)
                .and_then(|s| s.values.iter().next())
                .map(String::as_str),
            Some(
                "heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api"
            )
        );
        assert_eq!(
            ids[&("api.example.com".to_string(), RecordType::A)][0].id,
            "023e105f4ecef8ad9ca31a8372d0c353"
        );
    }

    #[test]
    fn zones_are_matched_by_exact_name_and_failures_are_reported() {
        let ok = r#"{"success":true,"errors":[],"messages":[],"result":[{"id":"023e105f4ecef8ad9ca31a8372d0c353","name":"example.com","status":"active"}],"result_info":{"page":1,"per_page":20,"count":1,"total_count":1,"total_pages":1}}"#;
        assert_eq!(
            parse_zone_id(ok.as_bytes(), "example.com")
                .expect("ok")
                .as_deref(),
            Some("023e105f4ecef8ad9ca31a8372d0c353")
        );
        assert_eq!(parse_zone_id(ok.as_bytes(), "other.com").expect("ok"), None);
        let failed = r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}"#;
        assert!(parse_zone_id(failed.as_bytes(), "example.com").is_err());
    }

    #[test]
    fn a_put_deletes_unwanted_values_and_creates_missing_ones_quoting_txt() {
        let (records, _) = parse_records(PAGE.as_bytes()).expect("parses");
        let (_, ids) = group(&records);
        let put = |name: &str, kind, ttl, v: &[&str]| Change::Put {
            old: None,
            new: RecordSet {
                name: name.into(),
                kind,
                ttl,
                values: v.iter().map(|s| s.to_string()).collect(),
            },
        };
        let steps = requests(
            &[
                put(
                    "api.example.com",
                    RecordType::A,
                    60,
                    &["198.51.100.4", "198.51.100.5"],
                ),
                put(
                    "a-n1.example.com",
                    RecordType::Txt,
                    1,
                    &["heritage=external-dns,external-dns/owner=prod"],
                ),
            ],
            &ids,
        );
        assert_eq!(
            steps,
            vec![
                Step::Create(
                    json!({"type": "A", "name": "api.example.com", "content": "198.51.100.5", "ttl": 60, "proxied": false})
                ),
                Step::Create(
                    json!({"type": "TXT", "name": "a-n1.example.com", "content": "\"heritage=external-dns,external-dns/owner=prod\"", "ttl": 1})
                ),
            ]
        );
        let gone = requests(
            &[Change::Delete(RecordSet {
                name: "api.example.com".into(),
                kind: RecordType::A,
                ttl: 60,
                values: BTreeSet::new(),
            })],
            &ids,
        );
        assert_eq!(
            gone,
            vec![Step::Delete("023e105f4ecef8ad9ca31a8372d0c353".into())]
        );
    }
}
