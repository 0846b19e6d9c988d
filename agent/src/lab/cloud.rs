//! The fake cloud of `muster lab`: one HTTP server that plays AWS for the
//! lab's QEMU VMs, so their agents run the real `aws` code paths (IMDSv2
//! metadata, instance-role credentials, Auto Scaling group discovery).
//!
//! The lab listens on `169.254.169.254:80` inside its network namespace; the
//! VMs reach it over the bridge **without NAT**, because the server tells the
//! VMs apart by the TCP peer address of each request (a VM's private IPv4 in
//! the world below). The agents' AWS client is pointed at the same URL
//! (`cloud.endpoint: http://169.254.169.254/`), so the server answers:
//!
//! - `POST /` — the AWS Query API subset the agent calls ([`query`]);
//! - everything else — the instance metadata service, IMDSv2 only ([`imds`]).
//!
//! What the server knows is a plain [`LabCloud`] value that it asks its
//! [`WorldProvider`] for on every request: the lab CLI rewrites its JSON
//! file to add or kill VMs and the next answer reflects it, with no restart.
//! Both handlers are pure functions from a request to a [`Reply`]; this
//! module is only the axum glue.

pub mod imds;
pub mod query;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use imds::{ImdsRequest, Tokens};

/// The tag AWS Auto Scaling puts on every instance it launches.
pub const GROUP_TAG: &str = crate::metadata::aws::GROUP_TAG;
/// The account every lab ARN and identity document names (AWS's documentation account).
pub const ACCOUNT_ID: &str = "123456789012";
/// What the lab's instances claim to be; only shapes need it, nothing reads it.
pub const INSTANCE_TYPE: &str = "t3.micro";
/// The image id of every lab instance.
pub const IMAGE_ID: &str = "ami-00000000000000000";

/// The lab's cloud as the server sees it. Stored by the lab as JSON.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabCloud {
    /// e.g. `eu-west-1`.
    pub region: String,
    /// e.g. `eu-west-1a`; every instance lives in it.
    pub zone: String,
    /// The Auto Scaling group every `in_group` instance belongs to.
    pub group_name: String,
    /// The group's `DesiredCapacity`; `None` means "as many as are members".
    /// While the lab replaces a killed VM the two differ, as in AWS.
    #[serde(default)]
    pub desired_capacity: Option<u32>,
    /// `latest/user-data` of every instance (the cluster config, which
    /// holds the cluster secret: never shown by `Debug`). Empty means none (404).
    #[serde(default)]
    pub user_data: String,
    /// The instance role; `None` means instances have no role (IMDS 404).
    #[serde(default)]
    pub role_name: Option<String>,
    /// The access key id of the role's credentials; Query API calls must be
    /// signed with it.
    pub access_key_id: String,
    /// Every instance the lab ever launched, in launch order; terminated
    /// ones stay listed (as EC2 keeps showing them for a while).
    #[serde(default)]
    pub instances: Vec<LabInstance>,
}

impl fmt::Debug for LabCloud {
    // User data may hold the cluster secret (S5): only its size is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabCloud")
            .field("region", &self.region)
            .field("zone", &self.zone)
            .field("group_name", &self.group_name)
            .field("desired_capacity", &self.desired_capacity)
            .field("user_data", &format!("<{} bytes>", self.user_data.len()))
            .field("role_name", &self.role_name)
            .field("access_key_id", &self.access_key_id)
            .field("instances", &self.instances)
            .finish()
    }
}

/// One VM of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabInstance {
    /// `i-` and hex, like EC2's.
    pub instance_id: String,
    /// The VM's address on the lab bridge; its requests come from it.
    pub private_ipv4: Ipv4Addr,
    /// `02:…`, the MAC QEMU gives the VM's NIC.
    pub mac: String,
    /// `local-hostname` in IMDS, `privateDnsName` in EC2.
    pub hostname: String,
    /// RFC 3339, e.g. `2026-03-01T10:00:00.000Z`.
    pub launch_time: String,
    pub state: InstanceState,
    /// Listed by the group while also `Running`; the lab takes a killed VM
    /// out of the group, as an ASG replaces an unhealthy instance.
    pub in_group: bool,
    /// Held in `Terminating:Wait` by the group's termination hook
    /// ([`REPLACE_HOOK`]) until its agent completes the action
    /// (`lab upgrade`).
    #[serde(default)]
    pub leaving: bool,
}

/// The group's one lifecycle hook: it holds a terminating instance until
/// its agent has handed off (drained its Node, left etcd) and completed
/// the action, as an ASG instance refresh with a termination hook does.
pub const REPLACE_HOOK: &str = "muster-lab-replace";
/// How long the hook holds a machine whose agent never completes it
/// (`HeartbeatTimeout`; the group then goes on, `DefaultResult=CONTINUE`).
pub const REPLACE_HOOK_TIMEOUT_SECS: u64 = 900;

/// The EC2 states the lab uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Running,
    Stopped,
    Terminated,
}

impl InstanceState {
    /// EC2's `instanceState` name and code.
    pub fn ec2(self) -> (&'static str, u16) {
        match self {
            InstanceState::Running => ("running", 16),
            InstanceState::Stopped => ("stopped", 80),
            InstanceState::Terminated => ("terminated", 48),
        }
    }
}

impl LabCloud {
    /// The group's members: `in_group` and running, in launch order.
    pub fn members(&self) -> impl Iterator<Item = &LabInstance> {
        self.instances
            .iter()
            .filter(|i| i.in_group && i.state == InstanceState::Running)
    }

    /// The running instance whose address is `peer`: who is asking IMDS.
    pub fn instance_at(&self, peer: IpAddr) -> Option<&LabInstance> {
        let IpAddr::V4(peer) = peer.to_canonical() else {
            return None;
        };
        self.instances
            .iter()
            .find(|i| i.private_ipv4 == peer && i.state == InstanceState::Running)
    }

    /// The instance's tags, the same in IMDS and EC2: `Name` (the
    /// hostname) and, for group members, the Auto Scaling group tag.
    pub fn tags(&self, instance: &LabInstance) -> Vec<(String, String)> {
        let mut tags = vec![("Name".to_string(), instance.hostname.clone())];
        if instance.in_group {
            tags.push((GROUP_TAG.to_string(), self.group_name.clone()));
        }
        tags
    }

    /// The group's `DesiredCapacity`.
    pub fn desired(&self) -> u32 {
        self.desired_capacity
            .unwrap_or_else(|| u32::try_from(self.members().count()).unwrap_or(u32::MAX))
    }
}

/// Why the world could not be had; every request answers 500 meanwhile
/// (the agents retry 5xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lab cloud state: {0}")]
pub struct WorldError(pub String);

/// Gives the current world; called once per request.
pub type WorldProvider = Arc<dyn Fn() -> Result<LabCloud, WorldError> + Send + Sync>;

/// A world that never changes (tests).
pub fn fixed_world(world: LabCloud) -> WorldProvider {
    Arc::new(move || Ok(world.clone()))
}

/// The world read from a JSON file on every request (a small file, read
/// in place). The lab should write it atomically (a temporary file, then
/// rename) so no request sees half a file.
pub fn world_file(path: impl Into<PathBuf>) -> WorldProvider {
    let path = path.into();
    Arc::new(move || {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| WorldError(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            // The position and kind only: serde's message may quote a value,
            // and the user data holds the cluster secret (S5).
            let kind = match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "not valid JSON",
                serde_json::error::Category::Data => {
                    "not a lab cloud state (wrong or missing field)"
                }
                serde_json::error::Category::Eof => "cut short",
            };
            WorldError(format!(
                "{}:{}:{}: {kind}",
                path.display(),
                e.line(),
                e.column()
            ))
        })
    })
}

/// An answer of either handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    /// Extra headers (the token TTL, IMDS's `Server`).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut builder = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, self.content_type);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Body::from(self.body))
            .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
    }
}

/// RFC 3339 in UTC with milliseconds, as AWS writes times.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[derive(Clone)]
struct Server {
    world: WorldProvider,
    tokens: Arc<Tokens>,
    requests: Arc<AtomicU64>,
    /// Where an accepted `CompleteLifecycleAction` is recorded: an empty
    /// file named after the instance (`lab upgrade` waits for it).
    completions: Option<PathBuf>,
}

/// The server's routes: `POST /` is the Query API, the rest is IMDS. Serve
/// it with `into_make_service_with_connect_info::<SocketAddr>()`: IMDS needs
/// the peer address.
pub fn router(world: WorldProvider, tokens: Tokens) -> Router {
    router_recording(world, tokens, None)
}

/// [`router`], recording completed lifecycle actions in `completions`.
pub fn router_recording(
    world: WorldProvider,
    tokens: Tokens,
    completions: Option<PathBuf>,
) -> Router {
    Router::new().fallback(handle).with_state(Server {
        world,
        tokens: Arc::new(tokens),
        requests: Arc::new(AtomicU64::new(0)),
        completions,
    })
}

/// The file that says `instance_id`'s termination hook was completed.
pub fn completion_marker(completions: &Path, instance_id: &str) -> PathBuf {
    completions.join(instance_id)
}

/// Records an accepted completion (the instance id was checked against
/// the group's members by the handler).
fn record_completion(completions: &Path, instance_id: &str) {
    let marker = completion_marker(completions, instance_id);
    let written = std::fs::create_dir_all(completions).and_then(|()| std::fs::write(&marker, b""));
    match written {
        Ok(()) => tracing::info!(instance_id, "lab cloud: lifecycle action completed"),
        Err(e) => {
            tracing::error!(path = %marker.display(), "lab cloud: cannot record a completion: {e}")
        }
    }
}

/// Serves the lab cloud on `listener` until the task is dropped or the
/// listener fails.
pub async fn serve(listener: TcpListener, world: WorldProvider) -> std::io::Result<()> {
    let tokens = Tokens::random()
        .map_err(|_| std::io::Error::other("no system randomness for the IMDS token key"))?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "lab cloud serving IMDS and the AWS Query API");
    }
    let app = router(world, tokens);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn handle(
    State(server): State<Server>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let n = server.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("00000000-0000-4000-8000-{n:012x}");
    let query_api = method == Method::POST && uri.path() == "/";
    let reply = match (server.world)() {
        Err(e) => {
            tracing::error!(error = %e, "lab cloud has no world to answer from");
            if query_api {
                query::internal_error(&request_id, &e.to_string())
            } else {
                imds::error(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
        Ok(world) if query_api => {
            let reply = query::handle(&world, &headers, &body, &request_id);
            if reply.status == StatusCode::OK
                && let (Some(dir), Some(id)) =
                    (&server.completions, query::completed_instance(&body))
            {
                record_completion(dir, &id);
            }
            reply
        }
        Ok(world) => {
            let request = ImdsRequest {
                method: &method,
                path: uri.path(),
                headers: &headers,
                peer: peer.ip(),
            };
            imds::handle(&world, &server.tokens, &request, SystemTime::now())
        }
    };
    tracing::debug!(
        peer = %peer.ip(),
        %method,
        path = uri.path(),
        status = reply.status.as_u16(),
        "lab cloud request"
    );
    reply
}
