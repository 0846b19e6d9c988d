//! A stateful fake of the Compute Engine API and metadata server, for the
//! GCE mover and managed-instance-group discovery (no GCE emulator exists).
//! It keeps instances, one zonal managed instance group and operations, and
//! enforces the documented contracts the agent relies on:
//!
//! * `instances.updateNetworkInterface` (PATCH): the body must carry the
//!   interface's current `fingerprint` (none → 400, stale → 412
//!   `conditionNotMet` "Invalid fingerprint."), and may not add and remove
//!   ranges in one request (400, the limitation Terraform documents). It
//!   answers with a RUNNING operation; the change happens when the operation
//!   is done (`op_delay` later), and fails then with
//!   `IP_IN_USE_BY_ANOTHER_RESOURCE` if another interface has the range.
//! * `zoneOperations.get`: RUNNING until done, then DONE with `error` and
//!   `httpErrorStatusCode` on failure.
//! * A stopped instance (`TERMINATED`) keeps its ranges.
//! * `instances.aggregatedList` pages (`page_size` instances per page); its
//!   `filter` is ignored: every instance comes back, callers match by id.
//! * The metadata server answers for the instance whose address sent the
//!   request (agents in namespaces), or for `metadata_for` when set.
//!
//! Shapes follow the Compute API reference (see tests/fixtures/gce/README.md).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake_http::{FakeServer, Request, Response};

/// A Compute client for a fake served at `server`: the API under
/// `compute/v1/`, the metadata server at the root, quick retries.
pub fn gce_client(server: &FakeServer) -> muster::cloud::gce::GceClient {
    use muster::cloud::gce::{GceClient, GceOptions};
    GceClient::new(GceOptions {
        api_base: server.base.join("compute/v1/").expect("url"),
        metadata_base: server.base.clone(),
        static_token: None,
        backoff: muster::retry::Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            total: Duration::from_secs(5),
        },
        request_timeout: Duration::from_secs(5),
    })
    .expect("client")
}

pub const PROJECT: &str = "muster-test";
pub const ZONE: &str = "us-central1-a";
pub const GROUP: &str = "muster-cp";
const TOKEN: &str = "ya29.fake-compute-token";

#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub name: String,
    pub id: u64,
    pub zone: String,
    pub ip: Ipv4Addr,
    /// `RUNNING` or `TERMINATED`.
    pub status: String,
    pub fingerprint: u64,
    /// `(ipCidrRange, subnetworkRangeName)`.
    pub aliases: Vec<(String, Option<String>)>,
    pub in_group: bool,
}

impl FakeInstance {
    fn holds(&self, range: &str) -> bool {
        self.aliases.iter().any(|(r, _)| same_range(r, range))
    }
}

fn same_range(a: &str, b: &str) -> bool {
    let bare = |s: &str| s.trim().trim_end_matches("/32").to_string();
    bare(a) == bare(b)
}

#[derive(Debug)]
struct FakeOp {
    name: String,
    zone: String,
    instance: String,
    done_at: Instant,
    aliases: Vec<(String, Option<String>)>,
    outcome: Option<Result<(), (u16, &'static str, String)>>,
}

/// What the fake holds; tests read and change it through [`FakeCompute`].
#[derive(Debug)]
pub struct ComputeState {
    pub instances: Vec<FakeInstance>,
    pub target_size: u32,
    pub op_delay: Duration,
    pub page_size: usize,
    pub metadata_for: Option<String>,
    /// Bumps this instance's fingerprint just before its next PATCH is
    /// checked (another writer got there first).
    pub race_fingerprint_of: Option<String>,
    /// Once, right after an eviction of this range completes, puts it back
    /// on this instance (a stale holder that re-appears).
    pub readd_after_eviction: Option<(String, String)>,
    /// Refuses every update with this status, reason and message (IAM).
    pub refuse_updates: Option<(u16, &'static str, String)>,
    /// `(method, path)` of every API call, in order.
    pub calls: Vec<(String, String)>,
    /// `listManagedInstances` answers as the group was this long ago (a
    /// group API lagging behind: stale discovery).
    pub list_lag: Duration,
    /// The group's member list each time it changed, with when.
    group_history: Vec<(Instant, Vec<Value>)>,
    ops: Vec<FakeOp>,
    next_id: u64,
}

/// The fake, shareable between the server and the test.
#[derive(Clone)]
pub struct FakeCompute {
    state: Arc<Mutex<ComputeState>>,
}

impl FakeCompute {
    /// `instances`: `(name, ip)`, all in the group, running, no ranges.
    pub fn new(instances: &[(&str, Ipv4Addr)]) -> FakeCompute {
        let mut state = ComputeState {
            instances: Vec::new(),
            target_size: instances.len() as u32,
            op_delay: Duration::from_millis(300),
            page_size: 500,
            metadata_for: None,
            race_fingerprint_of: None,
            readd_after_eviction: None,
            refuse_updates: None,
            calls: Vec::new(),
            list_lag: Duration::ZERO,
            group_history: Vec::new(),
            ops: Vec::new(),
            next_id: 1_000_000_000_000_000_001,
        };
        for (name, ip) in instances {
            state.add(name, ZONE, *ip, true);
        }
        FakeCompute {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Runs `f` on the state after finishing every due operation.
    pub fn with<T>(&self, f: impl FnOnce(&mut ComputeState) -> T) -> T {
        let mut s = self.state.lock().expect("lock");
        let now = Instant::now();
        s.settle(now);
        let out = f(&mut s);
        s.note_group(now);
        out
    }

    /// Names of the instances whose interface lists `ip`.
    pub fn alias_holders(&self, ip: Ipv4Addr) -> Vec<String> {
        self.with(|s| {
            s.instances
                .iter()
                .filter(|i| i.holds(&ip.to_string()))
                .map(|i| i.name.clone())
                .collect()
        })
    }

    /// Serves the fake on 127.0.0.1; the API is at `base/compute/v1/`.
    pub async fn serve(&self) -> FakeServer {
        let me = self.clone();
        FakeServer::start(move |_, r| me.answer(r)).await
    }

    /// Serves on `0.0.0.0` of the current thread's network namespace.
    pub async fn serve_any(&self) -> FakeServer {
        let me = self.clone();
        FakeServer::start_on("0.0.0.0:0", move |_, r| me.answer(r)).await
    }

    fn answer(&self, r: &Request) -> Response {
        let mut s = self.state.lock().expect("lock");
        let now = Instant::now();
        s.settle(now);
        s.note_group(now);
        let path = r.target.split('?').next().unwrap_or_default().to_string();
        if let Some(key) = path.strip_prefix("/computeMetadata/v1/") {
            return s.metadata(key, r);
        }
        s.calls.push((r.method.clone(), path.clone()));
        if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return error(401, "authError", "Invalid Credentials");
        }
        let Some(rest) = path.strip_prefix(&format!("/compute/v1/projects/{PROJECT}/")) else {
            return error(
                404,
                "notFound",
                &format!("The resource '{path}' was not found"),
            );
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match (r.method.as_str(), parts.as_slice()) {
            ("GET", ["aggregated", "instances"]) => s.aggregated(r),
            ("GET", ["zones", zone, "instances", name]) => match s.find(zone, name) {
                Some(i) => Response::json(instance_json(i).to_string()),
                None => not_found(&path),
            },
            ("PATCH", ["zones", zone, "instances", name, "updateNetworkInterface"]) => {
                s.update(zone, name, r)
            }
            ("GET", ["zones", zone, "operations", name]) => match s.ops.iter().find(|o| {
                o.zone == *zone && o.name == *name
            }) {
                Some(op) => Response::json(op_json(op, Instant::now()).to_string()),
                None => not_found(&path),
            },
            ("GET", ["zones", ZONE, "instanceGroupManagers", GROUP]) => Response::json(
                json!({"kind": "compute#instanceGroupManager", "name": GROUP, "targetSize": s.target_size, "baseInstanceName": GROUP})
                    .to_string(),
            ),
            ("POST", ["zones", ZONE, "instanceGroupManagers", GROUP, "listManagedInstances"]) => {
                let members = s.group_as_of(now);
                Response::json(json!({"managedInstances": members}).to_string())
            }
            _ => not_found(&path),
        }
    }
}

impl ComputeState {
    /// The group's members now, as `listManagedInstances` lists them.
    fn group_members(&self) -> Vec<Value> {
        self.instances
            .iter()
            .filter(|i| i.in_group)
            .map(|i| {
                json!({
                    "instance": self_link(i),
                    "id": i.id.to_string(),
                    "instanceStatus": i.status,
                    "currentAction": "NONE",
                })
            })
            .collect()
    }

    /// Remembers the member list if it changed.
    fn note_group(&mut self, now: Instant) {
        let members = self.group_members();
        if self.group_history.last().map(|(_, m)| m) != Some(&members) {
            self.group_history.push((now, members));
        }
    }

    /// The member list as it was `list_lag` ago (the oldest one known if
    /// the lag reaches further back).
    fn group_as_of(&self, now: Instant) -> Vec<Value> {
        let then = now.checked_sub(self.list_lag).unwrap_or(now);
        self.group_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= then)
            .or(self.group_history.first())
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| self.group_members())
    }

    /// Adds an instance; returns it.
    pub fn add(&mut self, name: &str, zone: &str, ip: Ipv4Addr, in_group: bool) -> FakeInstance {
        self.next_id += 7919;
        let i = FakeInstance {
            name: name.into(),
            id: self.next_id,
            zone: zone.into(),
            ip,
            status: "RUNNING".into(),
            fingerprint: self.next_id,
            aliases: Vec::new(),
            in_group,
        };
        self.instances.push(i.clone());
        i
    }

    pub fn instance(&mut self, name: &str) -> &mut FakeInstance {
        self.instances
            .iter_mut()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no instance {name}"))
    }

    /// Stops an instance: it keeps its alias ranges, as on GCE.
    pub fn stop(&mut self, name: &str) {
        self.instance(name).status = "TERMINATED".into();
    }

    /// The group deletes `name` and creates `new` in its place.
    pub fn replace(&mut self, name: &str, new: &str, ip: Ipv4Addr) -> FakeInstance {
        self.instances.retain(|i| i.name != name);
        self.add(new, ZONE, ip, true)
    }

    fn find(&self, zone: &str, name: &str) -> Option<&FakeInstance> {
        self.instances
            .iter()
            .find(|i| i.zone == zone && i.name == name)
    }

    /// Finishes every operation whose time has come, in order.
    fn settle(&mut self, now: Instant) {
        let mut due: Vec<usize> = (0..self.ops.len())
            .filter(|&n| self.ops[n].outcome.is_none() && self.ops[n].done_at <= now)
            .collect();
        due.sort_by_key(|&n| self.ops[n].done_at);
        for n in due {
            let (zone, name, wanted) = {
                let op = &self.ops[n];
                (op.zone.clone(), op.instance.clone(), op.aliases.clone())
            };
            let in_use = wanted.iter().find(|(r, _)| {
                self.instances
                    .iter()
                    .any(|i| !(i.zone == zone && i.name == name) && i.holds(r))
            });
            let outcome = match (
                in_use,
                self.instances
                    .iter()
                    .position(|i| i.zone == zone && i.name == name),
            ) {
                (_, None) => Err((
                    404,
                    "RESOURCE_NOT_FOUND",
                    format!("The resource 'instances/{name}' was not found"),
                )),
                (Some((r, _)), _) => Err((
                    400,
                    "IP_IN_USE_BY_ANOTHER_RESOURCE",
                    format!("IP '{r}' is already being used by another resource."),
                )),
                (None, Some(at)) => {
                    let removed: Vec<String> = self.instances[at]
                        .aliases
                        .iter()
                        .filter(|(r, _)| !wanted.iter().any(|(w, _)| same_range(r, w)))
                        .map(|(r, _)| r.clone())
                        .collect();
                    let target = &mut self.instances[at];
                    target.aliases = wanted;
                    target.fingerprint += 1;
                    if let Some((range, holder)) = self.readd_after_eviction.clone()
                        && removed.iter().any(|r| same_range(r, &range))
                    {
                        self.readd_after_eviction = None;
                        let h = self.instance(&holder);
                        h.aliases.push((range, None));
                        h.fingerprint += 1;
                    }
                    Ok(())
                }
            };
            self.ops[n].outcome = Some(outcome);
        }
    }

    fn update(&mut self, zone: &str, name: &str, r: &Request) -> Response {
        if let Some((status, reason, message)) = &self.refuse_updates {
            return error(*status, reason, message);
        }
        if self.race_fingerprint_of.as_deref() == Some(name) {
            self.race_fingerprint_of = None;
            self.instance(name).fingerprint += 1;
        }
        if r.query("networkInterface").as_deref() != Some("nic0") {
            return error(400, "invalid", "Invalid value for field 'networkInterface'");
        }
        if r.query("requestId").is_none_or(|id| id.len() != 36) {
            return error(400, "invalid", "Invalid value for field 'requestId'");
        }
        let Some(current) = self.find(zone, name).cloned() else {
            return not_found(&format!("instances/{name}"));
        };
        let body: Value = match serde_json::from_str(&r.body) {
            Ok(v) => v,
            Err(e) => return error(400, "parseError", &format!("Invalid JSON payload: {e}")),
        };
        let Some(fingerprint) = body["fingerprint"].as_str() else {
            return error(
                400,
                "required",
                "Required field 'resource.fingerprint' not specified",
            );
        };
        if fingerprint != fp(current.fingerprint) {
            return error(412, "conditionNotMet", "Invalid fingerprint.");
        }
        let Some(ranges) = body["aliasIpRanges"].as_array() else {
            return error(
                400,
                "invalid",
                "aliasIpRanges must be sent (an empty list clears them)",
            );
        };
        if body.as_object().is_some_and(|o| o.len() != 2) {
            return error(
                400,
                "invalid",
                "only aliasIpRanges and fingerprint may be updated",
            );
        }
        let wanted: Vec<(String, Option<String>)> = ranges
            .iter()
            .map(|v| {
                (
                    v["ipCidrRange"].as_str().unwrap_or_default().to_string(),
                    v["subnetworkRangeName"].as_str().map(str::to_string),
                )
            })
            .collect();
        let adds = wanted.iter().any(|(w, _)| !current.holds(w));
        let removes = current
            .aliases
            .iter()
            .any(|(c, _)| !wanted.iter().any(|(w, _)| same_range(c, w)));
        if adds && removes {
            return error(
                400,
                "invalid",
                "Cannot add and remove alias IP ranges in the same request",
            );
        }
        let op = FakeOp {
            name: format!("operation-{}-{}", self.ops.len() + 1, current.id),
            zone: zone.into(),
            instance: name.into(),
            done_at: Instant::now() + self.op_delay,
            aliases: wanted,
            outcome: None,
        };
        let answer = op_json(&op, Instant::now()).to_string();
        self.ops.push(op);
        Response::json(answer)
    }

    fn aggregated(&self, r: &Request) -> Response {
        let start: usize = r
            .query("pageToken")
            .and_then(|t| t.strip_prefix("page-").and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        let page: Vec<&FakeInstance> = self
            .instances
            .iter()
            .skip(start)
            .take(self.page_size)
            .collect();
        let mut items: BTreeMap<String, Value> = BTreeMap::new();
        for i in &page {
            let zone = items
                .entry(format!("zones/{}", i.zone))
                .or_insert_with(|| json!({"instances": []}));
            if let Some(list) = zone["instances"].as_array_mut() {
                list.push(instance_json(i));
            }
        }
        items.insert(
            "zones/us-east1-b".into(),
            json!({"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "There are no results for scope 'zones/us-east1-b' on this page."}}),
        );
        let mut answer = json!({"kind": "compute#instanceAggregatedList", "items": items});
        if start + self.page_size < self.instances.len() {
            answer["nextPageToken"] = json!(format!("page-{}", start + self.page_size));
        }
        Response::json(answer.to_string())
    }

    fn metadata(&self, key: &str, r: &Request) -> Response {
        if r.header("metadata-flavor") != Some("Google") {
            return Response::new(403, "text/html", "Missing Metadata-Flavor:Google header.");
        }
        let text = |s: String| Response::new(200, "application/text", s);
        if key == "instance/service-accounts/default/token" {
            return Response::json(
                json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})
                    .to_string(),
            );
        }
        if key == "project/project-id" {
            return text(PROJECT.into());
        }
        let me = match &self.metadata_for {
            Some(name) => self.instances.iter().find(|i| i.name == *name),
            None => self
                .instances
                .iter()
                .find(|i| r.peer.is_some_and(|p| p.ip() == std::net::IpAddr::V4(i.ip))),
        };
        let Some(me) = me else {
            return Response::new(404, "text/html", "Not Found");
        };
        match key {
            "instance/name" => text(me.name.clone()),
            "instance/zone" => text(format!("projects/123456789012/zones/{}", me.zone)),
            "instance/attributes/created-by" if me.in_group => text(format!(
                "projects/123456789012/zones/{ZONE}/instanceGroupManagers/{GROUP}"
            )),
            _ => Response::new(404, "text/html", "Not Found"),
        }
    }
}

fn fp(n: u64) -> String {
    format!("fp-{n:x}")
}

fn self_link(i: &FakeInstance) -> String {
    format!(
        "https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{}/instances/{}",
        i.zone, i.name
    )
}

fn instance_json(i: &FakeInstance) -> Value {
    let ranges: Vec<Value> = i
        .aliases
        .iter()
        .map(|(r, name)| match name {
            Some(n) => json!({"ipCidrRange": r, "subnetworkRangeName": n}),
            None => json!({"ipCidrRange": r}),
        })
        .collect();
    let mut nic = json!({
        "kind": "compute#networkInterface",
        "name": "nic0",
        "networkIP": i.ip.to_string(),
        "fingerprint": fp(i.fingerprint),
    });
    if !ranges.is_empty() {
        nic["aliasIpRanges"] = json!(ranges);
    }
    json!({
        "kind": "compute#instance",
        "id": i.id.to_string(),
        "name": i.name,
        "creationTimestamp": "2024-03-04T05:10:11.123-08:00",
        "status": i.status,
        "zone": format!("https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{}", i.zone),
        "networkInterfaces": [nic],
        "selfLink": self_link(i),
    })
}

fn op_json(op: &FakeOp, now: Instant) -> Value {
    let mut v = json!({
        "kind": "compute#operation",
        "name": op.name,
        "zone": format!("https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{}", op.zone),
        "operationType": "updateNetworkInterface",
        "status": if op.outcome.is_some() || op.done_at <= now { "DONE" } else { "RUNNING" },
    });
    if let Some(Err((status, code, message))) = &op.outcome {
        v["error"] = json!({"errors": [{"code": code, "message": message}]});
        v["httpErrorStatusCode"] = json!(status);
        v["httpErrorMessage"] = json!("BAD REQUEST");
    }
    v
}

fn error(status: u16, reason: &str, message: &str) -> Response {
    Response::new(
        status,
        "application/json",
        json!({"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}})
            .to_string(),
    )
}

fn not_found(what: &str) -> Response {
    error(
        404,
        "notFound",
        &format!("The resource '{what}' was not found"),
    )
}
