//! Compute Engine resources Muster reads: managed instance groups
//! (`instanceGroupManagers.get`, `.listManagedInstances`), instances
//! (`instances.get`) and the metadata server's token. Parsing is pure.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use url::Url;

use super::{AccessToken, GceClient, GceError, parse_failure};
use crate::cloud::timestamp::parse_rfc3339_ms;

/// Where a managed instance group lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigLocation {
    Zone(String),
    Region(String),
}

/// A managed instance group: project, zone or region, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigRef {
    pub project: String,
    pub location: MigLocation,
    pub name: String,
}

impl MigRef {
    /// `{base}projects/P/zones/Z/instanceGroupManagers/N[/extra]`, each part
    /// percent-encoded as one path segment.
    pub fn url(&self, base: &Url, extra: Option<&str>) -> Result<Url, GceError> {
        let (kind, place) = match &self.location {
            MigLocation::Zone(z) => ("zones", z),
            MigLocation::Region(r) => ("regions", r),
        };
        let parts = [self.project.as_str(), place.as_str(), self.name.as_str()];
        if parts.iter().any(|p| p.is_empty()) {
            return Err(GceError::Config {
                what: format!("incomplete instance group reference {self}"),
            });
        }
        let mut url = base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| GceError::Config {
                what: format!("{base} cannot be a base URL"),
            })?;
            path.pop_if_empty().extend([
                "projects",
                parts[0],
                kind,
                parts[1],
                "instanceGroupManagers",
                parts[2],
            ]);
            if let Some(extra) = extra {
                path.push(extra);
            }
        }
        Ok(url)
    }
}

impl std::fmt::Display for MigRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, place) = match &self.location {
            MigLocation::Zone(z) => ("zones", z),
            MigLocation::Region(r) => ("regions", r),
        };
        write!(
            f,
            "projects/{}/{kind}/{place}/instanceGroupManagers/{}",
            self.project, self.name
        )
    }
}

/// The group itself: its target size, and the prefix of the names it
/// gives its instances (`NAME-xxxx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceGroupManager {
    pub name: String,
    pub target_size: u32,
    pub base_instance_name: Option<String>,
}

/// One entry of listManagedInstances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInstance {
    /// The instance's full URL (`…/projects/P/zones/Z/instances/NAME`).
    pub instance_url: String,
    pub name: String,
    pub id: Option<String>,
    /// `RUNNING`, `PROVISIONING`, `STOPPING`, …; absent while it does not exist yet.
    pub instance_status: Option<String>,
    /// `NONE`, `CREATING`, `DELETING`, `RECREATING`, …
    pub current_action: String,
    /// `detailedHealthState` of each autohealing check (`HEALTHY`, `UNHEALTHY`, …).
    pub health_states: Vec<String>,
}

/// One page of listManagedInstances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInstancesPage {
    pub instances: Vec<ManagedInstance>,
    pub next_page_token: Option<String>,
}

/// The parts of an instance Muster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeInstance {
    pub id: String,
    pub name: String,
    pub status: String,
    /// `networkInterfaces[0].networkIP`.
    pub network_ip: Option<Ipv4Addr>,
    pub created_at_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IgmJson {
    name: Option<String>,
    target_size: Option<u32>,
    base_instance_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListJson {
    #[serde(default)]
    managed_instances: Vec<ManagedJson>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagedJson {
    instance: Option<String>,
    id: Option<String>,
    name: Option<String>,
    instance_status: Option<String>,
    current_action: Option<String>,
    #[serde(default)]
    instance_health: Vec<HealthJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthJson {
    detailed_health_state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceJson {
    id: Option<String>,
    name: Option<String>,
    status: Option<String>,
    creation_timestamp: Option<String>,
    #[serde(default)]
    network_interfaces: Vec<NicJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NicJson {
    #[serde(rename = "networkIP")]
    network_ip: Option<String>,
}

fn json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("unexpected JSON: {e}"))
}

/// Parses `instanceGroupManagers.get` (pure).
pub fn parse_instance_group_manager(text: &str) -> Result<InstanceGroupManager, String> {
    let igm: IgmJson = json(text)?;
    Ok(InstanceGroupManager {
        name: igm.name.ok_or("no name")?,
        target_size: igm.target_size.ok_or("no targetSize")?,
        base_instance_name: igm.base_instance_name.filter(|n| !n.is_empty()),
    })
}

/// Parses `instanceGroupManagers.listManagedInstances` (pure).
pub fn parse_list_managed_instances(text: &str) -> Result<ManagedInstancesPage, String> {
    let list: ListJson = json(text)?;
    let mut instances = Vec::with_capacity(list.managed_instances.len());
    for (n, m) in list.managed_instances.into_iter().enumerate() {
        let url = m
            .instance
            .ok_or_else(|| format!("managedInstances[{n}] has no instance URL"))?;
        let name = m
            .name
            .or_else(|| url.rsplit('/').next().map(str::to_string))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("managedInstances[{n}] has no name"))?;
        instances.push(ManagedInstance {
            instance_url: url,
            name,
            id: m.id,
            instance_status: m.instance_status,
            current_action: m.current_action.unwrap_or_else(|| "NONE".into()),
            health_states: m
                .instance_health
                .into_iter()
                .filter_map(|h| h.detailed_health_state)
                .collect(),
        });
    }
    Ok(ManagedInstancesPage {
        instances,
        next_page_token: list.next_page_token.filter(|t| !t.is_empty()),
    })
}

/// Parses `instances.get` (pure).
pub fn parse_instance(text: &str) -> Result<ComputeInstance, String> {
    instance_from_json(json(text)?)
}

/// One page of `instances.aggregatedList` as [`ComputeInstance`]s (pure).
pub fn parse_aggregated_instances(
    text: &str,
) -> Result<(Vec<ComputeInstance>, Option<String>), String> {
    let (instances, next) = super::aggregated_instances::<InstanceJson>(text)?;
    let instances = instances
        .into_iter()
        .map(instance_from_json)
        .collect::<Result<_, _>>()?;
    Ok((instances, next))
}

fn instance_from_json(i: InstanceJson) -> Result<ComputeInstance, String> {
    let name = i.name.ok_or("no name")?;
    let network_ip = match i
        .network_interfaces
        .first()
        .and_then(|n| n.network_ip.as_deref())
    {
        None => None,
        Some(ip) => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| format!("instance {name}: networkIP {ip:?} is not an IPv4 address"))?,
        ),
    };
    let created_at_ms = match i.creation_timestamp.as_deref() {
        None => None,
        Some(t) => Some(
            parse_rfc3339_ms(t).map_err(|e| format!("instance {name}: creationTimestamp: {e}"))?,
        ),
    };
    Ok(ComputeInstance {
        id: i.id.ok_or_else(|| format!("instance {name}: no id"))?,
        status: i.status.unwrap_or_default(),
        network_ip,
        created_at_ms,
        name,
    })
}

/// Parses the metadata server's token answer into the token and its
/// lifetime (pure). Errors never quote the answer: it holds the token.
pub fn parse_token(text: &str) -> Result<(AccessToken, Duration), String> {
    #[derive(Deserialize)]
    struct TokenJson {
        access_token: Option<String>,
        expires_in: Option<u64>,
        token_type: Option<String>,
    }
    let t: TokenJson = serde_json::from_str(text).map_err(|e| {
        format!(
            "not the expected JSON object (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if let Some(kind) = t.token_type.as_deref()
        && !kind.eq_ignore_ascii_case("Bearer")
    {
        return Err(format!("token_type is {kind:?}, not Bearer"));
    }
    let token = t
        .access_token
        .filter(|s| !s.is_empty())
        .ok_or("no access_token")?;
    let lifetime = Duration::from_secs(t.expires_in.ok_or("no expires_in")?);
    Ok((AccessToken(token), lifetime))
}

/// Reads Google's error document: `(reason, message)`.
pub fn parse_error(body: &[u8]) -> Option<(Option<String>, String)> {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<Detail>,
        status: Option<String>,
    }
    #[derive(Deserialize)]
    struct Detail {
        reason: Option<String>,
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    let reason = outer
        .error
        .errors
        .into_iter()
        .find_map(|d| d.reason)
        .or(outer.error.status);
    Some((
        reason,
        outer.error.message.unwrap_or_else(|| "(no message)".into()),
    ))
}

/// Turns an instance URL from listManagedInstances into the same resource
/// under our API base: only `projects/P/zones/Z/instances/NAME` is accepted,
/// so a strange URL can never send the token elsewhere.
pub fn instance_api_url(base: &Url, instance_url: &str) -> Result<Url, String> {
    let parsed =
        Url::parse(instance_url).map_err(|e| format!("{instance_url:?} is not a URL: {e}"))?;
    let segments: Vec<&str> = parsed
        .path_segments()
        .map(|s| s.collect())
        .unwrap_or_default();
    let start = segments
        .iter()
        .position(|s| *s == "projects")
        .ok_or("no projects/ in the URL")?;
    let tail = &segments[start..];
    let ok = tail.len() == 6
        && tail[2] == "zones"
        && tail[4] == "instances"
        && [tail[1], tail[3], tail[5]]
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..");
    if !ok {
        return Err(format!(
            "{instance_url:?} is not a …/projects/P/zones/Z/instances/NAME URL"
        ));
    }
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| format!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend(tail);
    Ok(url)
}

/// `instanceGroupManagers.get`.
pub async fn get_instance_group_manager(
    client: &GceClient,
    mig: &MigRef,
) -> Result<InstanceGroupManager, GceError> {
    let call = "instanceGroupManagers.get";
    let url = mig.url(client.api_base(), None)?;
    let text = client.call(Method::GET, call, &url).await?;
    parse_instance_group_manager(&text).map_err(|e| parse_failure(call, &url, e))
}

/// `instanceGroupManagers.listManagedInstances`, every page.
pub async fn list_managed_instances(
    client: &GceClient,
    mig: &MigRef,
) -> Result<Vec<ManagedInstance>, GceError> {
    let base = mig.url(client.api_base(), Some("listManagedInstances"))?;
    let call = "instanceGroupManagers.listManagedInstances";
    super::all_pages(client, Method::POST, call, &base, |text| {
        parse_list_managed_instances(text).map(|p| (p.instances, p.next_page_token))
    })
    .await
}

/// The instances of `project` named as a managed instance group names its
/// own (`BASE-xxxx`), in every zone: `instances.aggregatedList` filtered
/// by name, every page (500 instances a page). One or two calls where
/// `instances.get` per member made a listing of n machines n calls, and a
/// fleet's listings n² (issue 18). The answer may lack members the group
/// named otherwise (stateful names) and hold instances of another group
/// with the same prefix: callers match it against the member list.
pub async fn list_instances_named(
    client: &GceClient,
    project: &str,
    base_instance_name: &str,
) -> Result<Vec<ComputeInstance>, GceError> {
    let call = "instances.aggregatedList";
    // RE2, matched against the whole name; group names are [a-z0-9-].
    let filter = format!("name eq \"{base_instance_name}-.+\"");
    let base = super::aggregated_instances_url(
        client,
        project,
        Some(&filter),
        "items/*/instances(id,name,status,creationTimestamp,networkInterfaces(networkIP)),nextPageToken",
    )?;
    super::all_pages(client, Method::GET, call, &base, parse_aggregated_instances).await
}

/// `instances.get` for an instance URL; `None` when it no longer (or not
/// yet) exists.
pub async fn get_instance(
    client: &GceClient,
    instance_url: &str,
) -> Result<Option<ComputeInstance>, GceError> {
    let call = "instances.get";
    let url =
        instance_api_url(client.api_base(), instance_url).map_err(|cause| GceError::Parse {
            call: "instanceGroupManagers.listManagedInstances".into(),
            url: instance_url.into(),
            cause,
        })?;
    match client.call(Method::GET, call, &url).await {
        Ok(text) => parse_instance(&text)
            .map(Some)
            .map_err(|e| parse_failure(call, &url, e)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::test_fixture("gce", name)
    }

    #[test]
    fn aggregated_instances_across_zones_skip_warnings() {
        let one: serde_json::Value = serde_json::from_str(&fixture("instance.json")).expect("json");
        let mut other = one.clone();
        other["id"] = "42".into();
        other["name"] = "muster-cp-b000".into();
        let page = serde_json::json!({
            "items": {
                "zones/us-central1-a": {"instances": [one]},
                "zones/us-central1-b": {"instances": [other]},
                "zones/us-east1-b": {"warning": {"code": "NO_RESULTS_ON_PAGE"}},
            },
            "nextPageToken": "p2",
        });
        let (all, next) = parse_aggregated_instances(&page.to_string()).expect("parses");
        let got: Vec<(&str, &str, Option<Ipv4Addr>)> = all
            .iter()
            .map(|i| (i.id.as_str(), i.name.as_str(), i.network_ip))
            .collect();
        let ip = Some(Ipv4Addr::new(10, 128, 0, 2));
        assert_eq!(
            got,
            [
                ("1974815549671473983", "muster-cp-9j4g", ip),
                ("42", "muster-cp-b000", ip)
            ]
        );
        assert_eq!(next.as_deref(), Some("p2"));
        assert!(
            parse_aggregated_instances(r#"{"items": {"zones/a": {"instances": [{"name": "x"}]}}}"#)
                .is_err(),
            "no id"
        );
    }

    #[test]
    fn managed_instances() {
        let page =
            parse_list_managed_instances(&fixture("list_managed_instances.json")).expect("parses");
        assert_eq!(page.next_page_token.as_deref(), Some("CkQI2r3_page2"));
        let summary: Vec<(&str, Option<&str>, &str)> = page
            .instances
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.instance_status.as_deref(),
                    m.current_action.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("muster-cp-9j4g", Some("RUNNING"), "NONE"),
                ("muster-cp-c63g", Some("RUNNING"), "NONE"),
                ("muster-cp-dck1", Some("PROVISIONING"), "CREATING"),
                ("muster-cp-f1hm", Some("STOPPING"), "DELETING"),
            ]
        );
        assert_eq!(page.instances[1].health_states, ["UNHEALTHY"]);
        assert_eq!(page.instances[2].id, None);
        assert!(
            parse_list_managed_instances("{}")
                .expect("empty group")
                .instances
                .is_empty()
        );
        assert!(parse_list_managed_instances(r#"{"managedInstances":[{"id":"1"}]}"#).is_err());
    }

    #[test]
    fn group_instance_and_token() {
        let igm =
            parse_instance_group_manager(&fixture("instance_group_manager.json")).expect("parses");
        assert_eq!(
            igm,
            InstanceGroupManager {
                name: "muster-cp".into(),
                target_size: 3,
                base_instance_name: Some("muster-cp".into()),
            }
        );

        let i = parse_instance(&fixture("instance.json")).expect("parses");
        assert_eq!(i.id, "1974815549671473983");
        assert_eq!(i.network_ip, Some(Ipv4Addr::new(10, 128, 0, 2)));
        // 05:10:11.123-08:00 = 13:10:11.123Z; date -u -d 2024-03-04T13:10:11Z +%s => 1709557811
        assert_eq!(i.created_at_ms, Some(1_709_557_811_123));
        assert_eq!(i.status, "RUNNING");

        let (token, lifetime) = parse_token(&fixture("doc_token.json")).expect("parses");
        assert_eq!(token, AccessToken::new("YOUR_ACCESS_TOKEN"));
        assert_eq!(lifetime, Duration::from_secs(3599));
        let e = parse_token(r#"{"access_token": ["ya29.secret"]}"#).expect_err("wrong type");
        assert!(e.contains("column") && !e.contains("ya29"), "{e}");
        assert!(parse_token(r#"{"access_token":"x","expires_in":1,"token_type":"MAC"}"#).is_err());
    }

    #[test]
    fn errors_and_urls() {
        let (reason, message) =
            parse_error(fixture("error_not_found.json").as_bytes()).expect("error doc");
        assert_eq!(reason.as_deref(), Some("notFound"));
        assert!(message.contains("instanceGroupManagers/nope' was not found"));
        assert_eq!(parse_error(b"<html>"), None);

        let base = Url::parse("http://127.0.0.1:9/compute/v1/").expect("url");
        let u = instance_api_url(
            &base,
            "https://www.googleapis.com/compute/v1/projects/example-project/zones/us-central1-a/instances/muster-cp-9j4g",
        )
        .expect("maps");
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/compute/v1/projects/example-project/zones/us-central1-a/instances/muster-cp-9j4g"
        );
        for bad in [
            "https://evil.example/projects/p/zones/z/instances/../../../../steal",
            "https://x/projects/p/global/networks/default",
            "not a url",
        ] {
            assert!(instance_api_url(&base, bad).is_err(), "{bad}");
        }

        let mig = MigRef {
            project: "p".into(),
            location: MigLocation::Region("us-central1".into()),
            name: "a b".into(),
        };
        assert_eq!(
            mig.url(&base, Some("listManagedInstances"))
                .expect("url")
                .as_str(),
            "http://127.0.0.1:9/compute/v1/projects/p/regions/us-central1/instanceGroupManagers/a%20b/listManagedInstances"
        );
    }
}
