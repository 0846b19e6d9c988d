//! Services as plain child processes, found again through pid files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::info;

use super::{ServiceError, ServiceSpec};

/// Keeps `<dir>/NAME.pid` and `<dir>/NAME.log` for each service.
#[derive(Debug, Clone)]
pub struct ChildSupervisor {
    dir: PathBuf,
}

impl ChildSupervisor {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ChildSupervisor { dir: dir.into() }
    }

    fn pid_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pid"))
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// The pid in the pid file, if that process is still alive and not a zombie.
    fn running_pid(&self, name: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_path(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.running_pid(name).is_some()
    }

    pub async fn ensure_running(&self, spec: &ServiceSpec) -> Result<bool, ServiceError> {
        if self.is_running(&spec.name) {
            return Ok(false);
        }
        let io = |path: &Path| {
            let (name, path) = (spec.name.clone(), path.to_path_buf());
            move |source| ServiceError::Io { name, path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let log_path = self.log_path(&spec.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // Own process group: a signal to the agent's group (Ctrl-C) must not
        // reach etcd, which outlives the agent by design.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|source| ServiceError::Spawn {
            name: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let pid_path = self.pid_path(&spec.name);
        std::fs::write(&pid_path, format!("{pid}\n")).map_err(io(&pid_path))?;
        // Reap it when it exits so it never lingers as a zombie while we run;
        // after the agent exits, init adopts and reaps it.
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        info!(service = %spec.name, pid, log = %log_path.display(), "started");
        Ok(true)
    }

    pub async fn stop(&self, name: &str) -> Result<(), ServiceError> {
        let Some(pid) = self.running_pid(name) else {
            return Ok(());
        };
        let signal = |sig| {
            kill(Pid::from_raw(pid), sig).map_err(|source| ServiceError::Signal {
                name: name.into(),
                pid,
                source,
            })
        };
        signal(Signal::SIGTERM)?;
        for _ in 0..100 {
            if !alive(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        signal(Signal::SIGKILL)
    }
}

/// Alive and not a zombie (a zombie still answers signal 0).
fn alive(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::CpuShare;

    #[tokio::test]
    async fn starts_once_finds_it_again_and_stops_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sup = ChildSupervisor::new(tmp.path());
        let spec = ServiceSpec {
            name: "sleeper".into(),
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            cpu: CpuShare::Normal,
        };
        assert!(sup.ensure_running(&spec).await.expect("start"));
        assert!(
            !sup.ensure_running(&spec)
                .await
                .expect("second start is a no-op")
        );
        // A new supervisor (a restarted agent) finds it through the pid file.
        let again = ChildSupervisor::new(tmp.path());
        assert!(again.is_running("sleeper"));
        again.stop("sleeper").await.expect("stop");
        assert!(!sup.is_running("sleeper"));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sup = ChildSupervisor::new(tmp.path());
        let spec = ServiceSpec {
            name: "x".into(),
            program: "/nonexistent/etcd".into(),
            args: vec![],
            cpu: CpuShare::Normal,
        };
        let err = sup
            .ensure_running(&spec)
            .await
            .expect_err("no such program")
            .to_string();
        assert!(err.contains("/nonexistent/etcd"), "{err}");
    }
}
