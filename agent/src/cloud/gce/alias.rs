//! Alias IP ranges on instances' network interfaces, and the zonal
//! operations that change them: `instances.get` and
//! `instances.aggregatedList` read them, `instances.updateNetworkInterface`
//! (PATCH, guarded by the interface's fingerprint) writes them,
//! `zoneOperations.get` waits for the change. Parsing and the edits are pure.
//!
//! Google's rules this follows: a range can be on one interface at a time
//! (adding it while another instance has it fails), a stopped instance keeps
//! its ranges, an update must carry the interface's current `fingerprint`
//! (a stale one is refused with 412), and the update returns an Operation
//! that is done only when its `status` is `DONE` (with `error` if it failed).

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{GceClient, GceError, parse_failure};

/// An instance by project, zone and name (what the API's paths take).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceRef {
    pub project: String,
    pub zone: String,
    pub name: String,
}

impl InstanceRef {
    /// `{base}projects/P/zones/Z/instances/NAME[/extra]`, each part one
    /// percent-encoded path segment.
    pub fn url(&self, base: &Url, extra: Option<&str>) -> Result<Url, GceError> {
        let mut segments = vec!["instances", self.name.as_str()];
        segments.extend(extra);
        zonal_url(base, &self.project, &self.zone, &segments)
    }
}

impl std::fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "projects/{}/zones/{}/instances/{}",
            self.project, self.zone, self.name
        )
    }
}

fn zonal_url(base: &Url, project: &str, zone: &str, rest: &[&str]) -> Result<Url, GceError> {
    if [project, zone].iter().chain(rest).any(|p| p.is_empty()) {
        return Err(GceError::Config {
            what: format!("incomplete resource path projects/{project}/zones/{zone}/{rest:?}"),
        });
    }
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| GceError::Config {
            what: format!("{base} cannot be a base URL"),
        })?
        .pop_if_empty()
        .extend(["projects", project, "zones", zone])
        .extend(rest);
    Ok(url)
}

/// One alias IP range, as the API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasRange {
    pub ip_cidr_range: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnetwork_range_name: Option<String>,
}

impl AliasRange {
    /// The range for exactly `ip` (a /32).
    pub fn single(ip: Ipv4Addr) -> AliasRange {
        AliasRange {
            ip_cidr_range: format!("{ip}/32"),
            subnetwork_range_name: None,
        }
    }

    /// Whether this range is exactly `ip`: Google writes `/32` ranges back
    /// with the suffix, but accepts (and older answers show) a bare address.
    pub fn is(&self, ip: Ipv4Addr) -> bool {
        let range = self.ip_cidr_range.trim();
        let addr = range.strip_suffix("/32").unwrap_or(range);
        addr.parse::<Ipv4Addr>() == Ok(ip)
    }
}

/// One network interface: its name (`nic0`), fingerprint and alias ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub fingerprint: String,
    pub network_ip: Option<Ipv4Addr>,
    pub alias_ranges: Vec<AliasRange>,
}

impl Nic {
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        self.alias_ranges.iter().any(|r| r.is(ip))
    }

    /// The ranges with `ip` added (unchanged when it is there).
    pub fn with(&self, ip: Ipv4Addr) -> Vec<AliasRange> {
        let mut ranges = self.alias_ranges.clone();
        if !self.holds(ip) {
            ranges.push(AliasRange::single(ip));
        }
        ranges
    }

    /// The ranges without `ip`; every other range is kept as it was.
    pub fn without(&self, ip: Ipv4Addr) -> Vec<AliasRange> {
        self.alias_ranges
            .iter()
            .filter(|r| !r.is(ip))
            .cloned()
            .collect()
    }
}

/// An instance with its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNics {
    pub instance: InstanceRef,
    /// `RUNNING`, `TERMINATED` (stopped; it keeps its ranges), …
    pub status: String,
    pub nics: Vec<Nic>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceJson {
    name: Option<String>,
    zone: Option<String>,
    status: Option<String>,
    #[serde(default)]
    network_interfaces: Vec<NicJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NicJson {
    name: Option<String>,
    fingerprint: Option<String>,
    #[serde(rename = "networkIP")]
    network_ip: Option<String>,
    #[serde(default)]
    alias_ip_ranges: Vec<AliasRange>,
}

/// The zone's name from a zone URL or path (`…/zones/us-central1-a`, as
/// resources and the metadata server write it); `None` when empty.
pub fn zone_name(zone: &str) -> Option<String> {
    let name = zone
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(zone);
    (!name.is_empty()).then(|| name.to_string())
}

fn instance_from_json(i: InstanceJson, project: &str) -> Result<InstanceNics, String> {
    let name = i
        .name
        .filter(|n| !n.is_empty())
        .ok_or("instance without a name")?;
    let zone = i
        .zone
        .as_deref()
        .and_then(zone_name)
        .ok_or_else(|| format!("instance {name}: no zone"))?;
    let mut nics = Vec::with_capacity(i.network_interfaces.len());
    for (n, nic) in i.network_interfaces.into_iter().enumerate() {
        let nic_name = nic.name.unwrap_or_else(|| format!("nic{n}"));
        let network_ip = match nic.network_ip.as_deref() {
            None => None,
            Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                format!("instance {name}: {nic_name}: networkIP {ip:?} is not an IPv4 address")
            })?),
        };
        nics.push(Nic {
            fingerprint: nic
                .fingerprint
                .ok_or_else(|| format!("instance {name}: {nic_name} has no fingerprint"))?,
            name: nic_name,
            network_ip,
            alias_ranges: nic.alias_ip_ranges,
        });
    }
    Ok(InstanceNics {
        instance: InstanceRef {
            project: project.to_string(),
            zone,
            name,
        },
        status: i.status.unwrap_or_default(),
        nics,
    })
}

fn json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("unexpected JSON: {e}"))
}

/// Parses `instances.get` (pure).
pub fn parse_instance(text: &str, project: &str) -> Result<InstanceNics, String> {
    instance_from_json(json(text)?, project)
}

/// One page of `instances.aggregatedList` with each instance's
/// interfaces (pure).
pub fn parse_aggregated(
    text: &str,
    project: &str,
) -> Result<(Vec<InstanceNics>, Option<String>), String> {
    let (instances, next) = super::aggregated_instances::<InstanceJson>(text)?;
    let instances = instances
        .into_iter()
        .map(|i| instance_from_json(i, project))
        .collect::<Result<_, _>>()?;
    Ok((instances, next))
}

/// A zonal operation as far as waiting for it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: String,
    pub zone: String,
    /// `PENDING`, `RUNNING` or `DONE`.
    pub status: String,
    /// Set when a `DONE` operation failed.
    pub error: Option<OperationFault>,
}

/// Why an operation failed: the HTTP status it stands for, the first
/// error's code (`IP_IN_USE_BY_ANOTHER_RESOURCE`, …) and the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationFault {
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
}

/// Parses an Operation (pure).
pub fn parse_operation(text: &str) -> Result<Operation, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OpJson {
        name: Option<String>,
        zone: Option<String>,
        status: Option<String>,
        error: Option<ErrorJson>,
        http_error_status_code: Option<u16>,
        http_error_message: Option<String>,
    }
    #[derive(Deserialize)]
    struct ErrorJson {
        #[serde(default)]
        errors: Vec<DetailJson>,
    }
    #[derive(Deserialize)]
    struct DetailJson {
        code: Option<String>,
        message: Option<String>,
    }
    let op: OpJson = json(text)?;
    let name = op
        .name
        .filter(|n| !n.is_empty())
        .ok_or("operation without a name")?;
    let zone = op
        .zone
        .as_deref()
        .and_then(zone_name)
        .ok_or_else(|| format!("operation {name} has no zone"))?;
    let error = op.error.map(|e| {
        let code = e.errors.iter().find_map(|d| d.code.clone());
        let messages: Vec<String> = e.errors.into_iter().filter_map(|d| d.message).collect();
        let message = if messages.is_empty() {
            op.http_error_message
                .clone()
                .unwrap_or_else(|| "(no message)".into())
        } else {
            messages.join("; ")
        };
        OperationFault {
            status: op.http_error_status_code.unwrap_or(400),
            code,
            message,
        }
    });
    Ok(Operation {
        name,
        zone,
        status: op.status.unwrap_or_default(),
        error,
    })
}

/// A fresh request id (a random UUID, as `requestId` wants): a retried
/// update with the same id is done once.
fn request_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // SystemRandom only fails when the OS has no randomness at all; a
    // zero id is then still a valid UUID shape, just not deduplicating.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `instances.get`, interfaces only.
pub async fn get(client: &GceClient, instance: &InstanceRef) -> Result<InstanceNics, GceError> {
    let call = "instances.get";
    let url = instance.url(client.api_base(), None)?;
    let text = client.call(Method::GET, call, &url).await?;
    parse_instance(&text, &instance.project).map_err(|e| parse_failure(call, &url, e))
}

/// Every instance of `project` with its interfaces (`instances.aggregatedList`,
/// all pages, only the fields read here).
pub async fn list_all(client: &GceClient, project: &str) -> Result<Vec<InstanceNics>, GceError> {
    let call = "instances.aggregatedList";
    let base = super::aggregated_instances_url(
        client,
        project,
        None,
        "items/*/instances(name,zone,status,networkInterfaces(name,fingerprint,networkIP,aliasIpRanges)),nextPageToken",
    )?;
    super::all_pages(client, Method::GET, call, &base, |text| {
        parse_aggregated(text, project)
    })
    .await
}

/// `instances.updateNetworkInterface`: sets `nic`'s alias ranges to
/// `ranges`, guarded by the fingerprint read with them. Returns the
/// operation to wait for.
pub async fn update(
    client: &GceClient,
    instance: &InstanceRef,
    nic: &Nic,
    ranges: &[AliasRange],
) -> Result<Operation, GceError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        alias_ip_ranges: &'a [AliasRange],
        fingerprint: &'a str,
    }
    let call = "instances.updateNetworkInterface";
    let mut url = instance.url(client.api_base(), Some("updateNetworkInterface"))?;
    url.query_pairs_mut()
        .append_pair("networkInterface", &nic.name)
        .append_pair("requestId", &request_id());
    let body = serde_json::to_string(&Body {
        alias_ip_ranges: ranges,
        fingerprint: &nic.fingerprint,
    })
    .map_err(|e| GceError::Config {
        what: format!("cannot encode the alias ranges: {e}"),
    })?;
    let text = client
        .call_with_body(Method::PATCH, call, &url, Some(body))
        .await?;
    parse_operation(&text).map_err(|e| parse_failure(call, &url, e))
}

/// Polls `zoneOperations.get` until `op` is done (every 250 ms, doubling to
/// 2 s), for at most `limit`. A failed operation becomes
/// [`GceError::Api`] named after `call`, with the operation's status and code.
pub async fn wait(
    client: &GceClient,
    project: &str,
    mut op: Operation,
    call: &str,
    limit: Duration,
) -> Result<(), GceError> {
    let url = zonal_url(
        client.api_base(),
        project,
        &op.zone,
        &["operations", &op.name],
    )?;
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        if op.status == "DONE" {
            return match op.error {
                None => Ok(()),
                Some(f) => Err(GceError::Api {
                    call: format!("{call} (operation {})", op.name),
                    url: url.to_string(),
                    status: f.status,
                    reason: f.code,
                    message: f.message,
                    attempts: 1,
                    elapsed: started.elapsed(),
                }),
            };
        }
        if started.elapsed() >= limit {
            return Err(GceError::Unfinished {
                call: call.to_string(),
                operation: op.name,
                url: url.to_string(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
        let text = client.call(Method::GET, "zoneOperations.get", &url).await?;
        op = parse_operation(&text).map_err(|e| parse_failure("zoneOperations.get", &url, e))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::test_fixture("gce", name)
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 100);

    #[test]
    fn an_instance_with_alias_ranges() {
        let i = parse_instance(&fixture("instance_alias.json"), "example-project").expect("parses");
        assert_eq!(
            i.instance.to_string(),
            "projects/example-project/zones/us-central1-a/instances/muster-cp-c63g"
        );
        assert_eq!(i.status, "RUNNING");
        let nic = &i.nics[0];
        assert_eq!(nic.name, "nic0");
        assert_eq!(nic.fingerprint, "f3B1sS2tVe4=");
        assert!(nic.holds(VIP));
        assert_eq!(nic.without(VIP).len(), 1, "the pod range stays");
        assert_eq!(
            nic.without(VIP)[0].subnetwork_range_name.as_deref(),
            Some("pods")
        );
        assert_eq!(nic.with(VIP), nic.alias_ranges, "already there");
        let other = Ipv4Addr::new(10, 128, 0, 101);
        assert_eq!(nic.with(other).last(), Some(&AliasRange::single(other)));
        // The plain instance fixture has no ranges.
        let plain = parse_instance(&fixture("instance.json"), "p").expect("parses");
        assert!(plain.nics[0].alias_ranges.is_empty() && !plain.nics[0].holds(VIP));
        assert!(
            parse_instance(
                r#"{"name":"x","zone":"z","networkInterfaces":[{"name":"nic0"}]}"#,
                "p"
            )
            .expect_err("no fingerprint")
            .contains("fingerprint")
        );
    }

    #[test]
    fn bare_and_suffixed_ranges_are_the_same_address() {
        let r = |s: &str| AliasRange {
            ip_cidr_range: s.into(),
            subnetwork_range_name: None,
        };
        assert!(r("10.128.0.100/32").is(VIP) && r("10.128.0.100").is(VIP));
        assert!(!r("10.128.0.100/24").is(VIP) && !r("10.128.0.10").is(VIP));
    }

    #[test]
    fn aggregated_pages_skip_warning_zones() {
        let (all, next) =
            parse_aggregated(&fixture("aggregated_instances.json"), "example-project")
                .expect("parses");
        let names: Vec<(&str, &str)> = all
            .iter()
            .map(|i| (i.instance.zone.as_str(), i.instance.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("us-central1-a", "muster-cp-9j4g"),
                ("us-central1-b", "muster-cp-x2kq")
            ]
        );
        assert_eq!(all[1].status, "TERMINATED");
        assert!(all[1].nics[0].holds(VIP));
        assert_eq!(next.as_deref(), Some("agg-page-2"));
    }

    #[test]
    fn operations_running_done_and_failed() {
        let running = parse_operation(&fixture("operation_running.json")).expect("parses");
        assert_eq!(running.status, "RUNNING");
        assert_eq!(running.zone, "us-central1-a");
        assert_eq!(running.error, None);
        let failed = parse_operation(&fixture("operation_failed.json")).expect("parses");
        assert_eq!(failed.status, "DONE");
        let fault = failed.error.expect("error");
        assert_eq!(fault.status, 400);
        assert_eq!(fault.code.as_deref(), Some("IP_IN_USE_BY_ANOTHER_RESOURCE"));
        assert!(fault.message.contains("10.128.0.100"), "{}", fault.message);
        assert!(parse_operation("{}").is_err());
    }

    #[test]
    fn request_ids_are_v4_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn paths_are_segments() {
        let base = Url::parse("http://127.0.0.1:9/compute/v1/").expect("url");
        let i = InstanceRef {
            project: "p".into(),
            zone: "us-central1-a".into(),
            name: "a/b".into(),
        };
        assert_eq!(
            i.url(&base, Some("updateNetworkInterface"))
                .expect("url")
                .as_str(),
            "http://127.0.0.1:9/compute/v1/projects/p/zones/us-central1-a/instances/a%2Fb/updateNetworkInterface"
        );
        let empty = InstanceRef {
            name: String::new(),
            ..i
        };
        assert!(empty.url(&base, None).is_err());
    }
}
