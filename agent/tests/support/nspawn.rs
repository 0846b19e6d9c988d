//! A real systemd to test D-Bus code against: a minimal Debian root booted
//! with `systemd-nspawn`, its system bus reachable from the host at
//! `unix:path=DIR/system_bus_socket`.
//!
//! The root comes from `ci/systemd-root.sh` (via `bash ci/install-deps.sh`);
//! without it, [`Container::boot`] panics with that instruction -- a test
//! never passes by skipping. Every container boots the same root with
//! `--volatile=overlay`: writes go to a tmpfs and vanish with it, so
//! containers run side by side and leave the root untouched.
//!
//! Flags that matter on these machines (see docs/machines.md): PID 1 of the host
//! is not systemd, so nspawn can neither register the machine nor create a
//! scope (`--register=no --keep-unit`); `--private-network` keeps the
//! container's services off the host's network.
//!
//! Cleanup: dropping the [`Container`] (panics included) asks nspawn to power
//! the container off (SIGTERM), SIGKILLs it after a grace period, and removes
//! the temp dir. nspawn gets PR_SET_PDEATHSIG, so a test process that dies
//! without running `Drop` takes its containers with it. Set
//! `MUSTER_KEEP_TEST_DIRS=1` to keep the dir (console log) after a run.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// Marker written last by `ci/systemd-root.sh`: the root is complete.
const STAMP: &str = ".muster-systemd-root-v1";
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const POWEROFF_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// The root built by `ci/systemd-root.sh`.
pub fn root_dir() -> PathBuf {
    if let Some(root) = std::env::var_os("MUSTER_SYSTEMD_ROOT") {
        return root.into();
    }
    let tools = std::env::var_os("MUSTER_TOOLS").unwrap_or_else(|| "/opt/muster-test".into());
    Path::new(&tools).join("systemd-root")
}

/// One booted systemd. Dropping it powers it off.
pub struct Container {
    child: Option<Child>,
    cgroups: Vec<PathBuf>,
    dir: Option<tempfile::TempDir>,
    pub name: String,
    /// `unix:path=.../system_bus_socket`: the container's system bus.
    pub bus_address: String,
    /// From spawning nspawn to systemd reporting `running` (or `degraded`).
    pub boot_time: Duration,
}

impl Container {
    /// Boots a container and waits until its systemd has finished booting.
    pub async fn boot() -> Container {
        let root = root_dir();
        assert!(
            root.join(STAMP).exists(),
            "no systemd test root at {} (or it is incomplete): run `bash ci/install-deps.sh` \
             (it calls ci/systemd-root.sh)",
            root.display()
        );
        assert!(
            Command::new("systemd-nspawn")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "systemd-nspawn is missing: run `bash ci/install-deps.sh`"
        );
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "muster-t{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("temp dir");
        let bus_dir = dir.path().join("bus");
        std::fs::create_dir(&bus_dir).expect("bus dir");
        let console = File::create(dir.path().join("console.log")).expect("console log");
        let console_err = console.try_clone().expect("console log");

        // nspawn runs the container in `<its own cgroup>/payload`: without a
        // cgroup of its own, concurrent containers share one and tear each
        // other's unit cgroups down (exit status 219, CGROUP). A shell moves
        // itself into a fresh cgroup, then execs nspawn.
        let cgroups = cgroup_dirs(&name);
        for dir in &cgroups {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"for cg in $MUSTER_CGROUPS; do echo $$ >"$cg/cgroup.procs" || exit 1; done; exec "$@""#)
            .arg("sh")
            .env("MUSTER_CGROUPS", cgroups.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" "))
            .arg("systemd-nspawn")
            .arg("--quiet")
            .arg("--directory")
            .arg(&root)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--private-network",
            ])
            .arg(format!("--machine={name}"))
            .arg(format!("--bind={}:/run/dbus", bus_dir.display()))
            .arg("--console=read-only")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the hook.
        unsafe {
            // Dies with the test thread that booted it, even without Drop.
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn systemd-nspawn");
        let bus_address = format!("unix:path={}", bus_dir.join("system_bus_socket").display());
        let mut container = Container {
            child: Some(child),
            cgroups,
            dir: Some(dir),
            name,
            bus_address,
            boot_time: Duration::ZERO,
        };
        container.wait_booted(started).await;
        container.boot_time = started.elapsed();
        container
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("container dir")
    }

    pub fn console_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("console.log")).unwrap_or_default()
    }

    fn fail(&mut self, why: &str) -> ! {
        let log = self.console_log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "container {}: {why}\n--- console (last 40 lines) ---\n{}",
            self.name,
            tail.join("\n")
        );
    }

    /// Until the bus answers and `SystemState` is `running` or `degraded`.
    async fn wait_booted(&mut self, started: Instant) {
        let socket = self.dir().join("bus/system_bus_socket");
        let mut last = String::from("no bus socket yet");
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.fail(&format!("systemd-nspawn exited during boot ({status})"));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                self.fail(&format!("not booted after {BOOT_TIMEOUT:?}: {last}"));
            }
            if socket.exists() {
                match self.system_state().await {
                    Ok(state) if state == "running" || state == "degraded" => return,
                    Ok(state) if state == "maintenance" || state == "stopping" => {
                        self.fail(&format!("systemd is in state {state}"))
                    }
                    Ok(state) => last = format!("SystemState {state}"),
                    Err(e) => last = format!("bus: {e}"),
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A fresh connection to the container's system bus.
    pub async fn bus(&self) -> zbus::Result<zbus::Connection> {
        zbus::connection::Builder::address(self.bus_address.as_str())?
            .build()
            .await
    }

    /// Reads a property with plain D-Bus calls, independent of the code under test.
    pub async fn property(
        &self,
        path: &str,
        interface: &str,
        name: &str,
    ) -> zbus::Result<OwnedValue> {
        let conn = self.bus().await?;
        let reply = conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(interface, name),
            )
            .await?;
        reply.body().deserialize::<OwnedValue>()
    }

    pub async fn system_state(&self) -> zbus::Result<String> {
        let value = self
            .property(
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "SystemState",
            )
            .await?;
        Ok(String::try_from(value)?)
    }

    /// `ActiveState` of a unit as systemd reports it; `None` if not loaded.
    pub async fn unit_active_state(&self, unit: &str) -> zbus::Result<Option<String>> {
        let conn = self.bus().await?;
        let reply = conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "GetUnit",
                &(unit,),
            )
            .await;
        let path: OwnedObjectPath = match reply {
            Ok(reply) => reply.body().deserialize()?,
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let value = self
            .property(
                path.as_str(),
                "org.freedesktop.systemd1.Unit",
                "ActiveState",
            )
            .await?;
        Ok(Some(String::try_from(value)?))
    }

    /// Powers the container off (SIGTERM to nspawn), SIGKILL after a grace period.
    fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + POWEROFF_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.shut_down();
        for dir in &self.cgroups {
            remove_cgroup(dir);
        }
        if std::thread::panicking() {
            let log = self.console_log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "container {}: console (last 20 lines):\n{}",
                self.name,
                tail.join("\n")
            );
        }
        if std::env::var_os("MUSTER_KEEP_TEST_DIRS").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("container {}: kept {}", self.name, dir.keep().display());
        }
    }
}

/// One cgroup per container in each hierarchy systemd uses: the unified one
/// (cgroup v2, or `unified` in hybrid mode) and `name=systemd` (v1/hybrid).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let hierarchies = if base.join("cgroup.controllers").exists() {
        vec![base.to_path_buf()]
    } else {
        ["unified", "systemd"]
            .iter()
            .map(|h| base.join(h))
            .filter(|h| h.join("cgroup.procs").exists())
            .collect()
    };
    hierarchies
        .into_iter()
        .map(|h| h.join("muster-tests").join(name))
        .collect()
}

/// Removes a cgroup and the ones nspawn made below it (cgroups go with
/// rmdir, deepest first; their files are not real files).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
