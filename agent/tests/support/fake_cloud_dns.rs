//! A fake Google Cloud DNS v1 (and the metadata server's project id) on
//! loopback, following the published contract for what the provider uses:
//! Bearer tokens (a wrong one gets 403 `forbidden`), `managedZones.list`
//! by `dnsName`, paged `resourceRecordSets.list` (`maxResults` capped,
//! `nextPageToken`), and `changes.create` applied atomically: every
//! deletion must match an existing record set exactly (else 412
//! `conditionNotMet`) and no addition may exist (else 409 `alreadyExists`);
//! a change is `pending` when created and `done` when fetched
//! (`changes.get`). Answers are shaped like the API reference's.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::fake_http::{FakeServer, Request, Response};

pub const PROJECT: &str = "muster-test-project";
pub const MANAGED_ZONE: &str = "prod-zone";

#[derive(Default)]
pub struct State {
    pub rrsets: Vec<Value>,
    pub changes: usize,
}

pub struct FakeCloudDns {
    pub server: FakeServer,
    pub state: Arc<Mutex<State>>,
}

fn error(status: u16, reason: &str, message: &str) -> Response {
    Response::new(
        status,
        "application/json",
        json!({"error": {"code": status, "message": message, "errors": [{"domain": "global", "reason": reason, "message": message}]}})
            .to_string(),
    )
}

fn key(v: &Value) -> (String, String) {
    (
        v["name"].as_str().unwrap_or_default().to_string(),
        v["type"].as_str().unwrap_or_default().to_string(),
    )
}

impl FakeCloudDns {
    pub async fn start(dns_name: &str, token: &str, max_page: usize) -> FakeCloudDns {
        let state = Arc::new(Mutex::new(State::default()));
        let (dns_name, token, s) = (dns_name.to_string(), token.to_string(), state.clone());
        let server = FakeServer::start(move |_, r: &Request| {
            let path = r.target.split('?').next().unwrap_or_default().to_string();
            if path == "/computeMetadata/v1/project/project-id" {
                return if r.header("metadata-flavor") == Some("Google") {
                    Response::new(200, "application/text", PROJECT)
                } else {
                    Response::new(403, "text/html", "Missing Metadata-Flavor:Google header.")
                };
            }
            if r.header("authorization") != Some(&format!("Bearer {token}")) {
                return error(403, "forbidden", "Forbidden");
            }
            let zones = format!("/dns/v1/projects/{PROJECT}/managedZones");
            let zone = format!("{zones}/{MANAGED_ZONE}");
            let mut st = s.lock().expect("lock");
            match (r.method.as_str(), path.as_str()) {
                ("GET", p) if p == zones => {
                    let hit = r.query("dnsName").as_deref() == Some(dns_name.as_str());
                    let list = if hit {
                        json!([{"kind": "dns#managedZone", "name": MANAGED_ZONE, "dnsName": dns_name, "id": "4242", "visibility": "public"}])
                    } else {
                        json!([])
                    };
                    Response::json(json!({"kind": "dns#managedZonesListResponse", "managedZones": list}).to_string())
                }
                ("GET", p) if p == format!("{zone}/rrsets") => {
                    let max: usize = r.query("maxResults").and_then(|v| v.parse().ok()).unwrap_or(100).min(max_page);
                    let start: usize = r.query("pageToken").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let page: Vec<Value> = st.rrsets.iter().skip(start).take(max).cloned().collect();
                    let mut body = json!({"kind": "dns#resourceRecordSetsListResponse", "rrsets": page});
                    if start + max < st.rrsets.len() {
                        body["nextPageToken"] = json!((start + max).to_string());
                    }
                    Response::json(body.to_string())
                }
                ("POST", p) if p == format!("{zone}/changes") => {
                    let Ok(change) = serde_json::from_str::<Value>(&r.body) else {
                        return error(400, "invalid", "Invalid JSON payload received.");
                    };
                    let mut next = st.rrsets.clone();
                    let strip = |v: &Value| json!({"name": v["name"], "type": v["type"], "ttl": v["ttl"], "rrdatas": v["rrdatas"]});
                    for (i, d) in change["deletions"].as_array().cloned().unwrap_or_default().iter().enumerate() {
                        let Some(at) = next.iter().position(|x| strip(x) == strip(d)) else {
                            return error(412, "conditionNotMet", &format!("Precondition not met for 'entity.change.deletions[{i}]'"));
                        };
                        next.remove(at);
                    }
                    for (i, a) in change["additions"].as_array().cloned().unwrap_or_default().iter().enumerate() {
                        if next.iter().any(|x| key(x) == key(a)) {
                            return error(409, "alreadyExists", &format!("The resource 'entity.change.additions[{i}]' named '{}' already exists", a["name"]));
                        }
                        let mut rr = strip(a);
                        rr["kind"] = json!("dns#resourceRecordSet");
                        next.push(rr);
                    }
                    st.rrsets = next;
                    st.changes += 1;
                    Response::json(json!({"kind": "dns#change", "id": st.changes.to_string(), "status": "pending", "startTime": "2026-12-05T10:00:00.000Z"}).to_string())
                }
                ("GET", p) if p.starts_with(&format!("{zone}/changes/")) => {
                    let id = p.rsplit('/').next().unwrap_or_default();
                    Response::json(json!({"kind": "dns#change", "id": id, "status": "done"}).to_string())
                }
                _ => error(404, "notFound", "The requested resource was not found."),
            }
        })
        .await;
        FakeCloudDns { server, state }
    }

    /// Adds a record set as another tool would.
    pub fn seed(&self, name: &str, kind: &str, ttl: u32, rrdatas: &[&str]) {
        self.state.lock().expect("lock").rrsets.push(
            json!({"kind": "dns#resourceRecordSet", "name": name, "type": kind, "ttl": ttl, "rrdatas": rrdatas}),
        );
    }
}
