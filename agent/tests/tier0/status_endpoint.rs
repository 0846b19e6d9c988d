//! The agent's status endpoint on loopback: `/status` is the JSON of
//! `muster status --output json`, `/metrics` the same status for
//! Prometheus, `/healthz` says ok. It answers from before identify on, and
//! never shows the cluster secret (S5). The last two tests run the real
//! `muster agent` binary (no root needed: etcd is never started).

use crate::support::http_get::{self, Answer};

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster::image::{ImageFacts, UsrFacts};
use muster::metadata::ProviderKind;
use muster::state::{
    EtcdStatus, KubernetesStatus, MemberStatus, NodeStatus, Phase, Status, StatusBoard, VipStatus,
};
use muster::vip::RenewalSummary;
use muster::{metrics, status_endpoint};
use serde_json::Value;

const SECRET: &str = "tier0-status-secret-0123456789abcdef0123";

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/status")
        .join(name)
}

/// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
fn assert_golden(name: &str, got: &str) {
    let path = fixture_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(got, want, "{} differs", path.display());
}

/// A control-plane node in steady state holding the VIP, on the image.
fn sample() -> Status {
    let member = |id: &str, n: u8, learner: bool, healthy: bool| MemberStatus {
        id: id.into(),
        name: format!("i-0{n}"),
        peer_url: format!("https://10.77.0.1{n}:2380"),
        is_learner: learner,
        healthy,
        catching_up: false,
    };
    let mut s = Status::new(Phase::SteadyState);
    s.provider = Some(ProviderKind::Qemu);
    s.instance_id = Some("i-01".into());
    s.hostname = Some("lab-node-1".into());
    s.cluster = Some("lab".into());
    s.role = Some("control-plane".into());
    s.message = Some("etcd: 2 of 3 members healthy; this member leads".into());
    s.etcd = Some(EtcdStatus {
        cluster_id: "cdf818194e3a8c32".into(),
        member_id: "8e9e05c52164694d".into(),
        leader_id: "8e9e05c52164694d".into(),
        members: vec![
            member("8e9e05c52164694d", 1, false, true),
            member("91bc3c398fb3c146", 2, false, false),
            member("fd422379fda50e48", 3, true, true),
        ],
    });
    s.vip = Some(VipStatus {
        address: "10.77.0.100".parse().expect("ip"),
        mode: "arp".into(),
        role: "holder".into(),
        holder: true,
        since: 1_700_000_000,
        takeovers: 1,
        renewals: Some(RenewalSummary {
            count: 40,
            p50_ms: 3,
            p99_ms: 12,
            max_ms: 30,
        }),
        priority: Some("real-time".into()),
    });
    s.kubernetes = Some(KubernetesStatus {
        version: "v1.28.7".into(),
        components: vec![
            "kube-apiserver".into(),
            "kube-controller-manager".into(),
            "kube-scheduler".into(),
        ],
        apiserver_ready: true,
        controller_manager_leader: Some("lab-node-1".into()),
        scheduler_leader: Some("node-2".into()),
        objects: Some("6d1f0c".into()),
        message: None,
        node: Some(NodeStatus {
            name: "lab-node-1".into(),
            registered: true,
            ready: true,
            pod_cidr: Some("10.244.0.0/24".into()),
            routes: 2,
            message: None,
        }),
    });
    s.image = Some(ImageFacts {
        id: Some("muster".into()),
        version: Some("1.2.3".into()),
        os: Some("Debian GNU/Linux 13 (trixie)".into()),
        usr: UsrFacts {
            mount_point: Some("/usr".into()),
            source: Some("/dev/mapper/usr".into()),
            fstype: Some("erofs".into()),
            read_only: true,
            device: Some("253:0".into()),
            verity: true,
            dm_name: Some("usr".into()),
            usrhash: Some(
                "5ec5e6e4965538d8ae9fa1787ddfcf213b530ca99c358ff75a5fe9e5ca8cecb5".into(),
            ),
        },
        kubernetes_version: None,
        kubernetes_binaries: vec![],
    });
    s.updated_at = 1_764_662_400;
    s.pid = 4242;
    s
}

#[test]
fn the_status_json_shape_is_stable() {
    let mut text = serde_json::to_string_pretty(&sample()).expect("json");
    text.push('\n');
    assert_golden("status.json", &text);
}

#[test]
fn the_metrics_text_is_stable() {
    let calls = muster::calls::Counts {
        group_lists: 42,
        etcd_connections: 7,
    };
    assert_golden("metrics.txt", &metrics::render(&sample(), calls));
}

/// GETs on a blocking thread (the endpoint runs on this test's runtime).
async fn fetch(addr: SocketAddr, method: &'static str, path: &'static str) -> Answer {
    tokio::task::spawn_blocking(move || {
        http_get::request(method, addr, path, Duration::from_secs(5))
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test]
async fn the_endpoint_serves_the_live_board() {
    let board = StatusBoard::new(sample());
    let listener = status_endpoint::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(status_endpoint::serve(listener, board.clone(), async {
        let _ = stopped.await;
    }));

    let status = fetch(addr, "GET", "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.content_type, "application/json");
    let json: Value = serde_json::from_str(&status.body).expect("json");
    assert_eq!(json, serde_json::to_value(board.get()).expect("json"));
    assert_eq!(json["etcd"]["members"][2]["is_learner"], true);
    assert_eq!(json["vip"]["holder"], true);
    assert_eq!(json["image"]["usr"]["verity"], true);

    let metrics = fetch(addr, "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4")
    );
    assert_eq!(
        metrics.body,
        metrics::render(&board.get(), muster::calls::snapshot())
    );
    for line in [
        "muster_up 1",
        "muster_phase{phase=\"steady-state\"} 1",
        "muster_phase{phase=\"etcd\"} 0",
        "muster_etcd_members 3",
        "muster_etcd_healthy_members 2",
        "muster_etcd_learners 1",
        "muster_etcd_leader 1",
        "muster_vip_holder 1",
        "muster_vip_takeovers_total 1",
        "muster_kubernetes_apiserver_ready 1",
        "muster_kubernetes_leader{component=\"kube-controller-manager\"} 1",
        "muster_kubernetes_leader{component=\"kube-scheduler\"} 0",
        "muster_vip_renewal_milliseconds{quantile=\"0.99\"} 12",
        "muster_image_verity 1",
        "muster_image_usr_read_only 1",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no `{line}` in:\n{}",
            metrics.body
        );
    }

    let health = fetch(addr, "GET", "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    assert_eq!(fetch(addr, "GET", "/nope").await.status, 404);
    assert_eq!(fetch(addr, "POST", "/status").await.status, 405);

    // Live: a change on the board shows at once.
    board
        .update(|s| {
            s.phase = Phase::Etcd;
            s.vip = None;
        })
        .expect("in memory");
    let json: Value =
        serde_json::from_str(&fetch(addr, "GET", "/status").await.body).expect("json");
    assert_eq!(json["phase"], "etcd");
    assert!(json.get("vip").is_none());
    let metrics = fetch(addr, "GET", "/metrics").await.body;
    assert!(metrics.contains("muster_vip_holder 0\n"), "{metrics}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("graceful stop")
        .expect("join")
        .expect("served without error");
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = status_endpoint::bind(addr).await.expect_err("taken");
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("--status-listen"),
        "{text}"
    );
}

/// A real `muster agent` whose stderr (JSON log lines) is collected.
struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(args: &[String]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["agent", "--log-format=json", "--status-listen=127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("MUSTER_AWS_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn muster agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Agent { child, lines }
    }

    fn log(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Waits for a log line whose message starts with `prefix`.
    fn wait_for_log(&self, prefix: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with(prefix)));
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no `{prefix}` log line within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address the status endpoint bound (from its log line).
    fn status_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("status endpoint listening", Duration::from_secs(20));
        line["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {line}"))
    }

    /// Polls `/status` until `ok` holds; returns that status.
    fn wait_for_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let addr = self.status_addr();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(v) = http_get::get(addr, "/status")
                .ok()
                .and_then(|a| serde_json::from_str::<Value>(&a.body).ok())
            {
                if ok(&v) {
                    return v;
                }
                last = v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "status never showed {what}; last: {last:#}\nlog:\n{}",
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_agent_answers_while_it_is_still_identifying() {
    // A metadata service that accepts connections and never answers: the
    // agent retries identify for 30 s.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}/", silent.local_addr().expect("addr"));
    let state = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&[
        "--provider=aws".into(),
        format!("--endpoint={endpoint}"),
        format!("--state-dir={}", state.path().join("state").display()),
        "--defaults=/nonexistent".into(),
        "--cmdline-file=/dev/null".into(),
    ]);
    let status = agent.wait_for_status("phase identify", |s| s["phase"] == "identify");
    assert!(
        status["image"].is_object(),
        "image facts from the start: {status:#}"
    );
    assert_eq!(
        http_get::get(agent.status_addr(), "/healthz")
            .expect("healthz")
            .body,
        "ok"
    );
    let metrics = http_get::get(agent.status_addr(), "/metrics").expect("metrics");
    assert!(
        metrics
            .body
            .contains("muster_phase{phase=\"identify\"} 1\n")
    );
    assert!(
        !state.path().join("state").exists(),
        "nothing written before the config is valid (S6)"
    );
    // The image line is logged before identify, whatever identify does.
    agent.wait_for_log("image ", Duration::from_secs(5));
}

#[test]
fn a_real_agent_past_configure_never_shows_the_secret_and_matches_muster_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let facts = dir.path().join("facts.yaml");
    std::fs::write(
        &facts,
        "instance_id: i-01\nhostname: h1\nprivate_ipv4: 127.0.0.1\n",
    )
    .expect("facts");
    let config = dir.path().join("cluster.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster:\n  name: tier0\n  secret: \"{SECRET}\"\n\
             topology:\n  controlPlane:\n    count: 1\n\
             discovery:\n  static:\n    peers: [127.0.0.1]\n\
             cloud:\n  endpoint: http://127.0.0.1:9/\n"
        ),
    )
    .expect("config");
    let state = dir.path().join("state");
    // No etcd binary: the agent gets as far as starting etcd, then retries.
    let agent = Agent::start(&[
        "--provider=file".into(),
        format!("--metadata-file={}", facts.display()),
        format!("--config={}", config.display()),
        format!("--state-dir={}", state.display()),
        "--defaults=/nonexistent".into(),
        "--cmdline-file=/dev/null".into(),
        "--supervisor=child".into(),
        "--etcd-bin=/nonexistent/etcd".into(),
        "--tick-ms=200".into(),
    ]);
    let status = agent.wait_for_status("phase etcd", |s| s["phase"] == "etcd");
    assert_eq!(status["cluster"], "tier0");
    assert_eq!(status["instance_id"], "i-01");
    let addr = agent.status_addr();

    // S5: the secret is in the config, and nowhere in what the agent shows.
    let bodies = [
        http_get::get(addr, "/status").expect("status").body,
        http_get::get(addr, "/metrics").expect("metrics").body,
        std::fs::read_to_string(state.join("status.json")).expect("status.json"),
        agent.log(),
    ];
    for body in &bodies {
        assert!(!body.contains(SECRET), "the secret leaked:\n{body}");
    }

    // /status is what `muster status --output json` prints (the status
    // changes every round, so compare until one pair is taken between two).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served: Value =
            serde_json::from_str(&http_get::get(addr, "/status").expect("status").body)
                .expect("json");
        let out = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["status", "--output", "json", "--state-dir"])
            .arg(&state)
            .output()
            .expect("muster status");
        let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
        if served == printed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/status and `muster status` differ:\n{served:#}\n{printed:#}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    let text = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["status", "--state-dir"])
        .arg(&state)
        .output()
        .expect("muster status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("image:       image "), "{text}");
}
