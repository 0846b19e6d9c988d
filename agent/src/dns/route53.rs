//! `dns.provider: route53`: Route 53's REST API (2013-04-01), SigV4-signed
//! with the instance role like every other AWS call (`cloud::aws`).
//!
//! Listing pages through ListResourceRecordSets (300 per page) with
//! `NextRecordName`/`NextRecordType`; a plan becomes ChangeResourceRecordSets
//! batches (transactional per batch): a put is an UPSERT, a delete names
//! the exact record set as listed (Route 53 demands the same TTL and
//! values). Throttling (`Throttling`, `PriorRequestNotComplete`) is retried
//! by the AWS client's capped backoff, then reported as rate limiting.

use std::collections::BTreeSet;

use super::error::DnsError;
use super::plan::{Change, RecordSet};
use super::registry::RecordType;
use crate::cloud::aws::xml;
use crate::cloud::aws::{AwsError, InstanceSession, ROUTE53};

const PROVIDER: &str = "route53";
const API: &str = "/2013-04-01";
/// ResourceRecord elements per batch: Route 53 allows 1,000 and counts an
/// UPSERT twice; 400 leaves room for both halves of every change.
const BATCH_VALUES: usize = 400;

pub struct Route53Provider {
    session: InstanceSession,
    configured_zone_id: Option<String>,
    /// The id found by name, kept: it does not change under a zone.
    found_zone_id: std::sync::Mutex<Option<(String, String)>>,
}

impl Route53Provider {
    pub fn new(session: InstanceSession, hosted_zone_id: Option<String>) -> Self {
        Route53Provider {
            session,
            configured_zone_id: hosted_zone_id,
            found_zone_id: std::sync::Mutex::new(None),
        }
    }

    async fn zone_id(&self, zone: &str) -> Result<String, DnsError> {
        if let Some(id) = &self.configured_zone_id {
            return Ok(id.trim_start_matches("/hostedzone/").to_string());
        }
        if let Some((z, id)) = self
            .found_zone_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            && z == zone
        {
            return Ok(id);
        }
        let path = format!("{API}/hostedzonesbyname?dnsname={zone}&maxitems=1");
        let text = self
            .call("ListHostedZonesByName", "GET", &path, String::new())
            .await?;
        let id = parse_zone_id(&text, zone)
            .map_err(|e| DnsError::transient(PROVIDER, format!("ListHostedZonesByName: {e}")))?
            .ok_or_else(|| {
                DnsError::config(
                    PROVIDER,
                    "dns.zone",
                    format!("no hosted zone named `{zone}` is visible to this instance's role"),
                )
            })?;
        *self.found_zone_id.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((zone.to_string(), id.clone()));
        Ok(id)
    }

    async fn call(
        &self,
        action: &str,
        method: &'static str,
        path: &str,
        body: String,
    ) -> Result<String, DnsError> {
        let client = self.session.client().await.map_err(|e| classify(&e))?;
        client
            .rest(&ROUTE53, action, method, path, body)
            .await
            .map_err(|e| classify(&e))
    }

    pub async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, DnsError> {
        let id = self.zone_id(zone).await?;
        let mut out = Vec::new();
        let mut next: Option<(String, String)> = None;
        loop {
            let mut path = format!("{API}/hostedzone/{id}/rrset?maxitems=300");
            if let Some((name, kind)) = &next {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
                path.push_str(&format!("&name={encoded}&type={kind}"));
            }
            let text = self
                .call("ListResourceRecordSets", "GET", &path, String::new())
                .await?;
            let page = parse_record_sets(&text).map_err(|e| {
                DnsError::transient(PROVIDER, format!("ListResourceRecordSets: {e}"))
            })?;
            out.extend(page.sets);
            match page.next {
                Some(n) if Some(&n) != next.as_ref() => next = Some(n),
                _ => break,
            }
        }
        Ok(out)
    }

    pub async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), DnsError> {
        let id = self.zone_id(zone).await?;
        for batch in batches(changes) {
            let path = format!("{API}/hostedzone/{id}/rrset");
            self.call(
                "ChangeResourceRecordSets",
                "POST",
                &path,
                change_batch_xml(batch),
            )
            .await?;
        }
        Ok(())
    }
}

/// AWS's errors as DNS errors: rights and names are config faults.
fn classify(e: &AwsError) -> DnsError {
    let message = e.to_string();
    match e {
        AwsError::Api(api) => match api.code.as_str() {
            "AccessDenied"
            | "AccessDeniedException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch" => DnsError::config(
                PROVIDER,
                "dns.route53",
                format!("the instance role may not change this zone: {message}"),
            ),
            "NoSuchHostedZone" => DnsError::config(PROVIDER, "dns.route53.hostedZoneId", message),
            "Throttling" | "ThrottlingException" | "PriorRequestNotComplete" => {
                DnsError::rate_limited(PROVIDER, None, message)
            }
            _ => DnsError::transient(PROVIDER, message),
        },
        AwsError::Config { .. } => DnsError::config(PROVIDER, "cloud.endpoint", message),
        _ => DnsError::transient(PROVIDER, message),
    }
}

/// Groups changes so that no batch carries more than [`BATCH_VALUES`]
/// records (an UPSERT counted twice).
fn batches(changes: &[Change]) -> Vec<&[Change]> {
    let weight = |c: &Change| match c {
        Change::Put { new, .. } => 2 * new.values.len().max(1),
        Change::Delete(old) => old.values.len().max(1),
    };
    let mut out = Vec::new();
    let (mut start, mut load) = (0, 0);
    for (i, c) in changes.iter().enumerate() {
        if load + weight(c) > BATCH_VALUES && i > start {
            out.push(&changes[start..i]);
            (start, load) = (i, 0);
        }
        load += weight(c);
    }
    out.push(&changes[start..]);
    out
}

/// The hosted zone id for `zone` from a ListHostedZonesByName answer
/// (which starts at `zone` but may list the next zones after it).
pub fn parse_zone_id(text: &str, zone: &str) -> Result<Option<String>, String> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, "ListHostedZonesByNameResponse")?;
    let wanted = format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase());
    let zones = xml::child(root, "HostedZones").ok_or("no <HostedZones>")?;
    for z in xml::children(zones, "HostedZone") {
        if xml::required(z, "Name")?.to_ascii_lowercase() == wanted {
            let id = xml::required(z, "Id")?;
            return Ok(Some(id.trim_start_matches("/hostedzone/").to_string()));
        }
    }
    Ok(None)
}

pub struct Page {
    pub sets: Vec<RecordSet>,
    /// Where the next page starts (`NextRecordName`, `NextRecordType`).
    pub next: Option<(String, String)>,
}

/// A ListResourceRecordSets answer: the A, AAAA and TXT sets (alias
/// records and other types are skipped), names without the trailing dot.
pub fn parse_record_sets(text: &str) -> Result<Page, String> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, "ListResourceRecordSetsResponse")?;
    let mut sets = Vec::new();
    if let Some(list) = xml::child(root, "ResourceRecordSets") {
        for set in xml::children(list, "ResourceRecordSet") {
            let Some(kind) = RecordType::parse(xml::required(set, "Type")?) else {
                continue;
            };
            let Some(ttl) = xml::text(set, "TTL") else {
                continue; // an alias record
            };
            let values: BTreeSet<String> = xml::child(set, "ResourceRecords")
                .map(|rr| {
                    xml::children(rr, "ResourceRecord")
                        .filter_map(|r| xml::text(r, "Value"))
                        .map(|v| match kind {
                            RecordType::Txt => super::registry::unquoted(v),
                            _ => v.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            sets.push(RecordSet {
                name: unescape_name(xml::required(set, "Name")?),
                kind,
                ttl: ttl
                    .parse()
                    .map_err(|_| format!("TTL `{ttl}` is not a number"))?,
                values,
            });
        }
    }
    let truncated = xml::text(root, "IsTruncated") == Some("true");
    let next = match (
        truncated,
        xml::text(root, "NextRecordName"),
        xml::text(root, "NextRecordType"),
    ) {
        (true, Some(name), Some(kind)) => Some((name.to_string(), kind.to_string())),
        _ => None,
    };
    Ok(Page { sets, next })
}

/// Route 53 writes `*` and other specials as `\052`-style octal escapes.
fn unescape_name(name: &str) -> String {
    let mut out = String::new();
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let code = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(char::from_u32(code).unwrap_or('?'));
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out.trim_end_matches('.').to_ascii_lowercase()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A ChangeResourceRecordSets request body.
pub fn change_batch_xml(changes: &[Change]) -> String {
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Comment>muster</Comment><Changes>",
    );
    for change in changes {
        let (action, set) = match change {
            Change::Put { new, .. } => ("UPSERT", new),
            Change::Delete(old) => ("DELETE", old),
        };
        body.push_str(&format!(
            "<Change><Action>{action}</Action><ResourceRecordSet><Name>{}.</Name><Type>{}</Type><TTL>{}</TTL><ResourceRecords>",
            escape(&set.name),
            set.kind.as_str(),
            set.ttl
        ));
        for v in &set.values {
            let value = match set.kind {
                RecordType::Txt => super::registry::quoted(v),
                _ => v.clone(),
            };
            body.push_str(&format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                escape(&value)
            ));
        }
        body.push_str("</ResourceRecords></ResourceRecordSet></Change>");
    }
    body.push_str("</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of the ListResourceRecordSets example in the Route 53 API
    // reference, with a TXT in ExternalDNS's format and an alias record.
    const LIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
   <ResourceRecordSets>
      <ResourceRecordSet>
         <Name>example.com.</Name>
         <Type>SOA</Type>
         <TTL>900</TTL>
         <ResourceRecords><ResourceRecord><Value>ns-2048.awsdns-64.net. hostmaster.awsdns.com. 1 7200 900 1209600 86400</Value></ResourceRecord></ResourceRecords>
      </ResourceRecordSet>
      <ResourceRecordSet>
         <Name>API.example.com.</Name>
         <Type>A</Type>
         <TTL>60</TTL>
         <ResourceRecords>
            <ResourceRecord><Value>192.0.2.2</Value></ResourceRecord>
            <ResourceRecord><Value>192.0.2.1</Value></ResourceRecord>
         </ResourceRecords>
      </ResourceRecordSet>
      <ResourceRecordSet>
         <Name>a-api.example.com.</Name>
         <Type>TXT</Type>
         <TTL>300</TTL>
         <ResourceRecords><ResourceRecord><Value>"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api"</Value></ResourceRecord></ResourceRecords>
      </ResourceRecordSet>
      <ResourceRecordSet>
         <Name>\052.example.com.</Name>
         <Type>A</Type>
         <AliasTarget><HostedZoneId>Z2FDTNDATAQYW2</HostedZoneId><DNSName>d1.cloudfront.net.</DNSName><EvaluateTargetHealth>false</EvaluateTargetHealth></AliasTarget>
      </ResourceRecordSet>
   </ResourceRecordSets>
   <IsTruncated>true</IsTruncated>
   <MaxItems>4</MaxItems>
   <NextRecordName>b.example.com.</NextRecordName>
   <NextRecordType>A</NextRecordType>
</ListResourceRecordSetsResponse>"#;

    #[test]
    fn record_sets_are_read_with_their_next_page() {
        let page = parse_record_sets(LIST).expect("parses");
        let got: Vec<String> = page
            .sets
            .iter()
            .map(|s| format!("{} {} {} {:?}", s.name, s.kind.as_str(), s.ttl, s.values))
            .collect();
        assert_eq!(
            got,
            [
                "api.example.com A 60 {\"192.0.2.1\", \"192.0.2.2\"}",
                "a-api.example.com TXT 300 {\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api\"}",
            ]
        );
        assert_eq!(page.next, Some(("b.example.com.".into(), "A".into())));
    }

    #[test]
    fn the_zone_id_is_found_by_exact_name() {
        let text = r#"<ListHostedZonesByNameResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <HostedZones><HostedZone><Id>/hostedzone/Z111111QQQQQQQ</Id><Name>example.com.</Name><CallerReference>r</CallerReference><ResourceRecordSetCount>4</ResourceRecordSetCount></HostedZone></HostedZones>
  <DNSName>example.com</DNSName><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems>
</ListHostedZonesByNameResponse>"#;
        assert_eq!(
            parse_zone_id(text, "example.com")
                .expect("parses")
                .as_deref(),
            Some("Z111111QQQQQQQ")
        );
        assert_eq!(parse_zone_id(text, "other.com").expect("parses"), None);
    }

    #[test]
    fn a_plan_becomes_upserts_and_exact_deletes_with_quoted_txt() {
        let set = |name: &str, kind, ttl, v: &str| RecordSet {
            name: name.into(),
            kind,
            ttl,
            values: [v.to_string()].into(),
        };
        let body = change_batch_xml(&[
            Change::Put {
                old: None,
                new: set(
                    "a-api.example.com",
                    RecordType::Txt,
                    300,
                    "heritage=external-dns,external-dns/owner=prod",
                ),
            },
            Change::Delete(set("old.nodes.example.com", RecordType::A, 60, "10.0.0.9")),
        ]);
        assert!(body.contains("<Change><Action>UPSERT</Action><ResourceRecordSet><Name>a-api.example.com.</Name><Type>TXT</Type><TTL>300</TTL><ResourceRecords><ResourceRecord><Value>&quot;heritage=external-dns,external-dns/owner=prod&quot;</Value>"), "{body}");
        assert!(body.contains("<Action>DELETE</Action><ResourceRecordSet><Name>old.nodes.example.com.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>10.0.0.9</Value>"), "{body}");
    }

    #[test]
    fn batches_stay_under_the_record_limit() {
        let put = |i: usize| Change::Put {
            old: None,
            new: RecordSet {
                name: format!("n{i}.example.com"),
                kind: RecordType::A,
                ttl: 60,
                values: ["10.0.0.1".to_string()].into(),
            },
        };
        let changes: Vec<Change> = (0..1000).map(put).collect();
        let b = batches(&changes);
        assert_eq!(b.len(), 5);
        assert!(b.iter().all(|b| b.len() == 200));
        assert_eq!(unescape_name("\\052.Example.com."), "*.example.com");
    }
}
