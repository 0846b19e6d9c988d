//! A small scriptable HTTP/1.1 server for the metadata tests, on a real
//! loopback socket (so the real client, timeouts and retries are exercised).
//!
//! - Static routes: `route("GET", "/path?query", Reply)`.
//! - Scripts: `script("GET", "/path", [Step::...])` plays the steps in order,
//!   then repeats the last: 500s, delays, dropped connections (accept, read,
//!   close), hangs (never answer), or `Pass` (fall through to the routes).
//! - IMDS token rules (`imds(Imds::...)`): PUT `/latest/api/token` issues
//!   tokens; GETs under `/latest/` need a valid token (v2-only), none (v1-only,
//!   where the PUT is refused), or either; a token can expire after N uses.
//! - Every request is recorded, so tests can assert how often a path was hit.
//!
//! Each response closes its connection (`Connection: close`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub const TOKEN_PATH: &str = "/latest/api/token";

/// One canned HTTP answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// One step of a script.
#[derive(Clone, Debug)]
pub enum Step {
    Reply(Reply),
    /// Answer after a delay.
    Delay(Duration, Reply),
    /// Accept and read the request, then close without answering.
    Drop,
    /// Accept and read the request, then never answer.
    Hang,
    /// Handle the request normally (token rules, then routes).
    Pass,
}

/// IMDS token behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imds {
    /// Tokens required on every GET under /latest/.
    V2Only { token_max_uses: Option<u32> },
    /// The token PUT is refused (403); GETs need no token.
    V1Only,
    /// Tokens optional, as with `http-tokens=optional`.
    Both,
}

/// A request as the server saw it.
pub use super::fake_http::Request as Seen;

#[derive(Default)]
struct State {
    routes: HashMap<(String, String), Reply>,
    scripts: HashMap<(String, String), (Vec<Step>, usize)>,
    imds: Option<Imds>,
    tokens: HashMap<String, u32>,
    issued: u32,
    seen: Vec<Seen>,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, state).await;
                });
            }
        });
        FakeServer { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/", self.addr)).expect("url")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn route(&self, method: &str, target: &str, reply: Reply) -> &Self {
        self.lock()
            .routes
            .insert((method.to_string(), target.to_string()), reply);
        self
    }

    pub fn script(&self, method: &str, target: &str, steps: Vec<Step>) -> &Self {
        assert!(!steps.is_empty(), "a script needs at least one step");
        self.lock()
            .scripts
            .insert((method.to_string(), target.to_string()), (steps, 0));
        self
    }

    pub fn imds(&self, mode: Imds) -> &Self {
        self.lock().imds = Some(mode);
        self
    }

    /// Serves every `"path": "body"` pair of a JSON object as a GET route.
    pub fn routes_from_json(&self, json: &str) -> &Self {
        let map: HashMap<String, String> =
            serde_json::from_str(json).expect("fixture is a JSON object of strings");
        for (path, body) in map {
            let target = format!("/{}", encode_path(&path));
            self.route("GET", &target, Reply::ok(body));
        }
        self
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    pub fn count(&self, method: &str, target: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.method == method && s.target == target)
            .count()
    }

    pub fn total(&self) -> usize {
        self.lock().seen.len()
    }
}

/// Percent-encodes what `url`'s path segments encode, so fixture keys such as
/// `aws:autoscaling:groupName` match the request the client sends.
fn encode_path(path: &str) -> String {
    let mut u = url::Url::parse("http://x/").expect("url");
    u.path_segments_mut().expect("base").extend(path.split('/'));
    u.path().trim_start_matches('/').to_string()
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port_url() -> url::Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    url::Url::parse(&format!("http://{addr}/")).expect("url")
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let Some(seen) = super::fake_http::read_request(&mut stream).await? else {
        return Ok(());
    };
    let step = decide(&state, seen);
    let reply = match step {
        Step::Reply(r) => r,
        Step::Delay(d, r) => {
            tokio::time::sleep(d).await;
            r
        }
        Step::Drop => return Ok(()),
        Step::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        Step::Pass => Reply::status(500),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}

fn decide(state: &Arc<Mutex<State>>, seen: Seen) -> Step {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.seen.push(seen.clone());
    let key = (seen.method.clone(), seen.target.clone());
    if let Some((steps, at)) = s.scripts.get_mut(&key) {
        let step = steps[(*at).min(steps.len() - 1)].clone();
        *at += 1;
        if !matches!(step, Step::Pass) {
            return step;
        }
    }
    if let Some(mode) = s.imds
        && let Some(step) = imds_rules(&mut s, mode, &seen)
    {
        return Step::Reply(step);
    }
    Step::Reply(
        s.routes
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Reply::status(404)),
    )
}

/// The token rules; `None` means "carry on to the routes".
fn imds_rules(s: &mut State, mode: Imds, seen: &Seen) -> Option<Reply> {
    if seen.target == TOKEN_PATH {
        if seen.method != "PUT" {
            return Some(Reply::status(405));
        }
        if mode == Imds::V1Only {
            return Some(Reply::status(403));
        }
        if seen
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .is_none()
        {
            return Some(Reply::status(400));
        }
        s.issued += 1;
        let token = format!("token-{}", s.issued);
        s.tokens.insert(token.clone(), 0);
        return Some(Reply::ok(token));
    }
    if !seen.target.starts_with("/latest/") {
        return None;
    }
    let max_uses = match mode {
        Imds::V2Only { token_max_uses } => token_max_uses,
        _ => None,
    };
    match seen.header("x-aws-ec2-metadata-token") {
        // IMDSv1-only ignores tokens, as a service without IMDSv2 would.
        Some(_) if mode == Imds::V1Only => None,
        Some(token) => match s.tokens.get_mut(token) {
            Some(uses) if max_uses.is_none_or(|m| *uses < m) => {
                *uses += 1;
                None
            }
            _ => Some(Reply::status(401)),
        },
        None if matches!(mode, Imds::V2Only { .. }) => Some(Reply::status(401)),
        None => None,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
