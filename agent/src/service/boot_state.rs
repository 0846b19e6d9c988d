//! Says on the console when systemd has finished booting the node.
//!
//! systemd stops printing unit status on the console while a service writes
//! to it (the agent does: its logs are what a cloud console should show), so
//! the agent reports the end of boot itself: once the manager's
//! `SystemState` leaves `initializing`/`starting`, one line, at warn level
//! when the state is `degraded` (a unit failed).

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::systemd::SystemdSupervisor;

/// How long to keep asking before giving up on a boot that never ends.
const GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);
const POLL: Duration = Duration::from_secs(2);

/// Whether systemd is done starting: `running`, `degraded`, or already
/// shutting down (`stopping`), as opposed to `initializing`/`starting`.
pub fn boot_finished(state: &str) -> bool {
    !matches!(state, "initializing" | "starting")
}

/// Polls the system manager until boot has finished and logs the outcome.
pub async fn report_boot_finished() {
    let started = Instant::now();
    let mut systemd = None;
    while started.elapsed() < GIVE_UP_AFTER {
        if systemd.is_none() {
            match SystemdSupervisor::connect(None).await {
                Ok(s) => systemd = Some(s),
                Err(e) => debug!("boot state: {e}"),
            }
        }
        if let Some(s) = &systemd {
            match s.system_state().await {
                Ok(state) if boot_finished(&state) => {
                    if state == "degraded" {
                        warn!(
                            state,
                            "systemd: boot finished with failed units (systemctl --failed)"
                        );
                    } else {
                        info!(state, "systemd: boot finished");
                    }
                    return;
                }
                Ok(state) => debug!(state, "systemd: still booting"),
                Err(e) => {
                    debug!("boot state: {e}");
                    systemd = None;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    warn!(
        "systemd: boot has not finished after {} s",
        GIVE_UP_AFTER.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::boot_finished;

    #[test]
    fn only_initializing_and_starting_are_still_booting() {
        assert!(!boot_finished("initializing"));
        assert!(!boot_finished("starting"));
        for done in ["running", "degraded", "maintenance", "stopping"] {
            assert!(boot_finished(done), "{done}");
        }
    }
}
