//! Tier-1 multi-host harness: N "machines" as N network namespaces on one
//! Linux box, so real processes (etcd, the muster agent) talk over real
//! sockets, ARP and netlink as if they ran on separate hosts.
//!
//! # What it builds
//!
//! A [`Net`] is one L2 segment: a bridge `br0` living in its *own* namespace
//! (`<net>-br`), so the root namespace is never touched. Each [`Host`] is a
//! namespace `<net>-<host>` whose `eth0` is one end of a veth pair; the other
//! end (`v<index>-<host>`) is a port of the bridge. Hosts get `10.200.K.11`,
//! `.12`, ... on a /24 that is unique per `Net` on the machine (`K` is locked,
//! see below). Loopback is up everywhere. There are no other routes: no
//! default route, no NAT; hosts reach each other and nothing else.
//!
//! # Running things in a host
//!
//! Commands enter the host's namespace with `setns(2)` in a `pre_exec` hook
//! (the same thing `nsenter --net=/run/netns/NAME` does). Not `ip netns
//! exec`: it remounts `/sys`, which hides `/sys/fs/cgroup` (containerd/runc
//! then fail). Only the network namespace changes; the filesystem, PIDs and
//! cgroups are the machine's. [`Host::in_netns`] runs a Rust closure on a
//! thread inside the namespace (a current-thread tokio runtime built there
//! makes all its sockets in that namespace too).
//!
//! # Cleanup guarantees
//!
//! * Dropping the [`Net`] (panics included) SIGKILLs every process in every
//!   namespace of the Net -- found through `/proc/*/ns/net`, so daemons that
//!   forked away are caught too -- waits until none is left, deletes the
//!   veths, host namespaces and the bridge namespace, the per-Net temp dir
//!   (all `Host::dir`s) and the lock file. A [`Proc`] reaps its child on drop.
//! * The /24 is chosen under an `flock` on `/run/muster-tests/subnet-K.lock`,
//!   which also records the owner's pid. A test process that crashed (so no
//!   `Drop` ran) releases its lock by dying; [`sweep_stale`] (run once per
//!   process by `Net::new`, and whenever a stale slot is taken over) kills
//!   what is left in the namespaces `mtK-*`, deletes them and the temp dir.
//! * Set `MUSTER_KEEP_TEST_DIRS=1` to keep the per-host dirs (logs) after a
//!   run; when a test panics the tail of each host's `*.log` is printed.
//!
//! Needs root and iproute2 (`ip`); `bash ci/install-deps.sh` installs it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Where lock files live (tmpfs: a reboot clears them with the namespaces).
const STATE_DIR: &str = "/run/muster-tests";
const NETNS_DIR: &str = "/run/netns";
/// How long teardown waits for SIGKILLed processes to leave a namespace.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// One L2 segment with its hosts. See the module docs.
pub struct Net {
    name: String,
    slot: u8,
    bridge_ns: String,
    root: Option<tempfile::TempDir>,
    hosts: Mutex<Vec<Host>>,
    lock: SlotLock,
}

/// A handle on one host (namespace). Cheap to clone; the [`Net`] owns the
/// namespace and tears it down on drop (or earlier with [`Net::remove_host`]).
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    name: String,
    ns: String,
    ip: Ipv4Addr,
    bridge_ns: String,
    port: String,
    dir: PathBuf,
    removed: AtomicBool,
}

impl Net {
    /// A new, empty segment. `prefix_hint` (a test name) ends up in the
    /// namespace names to make leftovers easy to attribute.
    pub fn new(prefix_hint: &str) -> Net {
        assert!(
            nix::unistd::geteuid().is_root(),
            "tier-1 network-namespace tests need root"
        );
        assert!(
            Command::new("ip")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success()),
            "`ip` (iproute2) not found: run bash ci/install-deps.sh"
        );
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            sweep_stale();
        });

        let lock = SlotLock::acquire();
        let hint: String = prefix_hint
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .take(10)
            .collect();
        let hint = if hint.is_empty() {
            "net".to_string()
        } else {
            hint
        };
        let name = format!("mt{}-{hint}", lock.slot);
        let root = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("temp dir for the Net's hosts");
        lock.record(&name, root.path());

        // From here on, Drop cleans up whatever a failing step leaves behind.
        let net = Net {
            bridge_ns: format!("{name}-br"),
            slot: lock.slot,
            name,
            root: Some(root),
            hosts: Mutex::new(Vec::new()),
            lock,
        };
        ip(&["netns", "add", &net.bridge_ns]);
        ip_batch(
            &net.bridge_ns,
            &[
                "link set lo up".into(),
                "link add br0 type bridge forward_delay 0 stp_state 0".into(),
                "link set br0 up".into(),
            ],
        );
        net
    }

    /// `mtK-hint`: the prefix of every namespace of this Net.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment, e.g. `10.200.7.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.200.{}.0/24", self.slot)
    }

    /// An address on the segment that no host uses (from `.200` up), e.g.
    /// for a floating VIP.
    pub fn spare_ip(&self, n: u8) -> Ipv4Addr {
        assert!(n < 50, "spare_ip: n must be below 50");
        Ipv4Addr::new(10, 200, self.slot, 200 + n)
    }

    /// The namespace that holds the bridge.
    pub fn bridge_netns(&self) -> &str {
        &self.bridge_ns
    }

    /// Every namespace this Net created and has not removed yet.
    pub fn netns_names(&self) -> Vec<String> {
        let mut names = vec![self.bridge_ns.clone()];
        let hosts = self.hosts.lock().expect("hosts lock");
        names.extend(
            hosts
                .iter()
                .filter(|h| !h.is_removed())
                .map(|h| h.inner.ns.clone()),
        );
        names
    }

    /// The hosts added so far (removed ones included), in order.
    pub fn hosts(&self) -> Vec<Host> {
        self.hosts.lock().expect("hosts lock").clone()
    }

    /// Adds a host: namespace, veth into the bridge, next address, links up.
    /// `name`: lowercase letters, digits and `-`, at most 16 characters.
    pub fn add_host(&self, name: &str) -> Host {
        assert!(
            !name.is_empty()
                && name.len() <= 16
                && name != "br"
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "bad host name {name:?}: use [a-z0-9-], at most 16 chars, not \"br\""
        );
        let host = {
            let mut hosts = self.hosts.lock().expect("hosts lock");
            assert!(
                hosts.iter().all(|h| h.name() != name),
                "host {name} added twice"
            );
            let index = hosts.len() + 1;
            assert!(index <= 180, "at most 180 hosts per Net");
            let mut port = format!("v{index}-{name}");
            port.truncate(15); // IFNAMSIZ - 1
            let host = Host {
                inner: Arc::new(HostInner {
                    name: name.to_string(),
                    ns: format!("{}-{name}", self.name),
                    ip: Ipv4Addr::new(10, 200, self.slot, 10 + index as u8),
                    bridge_ns: self.bridge_ns.clone(),
                    port,
                    dir: self.root_dir().join(name),
                    removed: AtomicBool::new(false),
                }),
            };
            // Registered before anything exists, so Drop cleans a half-made host.
            hosts.push(host.clone());
            host
        };
        let h = &host.inner;
        fs::create_dir_all(&h.dir).expect("host dir");
        ip(&["netns", "add", &h.ns]);
        let peer = format!(
            "link add {} type veth peer name eth0 netns {}",
            h.port, h.ns
        );
        let attach = format!("link set {} master br0 up", h.port);
        ip_batch(&self.bridge_ns, &[peer, attach]);
        ip_batch(
            &h.ns,
            &[
                "link set lo up".into(),
                format!("addr add {}/24 dev eth0", h.ip),
                "link set eth0 up".into(),
                // Kubernetes components pick their address from the
                // default route's interface and refuse to start without
                // one; nothing answers at .1, and tests never leave the /24.
                format!("route add default via {} dev eth0", gateway(h.ip)),
            ],
        );
        host
    }

    /// A machine gone for good: kills all its processes, deletes its
    /// namespace and veth. Its [`Host::dir`] stays until the Net is dropped.
    pub fn remove_host(&self, host: &Host) {
        host.teardown();
    }

    fn root_dir(&self) -> &Path {
        self.root.as_ref().expect("Net root dir").path()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let hosts = std::mem::take(&mut *self.hosts.lock().unwrap_or_else(|e| e.into_inner()));
        if std::thread::panicking() {
            for h in &hosts {
                print_log_tails(h.dir());
            }
        }
        for h in &hosts {
            h.teardown();
        }
        kill_netns_procs(&self.bridge_ns);
        let _ = ip_try(&["netns", "delete", &self.bridge_ns]);
        // The temp dir (every Host::dir) goes when `root` drops, unless kept.
        if let Some(root) = self.root.take()
            && std::env::var_os("MUSTER_KEEP_TEST_DIRS").is_some()
        {
            eprintln!("netns: kept {}", root.keep().display());
        }
        self.lock.release();
    }
}

impl Host {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.inner.ip
    }

    pub fn netns_name(&self) -> &str {
        &self.inner.ns
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.inner.ns)
    }

    /// This host's own directory (state dir, config, logs). It survives
    /// [`Host::kill_all`] and [`Net::remove_host`] ("disk kept") and is
    /// removed when the Net is dropped.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn is_removed(&self) -> bool {
        self.inner.removed.load(Ordering::SeqCst)
    }

    /// A `Command` that runs `program` inside this host's network namespace.
    /// Use it for anything [`Host::spawn`] and [`Host::run`] do not cover,
    /// then [`Host::spawn_command`] to get a [`Proc`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.assert_present();
        let ns = File::open(self.netns_path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.netns_path().display()));
        let mut cmd = Command::new(program);
        // The host's own name, as a machine has: Kubernetes components
        // name themselves (leader leases) after the hostname.
        let name = std::ffi::CString::new(self.name()).expect("host names have no NUL");
        // SAFETY: setns(2), unshare(2) and sethostname(2) are single
        // async-signal-safe syscalls; the closure neither allocates nor
        // takes locks (the name was made before fork). `ns` is O_CLOEXEC
        // (std's default) so it is not leaked into the program.
        unsafe {
            cmd.pre_exec(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                nix::sched::unshare(CloneFlags::CLONE_NEWUTS).map_err(io::Error::from)?;
                nix::unistd::sethostname(std::ffi::OsStr::from_bytes(name.as_bytes()))
                    .map_err(io::Error::from)
            });
        }
        cmd
    }

    /// Starts `program args` in this host with `env` added to the inherited
    /// environment; stdout and stderr are appended to `log` (relative paths
    /// are under [`Host::dir`]).
    pub fn spawn(
        &self,
        program: impl AsRef<OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
        log: impl AsRef<Path>,
    ) -> Proc {
        let mut cmd = self.command(program);
        cmd.args(args).envs(env.iter().copied());
        self.spawn_command(cmd, log)
    }

    /// Spawns a command made with [`Host::command`], output appended to `log`.
    pub fn spawn_command(&self, mut cmd: Command, log: impl AsRef<Path>) -> Proc {
        let log = self.dir().join(log);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let stdout = file.try_clone().expect("dup log file");
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: spawn {:?}: {e}", self.name(), cmd.get_program()));
        Proc {
            host: self.name().to_string(),
            program: cmd.get_program().to_string_lossy().into_owned(),
            child,
            log,
        }
    }

    /// Runs a one-shot command in this host and returns its output. It is not
    /// timed out: pass the tool's own timeout (`ping -W1`, `--command-timeout`).
    pub fn run(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("{}: run {:?}: {e}", self.name(), cmd.get_program()))
    }

    /// Runs `f` on a fresh thread inside this host's network namespace.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.assert_present();
        let ns = File::open(self.netns_path()).expect("open netns file");
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns into host namespace");
                f()
            });
            match thread.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs the future `f` makes to completion on a current-thread tokio
    /// runtime of its own, inside this host's network namespace (what it
    /// connects to is what this host reaches).
    pub fn block_on<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        self.in_netns(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(f())
        })
    }

    /// Whether `ip` answers from this host: a TCP connect to port 9 that
    /// either connects or is refused (a RST proves the path) within
    /// `timeout`. Works without `ping` installed.
    pub fn reaches(&self, ip: Ipv4Addr, timeout: Duration) -> bool {
        self.in_netns(
            || match TcpStream::connect_timeout(&SocketAddr::from((ip, 9)), timeout) {
                Ok(_) => true,
                Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
            },
        )
    }

    /// `ip -n <this namespace> ARGS` (e.g. `["addr", "add", "169.254.169.254/32",
    /// "dev", "lo"]`); returns stdout, panics with stderr on failure.
    pub fn ip_cmd(&self, args: &[&str]) -> String {
        self.assert_present();
        let out = Command::new("ip")
            .args(["-n", &self.inner.ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip (iproute2 missing? run bash ci/install-deps.sh)");
        assert!(
            out.status.success(),
            "{}: ip {}: {}",
            self.name(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pids of every live process in this host's namespace.
    pub fn pids(&self) -> Vec<i32> {
        pids_in_netns(&self.netns_path())
    }

    /// Sends `signal` to every process in the namespace; returns their pids.
    pub fn kill_procs(&self, signal: Signal) -> Vec<i32> {
        let pids = self.pids();
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        pids
    }

    /// Power cut: SIGKILL everything in the namespace and wait until it is
    /// gone. Namespace, address and [`Host::dir`] stay: spawn again to
    /// "reboot with the disk kept".
    pub fn kill_all(&self) {
        kill_netns_procs(&self.inner.ns);
    }

    /// Pulls the cable: the bridge side of this host's veth goes down.
    pub fn link_down(&self) {
        self.assert_present();
        ip(&[
            "-n",
            &self.inner.bridge_ns,
            "link",
            "set",
            &self.inner.port,
            "down",
        ]);
    }

    /// Plugs the cable back in.
    pub fn link_up(&self) {
        self.assert_present();
        ip(&[
            "-n",
            &self.inner.bridge_ns,
            "link",
            "set",
            &self.inner.port,
            "up",
        ]);
    }

    fn assert_present(&self) {
        assert!(!self.is_removed(), "host {} was removed", self.name());
    }

    /// Idempotent: kill everything, delete veth and namespace.
    fn teardown(&self) {
        if self.inner.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        kill_netns_procs(&self.inner.ns);
        let _ = ip_try(&[
            "-n",
            &self.inner.bridge_ns,
            "link",
            "delete",
            &self.inner.port,
        ]);
        let _ = ip_try(&["netns", "delete", &self.inner.ns]);
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Host({} {} in {})",
            self.name(),
            self.ip(),
            self.netns_name()
        )
    }
}

/// A process started in a host. Dropping it SIGKILLs and reaps it.
pub struct Proc {
    host: String,
    program: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn kill(&mut self, signal: Signal) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.pid()), signal);
        }
    }

    /// Still running (not exited, not killed)?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if start.elapsed() >= timeout => return None,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("wait for {self:?}: {e}"),
            }
        }
    }
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Proc({} pid {} on {}, log {})",
            self.program,
            self.pid(),
            self.host,
            self.log.display()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `wait_until` gave up.
#[derive(Debug)]
pub struct WaitTimeout {
    pub what: String,
    pub waited: Duration,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:.2?} waiting for {}",
            self.waited, self.what
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// Polls `cond` every `poll` until it holds (returns the time it took) or
/// `timeout` passes (the error names `what`). Blocking: from async code call
/// it through `spawn_blocking`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, WaitTimeout> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(WaitTimeout {
                what: what.to_string(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(poll);
    }
}

/// Removes what crashed test runs left: for every slot whose lock is free
/// (its owner is dead), kills the processes in namespaces `mtK-*`, deletes
/// those namespaces, the recorded temp dir and the lock file. Returns the
/// number of namespaces removed. Slots held by live Nets are not touched.
pub fn sweep_stale() -> usize {
    let mut slots = BTreeSet::new();
    for ns in list_netns() {
        if let Some(slot) = slot_of(&ns) {
            slots.insert(slot);
        }
    }
    if let Ok(entries) = fs::read_dir(STATE_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(slot) = name
                .strip_prefix("subnet-")
                .and_then(|s| s.strip_suffix(".lock"))
            {
                slots.extend(slot.parse::<u8>());
            }
        }
    }
    let mut removed = 0;
    for slot in slots {
        if let Some(mut lock) = SlotLock::try_slot(slot) {
            removed += lock.clean_leftovers();
            lock.release();
        }
    }
    removed
}

/// The exclusive right to one /24 (`10.200.K.0/24`) and the `mtK-` names.
struct SlotLock {
    slot: u8,
    path: PathBuf,
    file: Option<File>,
}

impl SlotLock {
    /// Takes a free slot, cleaning a dead owner's leftovers first.
    fn acquire() -> SlotLock {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id() as u64;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let start = (pid * 97 + n * 13) % 256;
        for i in 0..256 {
            let slot = ((start + i) % 256) as u8;
            if let Some(mut lock) = SlotLock::try_slot(slot) {
                lock.clean_leftovers();
                return lock;
            }
        }
        panic!("no free 10.200.K.0/24 slot: 256 Nets in use? see {STATE_DIR}");
    }

    fn try_slot(slot: u8) -> Option<SlotLock> {
        fs::create_dir_all(STATE_DIR).expect("create /run/muster-tests");
        let path = Path::new(STATE_DIR).join(format!("subnet-{slot}.lock"));
        // A lock taken on a file that its owner unlinked meanwhile is
        // worthless: retry until the locked file is the one at `path`.
        for _ in 0..10 {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return None,
                Err(TryLockError::Error(e)) => panic!("flock {}: {e}", path.display()),
            }
            let locked = file.metadata().expect("fstat lock file");
            match fs::metadata(&path) {
                Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => {
                    return Some(SlotLock {
                        slot,
                        path,
                        file: Some(file),
                    });
                }
                _ => continue,
            }
        }
        None
    }

    fn record(&self, net: &str, dir: &Path) {
        let mut file = self.file.as_ref().expect("lock held");
        file.set_len(0).expect("truncate lock file");
        let text = format!(
            "pid={}\nnet={net}\ndir={}\n",
            std::process::id(),
            dir.display()
        );
        file.write_all(text.as_bytes()).expect("write lock file");
    }

    /// With the lock held: remove a dead owner's namespaces and temp dir.
    fn clean_leftovers(&mut self) -> usize {
        let prefix = format!("mt{}-", self.slot);
        let stale: Vec<String> = list_netns()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        for ns in &stale {
            kill_netns_procs(ns);
        }
        // Host namespaces first: deleting them also removes their veths.
        for ns in stale
            .iter()
            .filter(|n| !n.ends_with("-br"))
            .chain(stale.iter().filter(|n| n.ends_with("-br")))
        {
            let _ = ip_try(&["netns", "delete", ns]);
        }
        let recorded = fs::read_to_string(&self.path).unwrap_or_default();
        if let Some(dir) = recorded.lines().find_map(|l| l.strip_prefix("dir=")) {
            let dir = Path::new(dir);
            let ours = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
            if ours && dir.starts_with(std::env::temp_dir()) {
                let _ = fs::remove_dir_all(dir);
            }
        }
        if !stale.is_empty() {
            eprintln!("netns: removed leftovers of a crashed run: {stale:?}");
        }
        stale.len()
    }

    /// Unlink while still locked, then unlock by closing.
    fn release(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = fs::remove_file(&self.path);
            drop(file);
        }
    }
}

impl Drop for SlotLock {
    fn drop(&mut self) {
        self.release();
    }
}

/// `mtK-...` -> K.
fn slot_of(ns: &str) -> Option<u8> {
    let rest = ns.strip_prefix("mt")?;
    let (num, _) = rest.split_once('-')?;
    num.parse().ok()
}

fn list_netns() -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Like `ip netns pids`: every process whose network namespace is the one
/// bound at `path`. Zombies have no namespace any more and are not listed.
pub fn pids_in_netns(path: &Path) -> Vec<i32> {
    let Ok(target) = fs::metadata(path) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (the command name may contain one).
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// SIGKILL everything in namespace `ns` until nothing is left.
fn kill_netns_procs(ns: &str) {
    let path = Path::new(NETNS_DIR).join(ns);
    let start = Instant::now();
    loop {
        let pids = pids_in_netns(&path);
        if pids.is_empty() {
            return;
        }
        if start.elapsed() > KILL_GRACE {
            eprintln!(
                "netns: processes {pids:?} in {ns} survive SIGKILL; deleting the namespace anyway"
            );
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `ip ARGS`; panics with its stderr on failure.
fn ip(args: &[&str]) {
    if let Err(e) = ip_try(args) {
        panic!("{e}");
    }
}

fn ip_try(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "run ip {}: {e} (iproute2 missing? run bash ci/install-deps.sh)",
                args.join(" ")
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs several `ip` commands in namespace `ns` with one process.
fn ip_batch(ns: &str, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ip -batch (iproute2 missing? run bash ci/install-deps.sh)");
    let script = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("ip stdin")
        .write_all(script.as_bytes())
        .expect("write ip batch");
    let out = child.wait_with_output().expect("wait for ip -batch");
    assert!(
        out.status.success(),
        "ip -n {ns} -batch failed: {}\nscript:\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn print_log_tails(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "log") {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("---- {} (last 30 lines) ----\n{tail}", path.display());
        }
    }
}

/// The `.1` of a host's /24: its default gateway (nothing answers there).
fn gateway(ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = ip.octets();
    Ipv4Addr::new(a, b, c, 1)
}
