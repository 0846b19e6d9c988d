//! Services as transient systemd units, driven over D-Bus.
//!
//! No unit files are written: each service is started with
//! `StartTransientUnit` as `NAME.service` and lives only in systemd's memory.
//! systemd restarts it when it crashes; the agent finds it again after its
//! own restart by asking systemd for the unit by name.
//!
//! Behaviour worth knowing (asserted in `tests/systemd_supervisor.rs`):
//! * `Type=exec`: the start job fails when the program cannot be executed, so
//!   a missing binary is an error from `ensure_running`, and the unit is
//!   stopped again (the agent, not a restart loop, decides what to do next).
//! * A program that runs and then exits non-zero -- even at once -- counts
//!   as started: systemd restarts it (`Restart=on-failure`) until its start
//!   limit (5 starts in 10 s) marks the unit `failed`; `is_running` is then
//!   false, and the next `ensure_running` resets the unit and starts afresh.

use std::time::Duration;

use futures_util::StreamExt;
use tracing::{debug, info, instrument, warn};
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::{ServiceError, ServiceSpec};

const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";
/// Where a unit that is being stopped or garbage-collected is polled.
const POLL: Duration = Duration::from_millis(50);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    /// Without a subscriber systemd does not emit JobRemoved.
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    #[zbus(property)]
    fn system_state(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn transient(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    /// The unit's cgroup memory (`memory.current`); `u64::MAX` when
    /// systemd does not account it.
    #[zbus(property)]
    fn memory_current(&self) -> zbus::Result<u64>;
    /// CPU time the unit's cgroup has used (`cpu.stat` usage), in
    /// nanoseconds; `u64::MAX` when systemd does not account it.
    #[zbus(property, name = "CPUUsageNSec")]
    fn cpu_usage_nsec(&self) -> zbus::Result<u64>;
}

/// A unit's resource use, from systemd's cgroup accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnitFootprint {
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
}

/// What went wrong talking to systemd, with the unit and the D-Bus call.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("systemd: cannot connect to the D-Bus system bus at {address}: {source}")]
    Connect {
        address: String,
        // Boxed: zbus::Error is large, and these travel in every Result.
        source: Box<zbus::Error>,
    },
    #[error("{unit}: D-Bus call {call} failed: {source}")]
    Call {
        /// The unit, or `systemd` for calls about no unit.
        unit: String,
        call: &'static str,
        error_name: Option<String>,
        source: Box<zbus::Error>,
    },
    #[error("unit {unit}: {job} job ended with '{result}' ({status})")]
    JobFailed {
        unit: String,
        job: &'static str,
        result: String,
        status: String,
    },
    #[error("unit {unit}: {job} job did not finish within {timeout:?}")]
    JobTimeout {
        unit: String,
        job: &'static str,
        timeout: Duration,
    },
    #[error("unit {unit}: the D-Bus connection closed while waiting for its {job} job")]
    Disconnected { unit: String, job: &'static str },
    #[error(
        "unit {unit} exists and is not transient (loaded from {fragment:?}); Muster never replaces a unit file"
    )]
    NotTransient { unit: String, fragment: String },
    #[error("unit {unit} is still loaded {waited:?} after it stopped; cannot start it again")]
    Lingering { unit: String, waited: Duration },
}

impl SystemdError {
    /// The D-Bus error name (e.g. `org.freedesktop.systemd1.NoSuchUnit`), if systemd sent one.
    pub fn dbus_error_name(&self) -> Option<&str> {
        match self {
            SystemdError::Call { error_name, .. } => error_name.as_deref(),
            _ => None,
        }
    }
}

fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(e) => Some(zbus::DBusError::name(e.as_ref()).to_string()),
        _ => None,
    }
}

fn call_error(unit: &str, call: &'static str) -> impl FnOnce(zbus::Error) -> SystemdError {
    let unit = unit.to_string();
    move |source| SystemdError::Call {
        unit,
        call,
        error_name: error_name(&source),
        source: Box::new(source),
    }
}

/// systemd's own exit codes (`systemd-analyze exit-status`): the service's
/// process failed before the program ran, e.g. 203 `EXEC`, it could not be
/// executed. 200 (`CHDIR`) to 244 (`BPF`) in systemd 252; newer ones add more.
const SYSTEMD_EXIT_CODES: std::ops::RangeInclusive<i32> = 200..=254;

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    /// `active`, `activating`, `failed`, `inactive`, ...
    pub active_state: String,
    /// `running`, `auto-restart`, `exited`, `dead`, ...
    pub sub_state: String,
    pub transient: bool,
    /// How the last run ended: `success`, `exit-code`, `signal`, `start-limit-hit`, ...
    pub result: String,
    /// Exit status of the main process (203 = could not execute it).
    pub exec_main_status: i32,
    /// Restarts done by systemd since the unit was started.
    pub n_restarts: u32,
}

impl UnitStatus {
    /// Running, starting (including systemd's restart delay) or reloading
    /// (`refreshing` is systemd 257's name for a reload-like state).
    pub fn is_running(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "reloading" | "refreshing"
        )
    }

    /// The program itself ran and then exited or was killed (as opposed to
    /// systemd failing to set up or execute it).
    pub fn program_exited(&self) -> bool {
        match self.result.as_str() {
            "exit-code" => !SYSTEMD_EXIT_CODES.contains(&self.exec_main_status),
            "signal" | "core-dump" => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for UnitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}, result {}, exit status {}, {} restarts",
            self.active_state, self.sub_state, self.result, self.exec_main_status, self.n_restarts
        )
    }
}

/// `muster-etcd` -> `muster-etcd.service`.
pub fn unit_name(service: &str) -> String {
    if service.ends_with(".service") {
        service.to_string()
    } else {
        format!("{service}.service")
    }
}

/// Runs services as transient units of the systemd on the other end of a bus.
#[derive(Debug, Clone)]
pub struct SystemdSupervisor {
    manager: ManagerProxy<'static>,
    restart_delay: Duration,
    job_timeout: Duration,
}

impl SystemdSupervisor {
    /// Connects to systemd: the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or
    /// `/run/dbus/system_bus_socket`), or `address` such as `unix:path=/run/dbus/system_bus_socket`.
    #[instrument(name = "systemd_connect", skip_all, fields(address = address.unwrap_or("system bus")))]
    pub async fn connect(address: Option<&str>) -> Result<Self, ServiceError> {
        let shown = address.unwrap_or("the default system bus").to_string();
        let connect_error = |source| SystemdError::Connect {
            address: shown.clone(),
            source: Box::new(source),
        };
        let builder = match address {
            Some(a) => zbus::connection::Builder::address(a),
            None => zbus::connection::Builder::system(),
        }
        .map_err(connect_error)?;
        let conn = builder.build().await.map_err(connect_error)?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(connect_error)?;
        manager
            .subscribe()
            .await
            .map_err(call_error("systemd", "Manager.Subscribe"))?;
        debug!("connected to systemd");
        Ok(SystemdSupervisor {
            manager,
            restart_delay: Duration::from_secs(1),
            job_timeout: Duration::from_secs(60),
        })
    }

    /// How long systemd waits before restarting a crashed service (default 1 s).
    pub fn with_restart_delay(mut self, delay: Duration) -> Self {
        self.restart_delay = delay;
        self
    }

    /// Upper bound for a start or stop job (default 60 s; stops escalate to
    /// SIGKILL after 30 s, so a stop job ends before this).
    pub fn with_job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// systemd's `SystemState`: `running`, `degraded`, `starting`, ...
    pub async fn system_state(&self) -> Result<String, ServiceError> {
        Ok(self
            .manager
            .system_state()
            .await
            .map_err(call_error("systemd", "Get(Manager.SystemState)"))?)
    }

    /// The unit's state, or `None` if systemd has no such unit loaded.
    pub async fn status(&self, name: &str) -> Result<Option<UnitStatus>, ServiceError> {
        let unit = unit_name(name);
        match self.unit_path(&unit).await? {
            Some(path) => Ok(Some(self.read_status(&unit, path).await?)),
            None => Ok(None),
        }
    }

    /// The unit's object path, `None` when systemd has no such unit loaded.
    async fn unit_path(&self, unit: &str) -> Result<Option<OwnedObjectPath>, SystemdError> {
        match self.manager.get_unit(unit).await {
            Ok(path) => Ok(Some(path)),
            Err(e) if error_name(&e).as_deref() == Some(NO_SUCH_UNIT) => Ok(None),
            Err(e) => Err(call_error(unit, "Manager.GetUnit")(e)),
        }
    }

    /// What the unit's cgroup uses now: memory in bytes and CPU time so
    /// far in nanoseconds. `None` when there is no such unit; a field is
    /// `None` when systemd does not account it.
    pub async fn footprint(&self, name: &str) -> Result<Option<UnitFootprint>, ServiceError> {
        let unit = unit_name(name);
        let Some(path) = self.unit_path(&unit).await? else {
            return Ok(None);
        };
        let s = self.service_proxy(&unit, path).await?;
        let bytes = s
            .memory_current()
            .await
            .map_err(call_error(&unit, "Get(Service.MemoryCurrent)"))?;
        let cpu = s
            .cpu_usage_nsec()
            .await
            .map_err(call_error(&unit, "Get(Service.CPUUsageNSec)"))?;
        let accounted = |v: u64| (v != u64::MAX).then_some(v);
        Ok(Some(UnitFootprint {
            memory_bytes: accounted(bytes),
            cpu_nsec: accounted(cpu),
        }))
    }

    async fn read_status(
        &self,
        unit: &str,
        path: OwnedObjectPath,
    ) -> Result<UnitStatus, SystemdError> {
        let u = self.unit_proxy(unit, path.clone()).await?;
        let s = self.service_proxy(unit, path).await?;
        Ok(UnitStatus {
            active_state: u
                .active_state()
                .await
                .map_err(call_error(unit, "Get(Unit.ActiveState)"))?,
            sub_state: u
                .sub_state()
                .await
                .map_err(call_error(unit, "Get(Unit.SubState)"))?,
            transient: u
                .transient()
                .await
                .map_err(call_error(unit, "Get(Unit.Transient)"))?,
            result: s
                .result()
                .await
                .map_err(call_error(unit, "Get(Service.Result)"))?,
            exec_main_status: s
                .exec_main_status()
                .await
                .map_err(call_error(unit, "Get(Service.ExecMainStatus)"))?,
            n_restarts: s
                .n_restarts()
                .await
                .map_err(call_error(unit, "Get(Service.NRestarts)"))?,
        })
    }

    /// The unit's Service interface, read afresh on every call.
    async fn service_proxy(
        &self,
        unit: &str,
        path: OwnedObjectPath,
    ) -> Result<ServiceProxy<'static>, SystemdError> {
        ServiceProxy::builder(self.manager.inner().connection())
            .cache_properties(CacheProperties::No)
            .path(path)
            .map_err(call_error(unit, "proxy for the service object"))?
            .build()
            .await
            .map_err(call_error(unit, "proxy for the service object"))
    }

    /// A proxy that reads properties afresh on every call (no cache, no
    /// PropertiesChanged subscription per unit).
    async fn unit_proxy(
        &self,
        unit: &str,
        path: OwnedObjectPath,
    ) -> Result<UnitProxy<'static>, SystemdError> {
        UnitProxy::builder(self.manager.inner().connection())
            .cache_properties(CacheProperties::No)
            .path(path)
            .map_err(call_error(unit, "proxy for the unit object"))?
            .build()
            .await
            .map_err(call_error(unit, "proxy for the unit object"))
    }

    /// True if the unit is active, activating (also while systemd waits to
    /// restart it) or reloading.
    pub async fn is_running(&self, name: &str) -> Result<bool, ServiceError> {
        Ok(self.status(name).await?.is_some_and(|s| s.is_running()))
    }

    /// Starts `NAME.service` unless it already runs. Returns true if it started it.
    #[instrument(name = "systemd_ensure_running", skip_all, fields(unit = %unit_name(&spec.name)))]
    pub async fn ensure_running(&self, spec: &ServiceSpec) -> Result<bool, ServiceError> {
        let unit = unit_name(&spec.name);
        // A stopped transient unit is unloaded by systemd's garbage collector
        // shortly after; until then a start with the same name is refused
        // (UnitExists), so wait for it to go, bounded.
        let deadline = tokio::time::Instant::now() + self.job_timeout;
        loop {
            let try_start = match self.status(&spec.name).await? {
                Some(s) if s.is_running() => {
                    debug!(state = %s, "already running");
                    return Ok(false);
                }
                Some(s) if !s.transient => {
                    self.refuse_unit_file(&unit).await?;
                    true
                }
                Some(s) if s.active_state == "failed" => {
                    // Why it failed is in its journal (a component's own
                    // stderr): show the last lines where the agent logs.
                    let last = Self::journal_tail(&unit, 3).await;
                    warn!(state = %s, last = %last, "the unit failed; starting it again");
                    self.manager
                        .reset_failed_unit(&unit)
                        .await
                        .map_err(call_error(&unit, "Manager.ResetFailedUnit"))?;
                    false
                }
                Some(s) => {
                    debug!(state = %s, "waiting for the stopped unit to be unloaded");
                    false
                }
                None => true,
            };
            if try_start {
                match self.start(&unit, spec).await {
                    Err(SystemdError::Call {
                        error_name: Some(n),
                        ..
                    }) if n == UNIT_EXISTS => {
                        self.refuse_unit_file(&unit).await?;
                    }
                    other => return other.map(|()| true).map_err(Into::into),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SystemdError::Lingering {
                    unit,
                    waited: self.job_timeout,
                }
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After UnitExists: a unit file of that name is an error; a transient
    /// unit on its way out is worth another try.
    async fn refuse_unit_file(&self, unit: &str) -> Result<(), SystemdError> {
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(call_error(unit, "Manager.LoadUnit"))?;
        let u = self.unit_proxy(unit, path).await?;
        let transient = u
            .transient()
            .await
            .map_err(call_error(unit, "Get(Unit.Transient)"))?;
        let fragment = u
            .fragment_path()
            .await
            .map_err(call_error(unit, "Get(Unit.FragmentPath)"))?;
        if !transient && !fragment.is_empty() {
            return Err(SystemdError::NotTransient {
                unit: unit.to_string(),
                fragment,
            });
        }
        Ok(())
    }

    async fn start(&self, unit: &str, spec: &ServiceSpec) -> Result<(), SystemdError> {
        let program = spec.program.to_string_lossy().into_owned();
        let argv: Vec<String> = std::iter::once(program.clone())
            .chain(spec.args.iter().cloned())
            .collect();
        // a(sasb): path, argv including argv[0], "ignore failure" off.
        let exec_start = Value::from(vec![(program.clone(), argv, false)]);
        let restart_usec = u64::try_from(self.restart_delay.as_micros()).unwrap_or(u64::MAX);
        let properties: Vec<(&str, Value<'_>)> = vec![
            (
                "Description",
                Value::from(format!("Muster service {} ({program})", spec.name)),
            ),
            ("ExecStart", exec_start),
            // exec, not simple: the start job fails if the program cannot be run.
            ("Type", Value::from("exec")),
            ("Restart", Value::from("on-failure")),
            ("RestartUSec", Value::from(restart_usec)),
            // SIGTERM to the main process only (etcd shuts down cleanly),
            // SIGKILL to whatever is left after the stop timeout.
            ("KillMode", Value::from("mixed")),
            ("TimeoutStopUSec", Value::from(30_000_000u64)),
            ("CPUWeight", Value::from(spec.cpu.weight())),
        ];
        let jobs = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_error(unit, "AddMatch(JobRemoved)"))?;
        let started = std::time::Instant::now();
        let job = self
            .manager
            .start_transient_unit(unit, "replace", &properties, &[])
            .await
            .map_err(call_error(unit, "Manager.StartTransientUnit"))?;
        debug!(job = %job.as_str(), round_trip = ?started.elapsed(), "StartTransientUnit");
        let result = self.wait_job(unit, "start", jobs, &job).await?;
        if result == "done" {
            info!(program = %program, took = ?started.elapsed(), "started");
            return Ok(());
        }
        let status = match self.status(unit).await {
            // It ran and exited before systemd saw the exec succeed: a crash
            // like any later one, and Restart= deals with it. Reporting it
            // as started keeps the outcome independent of that race.
            Ok(Some(s)) if s.program_exited() => {
                warn!(state = %s, "exited right after it started; systemd restarts it");
                return Ok(());
            }
            Ok(Some(s)) => s.to_string(),
            Ok(None) => "unit gone".into(),
            Err(e) => format!("state unknown: {e}"),
        };
        // Leave it stopped, not in a restart loop: the caller decides what next.
        if let Err(e) = self.stop(unit).await {
            warn!(error = %e, "cannot stop the unit after its failed start");
        }
        Err(SystemdError::JobFailed {
            unit: unit.to_string(),
            job: "start",
            result,
            status,
        })
    }

    /// Stops `NAME.service` if it runs; waits until it has stopped.
    #[instrument(name = "systemd_stop", skip_all, fields(unit = %unit_name(name)))]
    pub async fn stop(&self, name: &str) -> Result<(), ServiceError> {
        let unit = unit_name(name);
        let jobs = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_error(&unit, "AddMatch(JobRemoved)"))?;
        let job = match self.manager.stop_unit(&unit, "replace").await {
            Ok(job) => job,
            Err(e) if error_name(&e).as_deref() == Some(NO_SUCH_UNIT) => return Ok(()),
            Err(e) => return Err(call_error(&unit, "Manager.StopUnit")(e).into()),
        };
        let result = self.wait_job(&unit, "stop", jobs, &job).await?;
        if result != "done" {
            let status = self
                .status(name)
                .await?
                .map_or("unit gone".into(), |s| s.to_string());
            return Err(SystemdError::JobFailed {
                unit,
                job: "stop",
                result,
                status,
            }
            .into());
        }
        info!("stopped");
        Ok(())
    }

    /// Restarts one of the image's own units (`containerd.service` after
    /// its config changed) and waits for the job.
    #[instrument(name = "systemd_restart", skip_all, fields(unit = %unit))]
    pub async fn restart_unit(&self, unit: &str) -> Result<(), ServiceError> {
        let jobs = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_error(unit, "AddMatch(JobRemoved)"))?;
        let job = self
            .manager
            .restart_unit(unit, "replace")
            .await
            .map_err(call_error(unit, "Manager.RestartUnit"))?;
        let result = self.wait_job(unit, "restart", jobs, &job).await?;
        if result != "done" {
            return Err(SystemdError::JobFailed {
                unit: unit.to_string(),
                job: "restart",
                result,
                status: "see `systemctl status`".into(),
            }
            .into());
        }
        info!("restarted");
        Ok(())
    }

    /// The unit's last `lines` journal lines, one string (best effort: the
    /// journal may be unavailable, e.g. in a container).
    async fn journal_tail(unit: &str, lines: u32) -> String {
        let out = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::process::Command::new("journalctl")
                .args(["--no-pager", "--output=cat", "--lines"])
                .arg(lines.to_string())
                .arg("--unit")
                .arg(unit)
                .output(),
        )
        .await;
        match out {
            Ok(Ok(o)) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" | "),
            _ => "(journal not readable)".into(),
        }
    }

    /// The result (`done`, `failed`, `timeout`, `canceled`, ...) of `job`.
    async fn wait_job(
        &self,
        unit: &str,
        kind: &'static str,
        mut jobs: JobRemovedStream,
        job: &OwnedObjectPath,
    ) -> Result<String, SystemdError> {
        let wait = async {
            while let Some(signal) = jobs.next().await {
                // A signal that does not parse is not ours to judge; skip it.
                let Ok(args) = signal.args() else { continue };
                if args.job == *job {
                    return Some(args.result);
                }
            }
            None
        };
        match tokio::time::timeout(self.job_timeout, wait).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(SystemdError::Disconnected {
                unit: unit.to_string(),
                job: kind,
            }),
            Err(_) => Err(SystemdError::JobTimeout {
                unit: unit.to_string(),
                job: kind,
                timeout: self.job_timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(active: &str, result: &str, exit: i32) -> UnitStatus {
        UnitStatus {
            active_state: active.into(),
            sub_state: String::new(),
            transient: true,
            result: result.into(),
            exec_main_status: exit,
            n_restarts: 0,
        }
    }

    #[test]
    fn unit_names_get_the_service_suffix_once() {
        assert_eq!(unit_name("muster-etcd"), "muster-etcd.service");
        assert_eq!(unit_name("muster-etcd.service"), "muster-etcd.service");
    }

    #[test]
    fn starting_and_restarting_count_as_running() {
        for state in ["active", "activating", "reloading", "refreshing"] {
            assert!(status(state, "success", 0).is_running(), "{state}");
        }
        for state in ["inactive", "failed", "deactivating"] {
            assert!(!status(state, "success", 0).is_running(), "{state}");
        }
    }

    #[test]
    fn a_program_that_ran_is_told_apart_from_one_that_could_not_start() {
        assert!(status("failed", "exit-code", 1).program_exited());
        assert!(status("failed", "signal", 9).program_exited());
        // 203 EXEC: not found or not executable; 217 USER: bad User=.
        assert!(!status("failed", "exit-code", 203).program_exited());
        assert!(!status("failed", "exit-code", 217).program_exited());
        assert!(!status("failed", "start-limit-hit", 0).program_exited());
        assert!(!status("failed", "timeout", 0).program_exited());
    }
}
