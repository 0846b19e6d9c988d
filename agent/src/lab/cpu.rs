//! A VM's share of the host's CPU.
//!
//! A lab's VMs share the host's cores; real machines do not. Under TCG the
//! three serving VMs of a lab need about 1.7 of the two cores this project
//! runs on at rest, and a replacement that boots takes its third of them,
//! so the serving VMs starve: in a `lab upgrade` run (2026-12-07) reads
//! through the VIP took over 3 s for minutes while a replacement booted
//! beside them, and answered in 0.3-1.3 s while the same replacement ran
//! at a lower priority. `lab upgrade` therefore lowers a replacement's
//! priority until the cluster has assembled again (`--replacement-nice`),
//! so what it measures is the cluster's hand-over, not the host's split.
//!
//! QEMU daemonizes into a session of its own, and with the kernel's
//! autogroups (on by default on desktop and Debian kernels) a session's
//! threads compete as one group: a thread's nice value then only ranks it
//! within its session. The group's own nice (`/proc/PID/autogroup`) ranks
//! the VM against the others, so both are set.

use std::io;

/// Sets the nice value of `pid`'s session group (when the kernel has
/// autogroups) and of each of its threads. `nice`: 0 (as started) to 19.
pub fn set_nice(pid: i32, nice: i32) -> io::Result<()> {
    let autogroup = format!("/proc/{pid}/autogroup");
    if std::path::Path::new(&autogroup).exists() {
        std::fs::write(&autogroup, nice.to_string())?;
    }
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(tid) = entry?.file_name().to_string_lossy().parse::<libc::id_t>() else {
            continue;
        };
        // SAFETY: setpriority takes plain integers and touches no memory.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // A thread that ended since the listing is no error.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The nice value of `pid`'s session group: `None` without autogroups.
pub fn autogroup_nice(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/autogroup")).ok()?;
    parse_autogroup(&text)
}

/// `/autogroup-1947 nice 10` → 10. Pure.
pub fn parse_autogroup(text: &str) -> Option<i32> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "nice")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn the_autogroup_line_gives_its_nice_value() {
        assert_eq!(parse_autogroup("/autogroup-1947 nice 10\n"), Some(10));
        assert_eq!(parse_autogroup("/autogroup-3 nice -5"), Some(-5));
        assert_eq!(parse_autogroup("/autogroup-3"), None);
        assert_eq!(parse_autogroup(""), None);
    }

    /// A child in a session of its own, as a daemonized QEMU is: its
    /// group and its thread both get the new value.
    #[test]
    fn a_process_in_its_own_session_is_lowered_and_raised_back() {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: setsid is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
        }
        let mut child = cmd.spawn().expect("spawn sleep");
        let pid = child.id() as i32;
        let thread_nice = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
            let after = stat.rsplit_once(')').expect("comm").1;
            // Field 19 of stat; the 17th after the command name.
            after
                .split_whitespace()
                .nth(16)
                .expect("nice")
                .parse::<i32>()
                .expect("int")
        };
        let lowered = set_nice(pid, 10);
        let (group_low, thread_low) = (autogroup_nice(pid), thread_nice());
        // Raising back needs CAP_SYS_NICE for the thread (the tests run as
        // root here); the group's value may always go back to 0.
        let raised = set_nice(pid, 0);
        let (group_back, thread_back) = (autogroup_nice(pid), thread_nice());
        let _ = child.kill();
        let _ = child.wait();
        lowered.expect("lower");
        assert_eq!(thread_low, 10);
        raised.expect("raise");
        assert_eq!(thread_back, 0);
        if std::path::Path::new("/proc/self/autogroup").exists() {
            assert_eq!(group_low, Some(10));
            assert_eq!(group_back, Some(0));
        }
    }
}
