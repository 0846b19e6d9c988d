//! The VIP manager's own thread at a real-time priority. S4 rests on the
//! holder dropping the address within `act_budget` of its deadline; on a
//! starved node (apiserver, etcd compaction, image pulls, a CI build) a
//! normal-priority timer can fire late. A `SCHED_FIFO` thread is run before
//! every normal thread the moment its timer fires. The manager only sleeps,
//! waits on sockets and does small TLS and netlink exchanges, so it cannot
//! hog a core (and the kernel's RT throttling caps RT threads at 95 % of a
//! core regardless). The kernel-enforced address lifetime
//! (`Timing::address_lifetime`) covers the cases this cannot: a frozen
//! process, a node without CAP_SYS_NICE.

use std::io;

/// `SCHED_FIFO` priority of the VIP thread: the lowest real-time band, so
/// kernel threads (priority 50) and anything an operator raised stay ahead.
pub const PRIORITY: i32 = 10;

/// Puts the calling thread in `SCHED_FIFO` at `priority` (children forked
/// from it start at normal priority again). Fails with EPERM without
/// CAP_SYS_NICE (or under systemd's `RestrictRealtime=`).
pub fn raise_this_thread(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler only reads `param`; pid 0 is the calling
    // thread, the only one it changes.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy is `SCHED_FIFO`.
pub fn is_realtime() -> bool {
    // SAFETY: no arguments to read or write; pid 0 is the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy & !libc::SCHED_RESET_ON_FORK == libc::SCHED_FIFO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_raised_or_told_why_not() {
        std::thread::spawn(|| match raise_this_thread(PRIORITY) {
            Ok(()) => assert!(is_realtime()),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
                assert!(!is_realtime());
            }
        })
        .join()
        .expect("thread");
        assert!(!is_realtime(), "only the raised thread changed");
    }
}
