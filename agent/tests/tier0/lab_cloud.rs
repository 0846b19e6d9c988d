//! The lab's fake cloud (`muster::lab::cloud`): the real agent code (the
//! `aws` metadata provider, instance-role credentials, Auto Scaling group
//! discovery) against the server on loopback, where the peer 127.0.0.1 is
//! one of the lab's VMs; then the pure handlers on the cases a client of
//! ours never sends.

use crate::support::golden::hermetic;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use muster::cloud::aws::autoscaling::{self, parse_describe_auto_scaling_groups};
use muster::cloud::aws::ec2::parse_describe_instances;
use muster::cloud::aws::{
    AwsClient, AwsError, AwsOptions, Credentials, parse_error_response, parse_imds_role_credentials,
};
use muster::discovery::Lifecycle;
use muster::discovery::aws_asg::list_group;
use muster::discovery::error::DiscoveryError;
use muster::lab::cloud::{
    self, ImdsRequest, InstanceState, LabCloud, LabInstance, Tokens, WorldProvider, imds, query,
};
use muster::metadata::{self, ProviderKind};
use muster::retry::Backoff;
use tokio::net::TcpListener;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The first VM of the fixture: launched first, not first by id.
const VM1: &str = "i-0c3f1a2b4d5e60711";

fn fixture_text() -> String {
    let path = format!(
        "{}/tests/fixtures/lab/cloud.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture world, with VM1 at 127.0.0.1: every test request comes from it.
fn world() -> LabCloud {
    let mut world: LabCloud = serde_json::from_str(&fixture_text()).expect("fixture parses");
    world.instances[0].private_ipv4 = Ipv4Addr::LOCALHOST;
    world
}

/// A running lab cloud on 127.0.0.1; stops when dropped.
struct Lab {
    url: url::Url,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(world: WorldProvider) -> Lab {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url =
        url::Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
    let task = tokio::spawn(cloud::serve(listener, world));
    Lab { url, task }
}

/// [`start`], recording completed lifecycle actions in `completions`, as
/// `muster lab serve` does.
async fn start_recording(world: WorldProvider, completions: std::path::PathBuf) -> Lab {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url =
        url::Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
    let tokens = Tokens::random().expect("randomness");
    let app = cloud::router_recording(world, tokens, Some(completions));
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Lab { url, task }
}

/// A world the test can change while the server runs.
fn shared(world: LabCloud) -> (Arc<Mutex<LabCloud>>, WorldProvider) {
    let state = Arc::new(Mutex::new(world));
    let read = Arc::clone(&state);
    let provider: WorldProvider = Arc::new(move || Ok(read.lock().expect("lock").clone()));
    (state, provider)
}

fn imds_opts(dir: &std::path::Path, lab: &Lab) -> metadata::Options {
    hermetic(dir, Some(lab.url.clone()))
}

/// What a VM's agent does: credentials of the instance role from IMDS, then
/// an AWS client pointed at the same server.
async fn aws_client(lab: &Lab, region: &str) -> AwsClient {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = metadata::aws::role_credentials(&imds_opts(dir.path(), lab))
        .await
        .expect("IMDS answers")
        .expect("the instance has a role");
    let creds = parse_imds_role_credentials(&json).expect("credentials parse");
    client_with(lab, region, creds)
}

fn client_with(lab: &Lab, region: &str, creds: Credentials) -> AwsClient {
    let mut opts = AwsOptions::new(region);
    opts.endpoint = Some(lab.url.clone());
    opts.backoff = Backoff {
        initial: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        total: Duration::from_millis(500),
    };
    opts.request_timeout = Duration::from_secs(5);
    AwsClient::new(opts, creds).expect("client")
}

fn http() -> reqwest::Client {
    metadata::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_aws_provider_identifies_the_vm_behind_the_peer_address() {
    let lab = start(cloud::fixed_world(world())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let facts = metadata::identify(Some(ProviderKind::Aws), &imds_opts(dir.path(), &lab))
        .await
        .expect("identifies");
    assert_eq!(facts.provider, ProviderKind::Aws);
    assert_eq!(facts.instance_id, VM1);
    assert_eq!(facts.private_ipv4, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(facts.public_ipv4, None, "lab VMs have no public address");
    assert_eq!(facts.region.as_deref(), Some("eu-west-1"));
    assert_eq!(facts.zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(facts.group.as_deref(), Some("muster-lab"));
    assert_eq!(
        facts.hostname.as_deref(),
        Some("ip-10-77-0-11.eu-west-1.compute.internal")
    );
    assert_eq!(
        facts.tags.get("Name").map(String::as_str),
        Some("ip-10-77-0-11.eu-west-1.compute.internal")
    );
    assert_eq!(
        facts.user_data.as_deref(),
        Some("#cloud-config\nmuster:\n  cluster: lab\n")
    );
}

#[tokio::test]
async fn imdsv1_is_refused_and_tokens_are_needed() {
    let lab = start(cloud::fixed_world(world())).await;
    let http = http();
    let url = |path: &str| lab.url.join(path).expect("url");
    let instance_id = url("latest/meta-data/instance-id");

    let v1 = http.get(instance_id.clone()).send().await.expect("answers");
    assert_eq!(v1.status(), 401, "IMDSv1 (no token) is refused");

    let no_ttl = http
        .put(url("latest/api/token"))
        .send()
        .await
        .expect("answers");
    assert_eq!(no_ttl.status(), 400, "a token request needs its TTL");

    let put = http
        .put(url("latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .expect("answers");
    assert_eq!(put.status(), 200);
    assert_eq!(
        put.headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok()),
        Some("60")
    );
    let token = put.text().await.expect("token");

    let v2 = http
        .get(instance_id.clone())
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await
        .expect("answers");
    assert_eq!(v2.status(), 200);
    assert_eq!(v2.text().await.expect("body"), VM1);

    let forged = http
        .get(instance_id)
        .header("X-aws-ec2-metadata-token", format!("{token}x"))
        .send()
        .await
        .expect("answers");
    assert_eq!(forged.status(), 401);

    // The agent, even allowed to fall back, uses IMDSv2 here and succeeds.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = imds_opts(dir.path(), &lab);
    opts.allow_imdsv1 = true;
    let facts = metadata::identify(Some(ProviderKind::Aws), &opts)
        .await
        .expect("identifies");
    assert_eq!(facts.instance_id, VM1);
}

#[tokio::test]
async fn role_credentials_from_imds_name_the_labs_access_key() {
    let lab = start(cloud::fixed_world(world())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let json = metadata::aws::role_credentials(&imds_opts(dir.path(), &lab))
        .await
        .expect("IMDS answers")
        .expect("a role");
    let creds = parse_imds_role_credentials(&json).expect("parses");
    assert_eq!(creds.access_key_id(), "ASIAMUSTERLAB0000001");
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        !creds.expires_within(now_ms, 3_600_000),
        "the credentials last hours"
    );

    let mut no_role = world();
    no_role.role_name = None;
    let lab = start(cloud::fixed_world(no_role)).await;
    let none = metadata::aws::role_credentials(&imds_opts(dir.path(), &lab))
        .await
        .expect("IMDS answers");
    assert_eq!(
        none, None,
        "no role: 404, as on an instance without a profile"
    );
}

#[tokio::test]
async fn group_discovery_lists_the_running_members_sorted_by_id() {
    let lab = start(cloud::fixed_world(world())).await;
    let client = aws_client(&lab, "eu-west-1").await;
    let view = list_group(&client, "muster-lab").await.expect("listed");
    assert_eq!(view.desired_capacity, 3);
    let got: Vec<(&str, Ipv4Addr, Lifecycle)> = view
        .peers
        .iter()
        .map(|p| (p.id.as_str(), p.address, p.lifecycle))
        .collect();
    // The terminated VM and the stopped one are not members.
    assert_eq!(
        got,
        [
            (
                "i-01e2d3c4b5a697844",
                Ipv4Addr::new(10, 77, 0, 14),
                Lifecycle::InService
            ),
            (
                "i-0a9d8c7b6e5f40133",
                Ipv4Addr::new(10, 77, 0, 13),
                Lifecycle::InService
            ),
            (VM1, Ipv4Addr::LOCALHOST, Lifecycle::InService),
        ]
    );
    // date -u -d 2026-03-01T10:05:00Z +%s => 1772359500
    assert_eq!(view.peers[0].launched_at_ms, Some(1_772_359_500_000));

    let err = list_group(&client, "another-group")
        .await
        .expect_err("not ours");
    assert!(
        matches!(err, DiscoveryError::GroupNotFound { .. }),
        "{err:?}"
    );
}

/// `lab upgrade`'s termination hook, through the agent's own calls: a
/// member held in `Terminating:Wait` lists as leaving, the group names its
/// termination hook, and the agent's completion is accepted and recorded;
/// a completion for a member that is not leaving is refused.
#[tokio::test]
async fn a_leaving_member_waits_in_its_hook_until_its_agent_completes_it() {
    let (state, provider) = shared(world());
    let dir = tempfile::tempdir().expect("tempdir");
    let completions = dir.path().join("lifecycle-completed");
    let lab = start_recording(provider, completions.clone()).await;
    let client = aws_client(&lab, "eu-west-1").await;
    let marker = cloud::completion_marker(&completions, VM1);

    let hooks = autoscaling::termination_hooks(&client, "muster-lab")
        .await
        .expect("hooks");
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, [cloud::REPLACE_HOOK]);

    let err =
        autoscaling::complete_lifecycle_action(&client, "muster-lab", cloud::REPLACE_HOOK, VM1)
            .await
            .expect_err("VM1 is in service: nothing to complete");
    let AwsError::Api(api) = &err else {
        panic!("not an API error: {err:?}");
    };
    assert_eq!((api.status, api.code.as_str()), (400, "ValidationError"));
    assert!(!marker.exists(), "a refused completion was recorded");

    state.lock().expect("lock").instances[0].leaving = true;
    let view = list_group(&client, "muster-lab").await.expect("listed");
    let vm1 = view.peers.iter().find(|p| p.id == VM1).expect("VM1 listed");
    assert_eq!(vm1.lifecycle, Lifecycle::Leaving);
    let others_in_service = view
        .peers
        .iter()
        .filter(|p| p.id != VM1)
        .all(|p| p.lifecycle == Lifecycle::InService);
    assert!(others_in_service, "{:?}", view.peers);

    autoscaling::complete_lifecycle_action(&client, "muster-lab", cloud::REPLACE_HOOK, VM1)
        .await
        .expect("completed");
    assert!(marker.exists(), "the completion was not recorded");
    let wrong_hook = autoscaling::complete_lifecycle_action(&client, "muster-lab", "other", VM1)
        .await
        .expect_err("no such hook");
    assert!(matches!(wrong_hook, AwsError::Api(_)), "{wrong_hook:?}");
}

#[tokio::test]
async fn group_discovery_sees_the_world_change_without_a_restart() {
    let (state, provider) = shared(world());
    let lab = start(provider).await;
    let client = aws_client(&lab, "eu-west-1").await;
    let ids = |view: &muster::discovery::group::GroupView| -> Vec<String> {
        view.peers.iter().map(|p| p.id.clone()).collect()
    };
    let before = list_group(&client, "muster-lab").await.expect("listed");
    assert_eq!(
        ids(&before),
        ["i-01e2d3c4b5a697844", "i-0a9d8c7b6e5f40133", VM1]
    );

    // The lab kills the VM at 10.77.0.13 and launches a replacement.
    {
        let mut world = state.lock().expect("lock");
        let killed = world
            .instances
            .iter_mut()
            .find(|i| i.instance_id == "i-0a9d8c7b6e5f40133")
            .expect("in the fixture");
        killed.state = InstanceState::Terminated;
        killed.in_group = false;
        world.instances.push(LabInstance {
            instance_id: "i-0d1c2b3a495867016".into(),
            private_ipv4: Ipv4Addr::new(10, 77, 0, 16),
            mac: "52:54:00:77:00:16".into(),
            hostname: "ip-10-77-0-16.eu-west-1.compute.internal".into(),
            launch_time: "2026-03-01T10:10:00Z".into(),
            state: InstanceState::Running,
            in_group: true,
            leaving: false,
        });
    }
    let after = list_group(&client, "muster-lab").await.expect("listed");
    assert_eq!(
        ids(&after),
        ["i-01e2d3c4b5a697844", VM1, "i-0d1c2b3a495867016"]
    );
    assert_eq!(after.peers[2].address, Ipv4Addr::new(10, 77, 0, 16));
    assert_eq!(after.desired_capacity, 3);

    // EC2 still shows the killed instance, terminated and without an address.
    let described =
        muster::cloud::aws::ec2::describe_instances(&client, &["i-0a9d8c7b6e5f40133".to_string()])
            .await
            .expect("described");
    assert_eq!(described.len(), 1);
    assert_eq!(
        (described[0].state.as_str(), described[0].private_ip),
        ("terminated", None)
    );
}

#[tokio::test]
async fn the_world_file_is_read_on_every_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cloud.json");
    let write = |world: &LabCloud| {
        let tmp = dir.path().join("cloud.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(world).expect("json")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    };
    let mut w = world();
    write(&w);
    let lab = start(cloud::world_file(&path)).await;
    let client = aws_client(&lab, "eu-west-1").await;
    assert_eq!(
        list_group(&client, "muster-lab")
            .await
            .expect("listed")
            .peers
            .len(),
        3
    );

    w.instances[4].in_group = false;
    w.desired_capacity = None;
    write(&w);
    let view = list_group(&client, "muster-lab").await.expect("listed");
    assert_eq!(view.peers.len(), 2);
    assert_eq!(view.desired_capacity, 2, "no desired capacity: the members");

    // A broken file is a 500 for everyone, which clients retry; it names the file.
    std::fs::write(&path, "{ not json").expect("write");
    let reply = http()
        .put(lab.url.join("latest/api/token").expect("url"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .expect("answers");
    assert_eq!(reply.status(), 500);
    let err = list_group(&client, "muster-lab").await.expect_err("broken");
    let DiscoveryError::Aws(AwsError::Api(api)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((api.status, api.code.as_str()), (500, "InternalFailure"));
    assert!(
        api.message.contains("cloud.json:1:3: not valid JSON"),
        "{}",
        api.message
    );
    assert!(api.attempts > 1, "a 500 is retried");

    // A wrong value is located, never quoted (it could be the user data).
    std::fs::write(
        &path,
        r#"{"region": "r", "zone": "z", "group_name": "g", "access_key_id": "k", "instances": "hunter2"}"#,
    )
    .expect("write");
    let e = (cloud::world_file(&path))().expect_err("wrong type");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("cloud.json:1:"), "{e}");
}

#[tokio::test]
async fn a_foreign_access_key_is_refused_at_once() {
    let lab = start(cloud::fixed_world(world())).await;
    let client = client_with(
        &lab,
        "eu-west-1",
        Credentials::new("AKIDSOMEONEELSE", "secret", None),
    );
    let err = list_group(&client, "muster-lab")
        .await
        .expect_err("refused");
    let DiscoveryError::Aws(AwsError::Api(api)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (api.status, api.code.as_str(), api.attempts),
        (403, "InvalidClientTokenId", 1)
    );
}

// ---- the pure handlers ----

const NOW: SystemTime = SystemTime::UNIX_EPOCH;

fn at(secs: u64) -> SystemTime {
    NOW + Duration::from_secs(1_772_360_000 + secs)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("header value"));
    }
    h
}

fn get(world: &LabCloud, tokens: &Tokens, peer: IpAddr, path: &str, token: &str) -> cloud::Reply {
    let h = headers(&[("x-aws-ec2-metadata-token", token)]);
    let req = ImdsRequest {
        method: &Method::GET,
        path,
        headers: &h,
        peer,
    };
    imds::handle(world, tokens, &req, at(10))
}

fn put_token(tokens: &Tokens, peer: IpAddr, h: &HeaderMap) -> cloud::Reply {
    let req = ImdsRequest {
        method: &Method::PUT,
        path: imds::TOKEN_PATH,
        headers: h,
        peer,
    };
    imds::handle(&world(), tokens, &req, at(0))
}

#[test]
fn imds_unknown_peers_get_404_and_known_ones_their_own_data() {
    let (world, tokens) = (world(), Tokens::from_secret(b"k"));
    let stranger = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 99));
    let token = tokens.issue(stranger, 60, at(0));
    let r = get(
        &world,
        &tokens,
        stranger,
        "/latest/meta-data/instance-id",
        &token,
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.body.contains("<title>404 - Not Found</title>"),
        "{}",
        r.body
    );

    // A terminated VM's address asks nobody's data; a running one at it would.
    let killed = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 12));
    let token = tokens.issue(killed, 60, at(0));
    let r = get(
        &world,
        &tokens,
        killed,
        "/latest/meta-data/instance-id",
        &token,
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let vm3 = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 13));
    let token = tokens.issue(vm3, 60, at(0));
    let r = get(&world, &tokens, vm3, "/latest/meta-data/local-ipv4", &token);
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "10.77.0.13"));
}

#[test]
fn imds_tokens_are_bound_to_the_peer_and_expire() {
    let (world, tokens) = (world(), Tokens::from_secret(b"k"));
    let other = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 13));
    let path = "/latest/meta-data/instance-id";
    let mine = tokens.issue(LOCAL, 60, at(0));
    assert_eq!(
        get(&world, &tokens, LOCAL, path, &mine).status,
        StatusCode::OK
    );
    let theirs = tokens.issue(other, 60, at(0));
    assert_eq!(
        get(&world, &tokens, LOCAL, path, &theirs).status,
        StatusCode::UNAUTHORIZED,
        "another VM's token"
    );
    let short = tokens.issue(LOCAL, 5, at(0));
    assert_eq!(
        get(&world, &tokens, LOCAL, path, &short).status,
        StatusCode::UNAUTHORIZED,
        "expired (asked at +10 s)"
    );
    let foreign = Tokens::from_secret(b"another server").issue(LOCAL, 60, at(0));
    for bad in [foreign.as_str(), "", "AAAA", "not base64 at all!"] {
        assert_eq!(
            get(&world, &tokens, LOCAL, path, bad).status,
            StatusCode::UNAUTHORIZED,
            "{bad:?}"
        );
    }
}

#[test]
fn imds_token_requests_follow_the_real_rules() {
    let tokens = Tokens::from_secret(b"k");
    let ok = put_token(
        &tokens,
        LOCAL,
        &headers(&[("x-aws-ec2-metadata-token-ttl-seconds", "21600")]),
    );
    assert_eq!(ok.status, StatusCode::OK);
    assert!(tokens.verify(&ok.body, LOCAL, at(21_599)));
    assert!(!tokens.verify(&ok.body, LOCAL, at(21_600)));
    for ttl in ["0", "21601", "-1", "soon"] {
        let r = put_token(
            &tokens,
            LOCAL,
            &headers(&[("x-aws-ec2-metadata-token-ttl-seconds", ttl)]),
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "ttl {ttl}");
    }
    let proxied = put_token(
        &tokens,
        LOCAL,
        &headers(&[
            ("x-aws-ec2-metadata-token-ttl-seconds", "60"),
            ("x-forwarded-for", "10.0.0.1"),
        ]),
    );
    assert_eq!(proxied.status, StatusCode::FORBIDDEN);

    let h = HeaderMap::new();
    let wrong_method = ImdsRequest {
        method: &Method::GET,
        path: imds::TOKEN_PATH,
        headers: &h,
        peer: LOCAL,
    };
    assert_eq!(
        imds::handle(&world(), &tokens, &wrong_method, at(0)).status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[test]
fn imds_listings_and_documents_have_the_real_shapes() {
    let (world, tokens) = (world(), Tokens::from_secret(b"k"));
    let token = tokens.issue(LOCAL, 60, at(0));
    let body = |path: &str| {
        let r = get(&world, &tokens, LOCAL, path, &token);
        assert_eq!(r.status, StatusCode::OK, "{path}");
        r.body
    };
    assert_eq!(body("/latest/"), "dynamic\nmeta-data\nuser-data");
    assert_eq!(
        body("/latest/meta-data/"),
        "ami-id\nhostname\niam/\ninstance-id\ninstance-type\nlocal-hostname\n\
         local-ipv4\nmac\nplacement/\ntags/"
    );
    assert_eq!(
        body("/latest/meta-data/placement"),
        "availability-zone\nregion"
    );
    assert_eq!(
        body("/latest/meta-data/tags/instance"),
        "Name\naws:autoscaling:groupName"
    );
    assert_eq!(body("/latest/meta-data/mac"), "52:54:00:77:00:11");
    assert_eq!(
        body("/latest/meta-data/iam/security-credentials/"),
        "muster-lab-node"
    );
    let creds = body("/latest/meta-data/iam/security-credentials/muster-lab-node");
    let creds = parse_imds_role_credentials(&creds).expect("the documented shape");
    assert_eq!(creds.access_key_id(), "ASIAMUSTERLAB0000001");

    let doc: serde_json::Value =
        serde_json::from_str(&body("/latest/dynamic/instance-identity/document")).expect("json");
    assert_eq!(doc["instanceId"], VM1);
    assert_eq!(doc["privateIp"], "127.0.0.1");
    assert_eq!(doc["availabilityZone"], "eu-west-1a");

    let user_data = get(&world, &tokens, LOCAL, "/latest/user-data", &token);
    assert_eq!(user_data.content_type, "application/octet-stream");
    let missing = get(
        &world,
        &tokens,
        LOCAL,
        "/latest/meta-data/public-ipv4",
        &token,
    );
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let mut no_data = world.clone();
    no_data.user_data.clear();
    let r = get(&no_data, &tokens, LOCAL, "/latest/user-data", &token);
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no user data: 404 as on EC2"
    );
}

const SIGNED: &str = "AWS4-HMAC-SHA256 Credential=ASIAMUSTERLAB0000001/20260301/eu-west-1/ec2/aws4_request, \
                      SignedHeaders=content-type;host;x-amz-date, Signature=0000";

fn call(auth: Option<&str>, body: &str) -> cloud::Reply {
    let h = match auth {
        Some(a) => headers(&[("authorization", a)]),
        None => HeaderMap::new(),
    };
    query::handle(&world(), &h, body.as_bytes(), "req-1")
}

fn error_code(r: &cloud::Reply) -> (u16, String) {
    let e = parse_error_response(&r.body).unwrap_or_else(|| panic!("not an error: {}", r.body));
    assert_eq!(e.request_id.as_deref(), Some("req-1"));
    (r.status.as_u16(), e.code)
}

#[test]
fn query_unknown_actions_are_invalid_action_in_the_services_shape() {
    let r = call(Some(SIGNED), "Action=RunInstances&Version=2016-11-15");
    assert_eq!(error_code(&r), (400, "InvalidAction".to_string()));
    assert!(
        r.body.contains("<Response><Errors>"),
        "EC2 shape: {}",
        r.body
    );

    let r = call(
        Some(SIGNED),
        "Action=UpdateAutoScalingGroup&Version=2011-01-01",
    );
    assert_eq!(error_code(&r), (400, "InvalidAction".to_string()));
    assert!(r.body.contains("<ErrorResponse"), "Query shape: {}", r.body);

    // A known action under the other service's version is unknown there.
    let r = call(Some(SIGNED), "Action=DescribeInstances&Version=2011-01-01");
    assert_eq!(error_code(&r), (400, "InvalidAction".to_string()));
}

#[test]
fn query_requests_must_name_the_labs_key() {
    let asg = "Action=DescribeAutoScalingGroups&Version=2011-01-01";
    let ec2 = "Action=DescribeInstances&Version=2016-11-15";
    assert_eq!(
        error_code(&call(None, asg)),
        (403, "MissingAuthenticationToken".to_string())
    );
    assert_eq!(
        error_code(&call(None, ec2)),
        (403, "MissingAuthenticationToken".to_string())
    );
    let foreign = SIGNED.replace("ASIAMUSTERLAB0000001", "AKIDSOMEONEELSE");
    assert_eq!(
        error_code(&call(Some(&foreign), asg)),
        (403, "InvalidClientTokenId".to_string())
    );
    assert_eq!(
        error_code(&call(Some(&foreign), ec2)),
        (401, "AuthFailure".to_string())
    );
    let basic = "Basic QVNJQU1VU1RFUkxBQjAwMDAwMDE6eA==";
    assert_eq!(
        error_code(&call(Some(basic), ec2)),
        (401, "AuthFailure".to_string())
    );
    assert_eq!(call(Some(SIGNED), ec2).status, StatusCode::OK);
}

#[test]
fn query_describe_auto_scaling_groups_lists_members_in_launch_order() {
    let r = call(
        Some(SIGNED),
        "Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1=muster-lab",
    );
    assert_eq!(r.status, StatusCode::OK);
    let page = parse_describe_auto_scaling_groups(&r.body).expect("parses");
    let g = &page.groups[0];
    assert_eq!((g.name.as_str(), g.desired_capacity), ("muster-lab", 3));
    let ids: Vec<&str> = g.instances.iter().map(|i| i.instance_id.as_str()).collect();
    assert_eq!(ids, [VM1, "i-0a9d8c7b6e5f40133", "i-01e2d3c4b5a697844"]);

    let r = call(
        Some(SIGNED),
        "Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1=other",
    );
    let page = parse_describe_auto_scaling_groups(&r.body).expect("parses");
    assert!(
        page.groups.is_empty(),
        "an unknown name is an empty list, not an error"
    );
}

#[test]
fn query_describe_instances_filters_like_ec2() {
    let ids_of = |body: &str| -> Vec<(String, String)> {
        let r = call(
            Some(SIGNED),
            &format!("Action=DescribeInstances&Version=2016-11-15{body}"),
        );
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        parse_describe_instances(&r.body)
            .expect("parses")
            .instances
            .into_iter()
            .map(|i| (i.instance_id, i.state))
            .collect()
    };
    assert_eq!(ids_of("").len(), 5, "every instance, terminated included");
    assert_eq!(
        ids_of("&Filter.1.Name=instance-state-name&Filter.1.Value.1=stopped"),
        [("i-0f0e0d0c0b0a09055".to_string(), "stopped".to_string())]
    );
    assert_eq!(
        ids_of(
            "&Filter.1.Name=tag%3Aaws%3Aautoscaling%3AgroupName&Filter.1.Value.1=muster-lab\
             &Filter.2.Name=instance-state-name&Filter.2.Value.1=running"
        )
        .len(),
        3
    );
    assert_eq!(
        ids_of("&Filter.1.Name=private-ip-address&Filter.1.Value.1=10.77.0.13"),
        [("i-0a9d8c7b6e5f40133".to_string(), "running".to_string())]
    );
    assert_eq!(
        ids_of(
            "&Filter.1.Name=instance-id&Filter.1.Value.1=i-nope&Filter.1.Value.2=i-05b2e7d9a1c3f4022"
        ),
        [("i-05b2e7d9a1c3f4022".to_string(), "terminated".to_string())],
        "unknown ids in a filter are left out"
    );

    let r = call(
        Some(SIGNED),
        "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-nope",
    );
    assert_eq!(
        error_code(&r),
        (400, "InvalidInstanceID.NotFound".to_string())
    );
    let r = call(
        Some(SIGNED),
        "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1=x",
    );
    assert_eq!(error_code(&r), (400, "InvalidParameterValue".to_string()));
}

#[test]
fn names_are_escaped_and_user_data_never_shown() {
    let mut w = world();
    w.group_name = "a&b<c>".into();
    w.user_data = "secret: hunter2".into();
    let h = headers(&[("authorization", SIGNED)]);
    let r = query::handle(
        &w,
        &h,
        b"Action=DescribeAutoScalingGroups&Version=2011-01-01",
        "req-1",
    );
    let page = parse_describe_auto_scaling_groups(&r.body).expect("well-formed");
    assert_eq!(page.groups[0].name, "a&b<c>");
    let shown = format!("{w:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("<15 bytes>"),
        "{shown}"
    );
}

#[test]
fn the_fixture_round_trips() {
    let w: LabCloud = serde_json::from_str(&fixture_text()).expect("parses");
    let again: LabCloud =
        serde_json::from_str(&serde_json::to_string(&w).expect("json")).expect("parses");
    assert_eq!(w, again);
    assert_eq!(w.members().count(), 3);
    assert_eq!(
        cloud::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_772_359_500_123)),
        "2026-03-01T10:05:00.123Z"
    );
}
