//! The tier-2 harness: a `muster lab` per test in its own directory and
//! namespace, removed when the test ends (pass or fail), plus the probes the
//! tests need (serial console, status endpoints, the VIP, etcdctl).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use muster::lab::net;
use muster::lab::ops::{Lab, UpArgs};
use muster::lab::spec::{LabState, STATUS_PORT};
use muster::pki::{ClusterCa, NodeIdentity, ensure_node_certs};
use muster::state::Status;

/// The node image the tests boot: `bash image/build.sh` makes it.
pub fn image() -> PathBuf {
    let path = std::env::var_os("MUSTER_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/image/muster.qcow2"));
    assert!(
        path.is_file(),
        "tier 2 needs the node image at {}: run `bash image/build.sh` first (ci/test.sh does)",
        path.display()
    );
    path
}

/// The PXE set beside the image (`build/image/pxe`).
pub fn pxe_set() -> PathBuf {
    let dir = image().with_file_name("pxe");
    assert!(
        dir.join("muster.ipxe").is_file(),
        "no PXE set in {}",
        dir.display()
    );
    dir
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `target/<profile>/muster`, beside this test binary's `deps/` directory:
/// built by cargo with the agent crate's own tests.
pub fn muster_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("muster");
    assert!(
        bin.is_file(),
        "{} missing: build it with `cargo build -p muster-agent --bin muster`",
        bin.display()
    );
    bin
}

/// Debian 13's kubectl, unpacked by `ci/install-deps.sh` (the same lookup
/// as the agent's tier-1 support, which this crate cannot import).
fn kubectl_bin() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("MUSTER_KUBECTL")
            .unwrap_or_else(|_| "/opt/muster-test/kubectl/usr/bin/kubectl".into()),
    );
    assert!(
        path.is_file(),
        "kubectl not found at {} (set MUSTER_KUBECTL): run `bash ci/install-deps.sh`",
        path.display()
    );
    path
}

/// The etcdctl from ci/install-deps.sh (Debian 13's, as the image ships).
fn etcdctl() -> PathBuf {
    std::env::var_os("MUSTER_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/muster-test/etcd/usr/bin/etcd"))
        .with_file_name("etcdctl")
}

/// Time budgets: generous under TCG (2 shared cores), shorter with KVM.
pub fn budget(tcg_secs: u64) -> Duration {
    match muster::lab::vm::detect_accel() {
        muster::lab::spec::Accel::Tcg => Duration::from_secs(tcg_secs),
        muster::lab::spec::Accel::Kvm => Duration::from_secs(tcg_secs / 3),
    }
}

/// A lab that is torn down (VMs, namespace, files) when dropped.
pub struct TestLab {
    pub lab: Lab,
    pub root: tempfile::TempDir,
}

impl TestLab {
    /// A fresh lab named after the test; leftovers of crashed runs go first.
    pub fn new(tag: &str) -> TestLab {
        sweep_stale();
        let root = tempfile::Builder::new()
            .prefix("muster-tier2-")
            .tempdir()
            .expect("lab root");
        std::fs::write(
            root.path().join("owner.pid"),
            std::process::id().to_string(),
        )
        .expect("owner pid");
        let lab = Lab {
            root: root.path().to_path_buf(),
            name: format!("t2-{tag}-{}", std::process::id() % 100_000),
            muster_bin: muster_bin(),
        };
        TestLab { lab, root }
    }

    /// Boots the lab from disks (without waiting for it to assemble).
    pub fn up(&self, control_plane: u32, workers: u32, image: &Path) -> LabState {
        self.up_with(disk_boot(control_plane, workers, image))
    }

    /// Like [`TestLab::up`] with extra kernel command-line arguments
    /// (`muster lab up --kernel-arg`).
    pub fn up_with_kernel_args(
        &self,
        control_plane: u32,
        image: &Path,
        kernel_args: &[&str],
    ) -> LabState {
        self.up_with(UpArgs {
            kernel_args: kernel_args.iter().map(|a| a.to_string()).collect(),
            ..disk_boot(control_plane, 0, image)
        })
    }

    /// Boots the lab over the network from a PXE set (diskless VMs; the
    /// root image, Kubernetes binaries included, lives in RAM, hence the
    /// memory).
    pub fn up_pxe(&self, nodes: u32, pxe: &Path) -> LabState {
        self.up_with(UpArgs {
            control_plane: nodes,
            workers: 0,
            memory_mb: 3072,
            cpus: 1,
            image: PathBuf::new(),
            accel: None,
            pxe: Some(pxe.to_path_buf()),
            wait: None,
            kernel_args: Vec::new(),
        })
    }

    fn up_with(&self, args: UpArgs) -> LabState {
        self.lab.up(&args).unwrap_or_else(|e| panic!("lab up: {e}"))
    }

    pub fn state(&self) -> LabState {
        self.lab.load().expect("lab.json")
    }

    /// Waits until the cluster has assembled; returns how long it took.
    pub fn wait_assembled(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        if let Err(e) = self.lab.wait(limit) {
            panic!("{e}\n{}", self.consoles_tail());
        }
        started.elapsed()
    }

    /// Node `index`'s serial console so far, without terminal escapes.
    pub fn serial(&self, index: u32) -> String {
        let path = self
            .root
            .path()
            .join(&self.lab.name)
            .join(format!("node-{index}/serial.log"));
        strip_ansi(&String::from_utf8_lossy(
            &std::fs::read(path).unwrap_or_default(),
        ))
    }

    /// Waits until node `index`'s console shows `needle`; returns the time waited.
    pub fn wait_serial(&self, index: u32, needle: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.serial(index).contains(needle) {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                panic!(
                    "node-{index}: {needle:?} not on the console after {limit:?}\n{}",
                    tail(&self.serial(index), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of every node's console, for failure messages.
    /// They go to stdout at once; the returned line only points there, so
    /// a failure message stays short and ends the test's output (CI keeps
    /// the head and the tail of a long log, not its middle).
    pub fn consoles_tail(&self) -> String {
        for n in &self.state().nodes {
            println!(
                "--- node-{} console (last lines) ---\n{}",
                n.index,
                tail(&self.serial(n.index), 15)
            );
        }
        "(the VMs' last console lines are in the test's stdout above)".to_string()
    }

    /// Node `index`'s status report. A VM under TCG on a busy 2-core host
    /// can miss one request's deadline, so this tries for up to 15 s.
    pub fn status(&self, index: u32) -> Option<Status> {
        let lab = self.state();
        wait_for(Duration::from_secs(15), || {
            self.status_at(&lab, lab.node_ip(index))
        })
    }

    fn status_at(&self, lab: &LabState, ip: Ipv4Addr) -> Option<Status> {
        let body = net::http_get(
            &lab.netns(),
            ip,
            STATUS_PORT,
            "/status",
            Duration::from_secs(1),
        )
        .ok()?;
        serde_json::from_str(&body).ok()
    }

    /// The Kubernetes API answers `/readyz` through the VIP, asked with
    /// the admin kubeconfig `lab up` wrote.
    pub fn api_ready(&self) -> bool {
        let lab = self.state();
        net::api_ready(
            &lab.netns(),
            &self.root.path().join(&self.lab.name).join("admin.conf"),
            Duration::from_secs(3),
        )
    }

    /// `kubectl ARGS` inside the lab network with the lab's admin
    /// kubeconfig; `stdin` is fed to it (`apply -f -`).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let lab = self.state();
        let mut cmd = net::in_netns(&lab.netns(), &kubectl_bin().display().to_string());
        cmd.arg(format!(
            "--kubeconfig={}",
            self.root
                .path()
                .join(&self.lab.name)
                .join("admin.conf")
                .display()
        ))
        .arg("--request-timeout=30s")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(text) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl's trimmed stdout when it succeeded, `None` otherwise.
    pub fn kubectl_ok(&self, args: &[&str]) -> Option<String> {
        let out = self.kubectl(args, None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The instance answering on the VIP right now.
    pub fn vip_instance(&self) -> Option<String> {
        let lab = self.state();
        self.status_at(&lab, lab.vip()).and_then(|s| s.instance_id)
    }

    /// `etcdctl` until it succeeds (one request can miss its deadline
    /// under TCG), for at most a minute; the last output either way.
    pub fn etcdctl_retried(&self, index: u32, args: &[&str]) -> Output {
        let mut last = None;
        wait_for(budget(60), || {
            let out = self.etcdctl(index, args);
            let ok = out.status.success();
            last = Some(out);
            ok.then_some(())
        });
        last.expect("etcdctl ran at least once")
    }

    /// Puts `key` through node `index` (retried); panics with etcdctl's
    /// error when it never succeeds.
    pub fn etcd_put(&self, index: u32, key: &str, value: &str) {
        let out = self.etcdctl_retried(index, &["put", key, value]);
        assert!(
            out.status.success(),
            "etcdctl put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The value of `key` as node `index` reads it (a failed request is
    /// retried; an answer without the key is an empty string), and
    /// etcdctl's stderr.
    pub fn etcd_get(&self, index: u32, key: &str) -> (String, String) {
        let out = self.etcdctl_retried(index, &["get", key, "--print-value-only"]);
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// etcdctl inside the lab network against node `index`, with a client
    /// certificate derived from the lab's cluster secret, as any holder of
    /// the secret could.
    pub fn etcdctl(&self, index: u32, args: &[&str]) -> Output {
        let lab = self.state();
        let pki = self.root.path().join("etcdctl-pki");
        let ca = ClusterCa::derive(&lab.name, lab.secret.as_bytes()).expect("derive the CA");
        ensure_node_certs(
            &pki,
            &ca,
            &NodeIdentity::new("tier2-observer", [lab.gateway().into()]),
        )
        .expect("client certificate");
        std::fs::write(pki.join("ca.crt"), ca.cert_pem()).expect("ca.crt");
        let mut cmd = net::in_netns(&lab.netns(), &etcdctl().display().to_string());
        cmd.arg(format!("--endpoints=https://{}:2379", lab.node_ip(index)))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", pki.join("client.crt").display()))
            .arg(format!("--key={}", pki.join("client.key").display()))
            .arg("--dial-timeout=3s")
            .arg("--command-timeout=10s")
            .args(args);
        cmd.output().expect("run etcdctl")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Err(e) = self.lab.down() {
            eprintln!("tier2: removing lab {}: {e}", self.lab.name);
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes CSI sequences (colours, cursor moves) systemd writes to the console.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Removes labs left by test runs that died before their guard ran: each
/// lab root holds its owner's pid; a dead owner's labs are taken down.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let root = e.path();
        if !e.file_name().to_string_lossy().starts_with("muster-tier2-") {
            continue;
        }
        let owner = std::fs::read_to_string(root.join("owner.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        for lab in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if lab.path().join("lab.json").exists() {
                let stale = Lab {
                    root: root.clone(),
                    name: lab.file_name().to_string_lossy().into_owned(),
                    muster_bin: PathBuf::new(),
                };
                let _ = stale.down();
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// Runs a command and returns its stdout, failing the test on error.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 100 ms until it gives a value or `limit` has passed.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// `lab up` from disks: each VM gets room for etcd, the Kubernetes control
/// plane and a kubelet.
fn disk_boot(control_plane: u32, workers: u32, image: &Path) -> UpArgs {
    UpArgs {
        control_plane,
        workers,
        memory_mb: 2048,
        cpus: 1,
        image: image.to_path_buf(),
        accel: None,
        pxe: None,
        wait: None,
        kernel_args: Vec::new(),
    }
}
