//! A fake Cloudflare API v4 on loopback that follows the published
//! contract for what the provider uses: Bearer tokens (a wrong one gets the
//! documented 403 `Authentication error`, code 10000), `GET /zones?name=`,
//! paged `GET /zones/{id}/dns_records` (`result_info.total_pages`; pages of
//! at most `max_per_page`), `POST` (an identical record is refused with code
//! 81058, as Cloudflare does) and `DELETE /dns_records/{id}`, and a 429 with
//! `Retry-After` on demand. Answers are shaped like the API reference's
//! examples (envelope `success`/`errors`/`messages`/`result`).

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::fake_http::{FakeServer, Request, Response};

pub const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";

#[derive(Default)]
pub struct State {
    pub records: Vec<Value>,
    pub next_id: u64,
    /// Answer the next request with 429 and `Retry-After: N`.
    pub throttle_next: Option<u64>,
    pub writes: usize,
}

pub struct FakeCloudflare {
    pub server: FakeServer,
    pub state: Arc<Mutex<State>>,
}

fn envelope(result: Value, info: Option<Value>) -> Response {
    let mut body = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some(i) = info {
        body["result_info"] = i;
    }
    Response::json(body.to_string())
}

fn error(status: u16, code: u64, message: &str) -> Response {
    Response::new(
        status,
        "application/json",
        json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})
            .to_string(),
    )
}

impl FakeCloudflare {
    pub async fn start(zone: &str, token: &str, max_per_page: usize) -> FakeCloudflare {
        let state = Arc::new(Mutex::new(State::default()));
        let (zone, token, s) = (zone.to_string(), token.to_string(), state.clone());
        let server = FakeServer::start(move |_, r: &Request| {
            let mut st = s.lock().expect("lock");
            if let Some(after) = st.throttle_next.take() {
                let mut resp = error(429, 10000, "Rate limited. Please wait and consider throttling your request speed");
                resp.headers.push(("retry-after", after.to_string()));
                return resp;
            }
            if r.header("authorization") != Some(&format!("Bearer {token}")) {
                return error(403, 10000, "Authentication error");
            }
            let path = r.target.split('?').next().unwrap_or_default().trim_start_matches('/').to_string();
            let records_path = format!("zones/{ZONE_ID}/dns_records");
            match (r.method.as_str(), path.as_str()) {
                ("GET", "zones") => {
                    let hit = r.query("name").as_deref() == Some(zone.as_str());
                    let result = if hit { json!([{"id": ZONE_ID, "name": zone, "status": "active"}]) } else { json!([]) };
                    envelope(result, Some(json!({"page": 1, "per_page": 20, "count": usize::from(hit), "total_count": usize::from(hit), "total_pages": 1})))
                }
                ("GET", p) if p == records_path => {
                    let per_page: usize = r.query("per_page").and_then(|v| v.parse().ok()).unwrap_or(100).min(max_per_page);
                    let page: usize = r.query("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
                    let total = st.records.len();
                    let pages = total.div_ceil(per_page).max(1);
                    let slice: Vec<Value> = st.records.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
                    let info = json!({"page": page, "per_page": per_page, "count": slice.len(), "total_count": total, "total_pages": pages});
                    envelope(Value::Array(slice), Some(info))
                }
                ("POST", p) if p == records_path => {
                    let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
                        return error(400, 9207, "Request body is invalid.");
                    };
                    let same = st.records.iter().any(|x| x["name"] == body["name"] && x["type"] == body["type"] && x["content"] == body["content"]);
                    if same {
                        return error(400, 81058, "An identical record already exists.");
                    }
                    st.next_id += 1;
                    let mut record = body.clone();
                    record["id"] = json!(format!("{:032x}", st.next_id));
                    record["zone_id"] = json!(ZONE_ID);
                    if record.get("proxied").is_none() {
                        record["proxied"] = json!(false);
                    }
                    st.records.push(record.clone());
                    st.writes += 1;
                    envelope(record, None)
                }
                ("DELETE", p) if p.starts_with(&format!("{records_path}/")) => {
                    let id = p.rsplit('/').next().unwrap_or_default();
                    let before = st.records.len();
                    st.records.retain(|x| x["id"] != json!(id));
                    if st.records.len() == before {
                        return error(404, 81044, "Record does not exist.");
                    }
                    st.writes += 1;
                    envelope(json!({"id": id}), None)
                }
                _ => error(404, 7003, "Could not route to /path, perhaps your object identifier is invalid?"),
            }
        })
        .await;
        FakeCloudflare { server, state }
    }

    /// Adds a record as another tool would.
    pub fn seed(&self, kind: &str, name: &str, content: &str) {
        let mut st = self.state.lock().expect("lock");
        st.next_id += 1;
        let id = format!("{:032x}", st.next_id);
        st.records.push(json!({"id": id, "zone_id": ZONE_ID, "type": kind, "name": name, "content": content, "ttl": 1, "proxied": false}));
    }
}
