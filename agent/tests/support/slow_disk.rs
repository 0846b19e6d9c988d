//! A slow disk for one test host: its processes go into a blkio cgroup
//! (cgroup v1, what these machines have) that limits write IOPS on the
//! block device under the host's directory, so every fsync of its etcd
//! member waits — the stall a slow or throttled cloud disk gives etcd.
//!
//! Synchronous writes are throttled (measured here: 100 writes of 4 KiB
//! with `dd oflag=dsync` take 15 s at 20 IOPS, 0.02 s without); buffered
//! writeback is not (v1 limits only what a process submits itself), and
//! etcd's WAL is written with fdatasync, so its commits are what slows.
//! Processes the host starts meanwhile (an etcd restart) inherit the group.
//! Dropping it moves every process in the group back and removes it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const BLKIO: &str = "/sys/fs/cgroup/blkio";

pub struct SlowDisk {
    group: PathBuf,
}

impl SlowDisk {
    /// Limits `pids` to `write_iops` writes per second on the disk holding
    /// `dir`. An error says why this machine cannot (no v1 blkio, a
    /// directory not on a block device).
    pub fn apply(dir: &Path, pids: &[i32], write_iops: u32) -> Result<SlowDisk, String> {
        let root = Path::new(BLKIO);
        if !root.join("blkio.throttle.write_iops_device").exists() {
            return Err(format!("no cgroup v1 blkio controller at {BLKIO}"));
        }
        sweep_leftovers(root);
        let device = whole_disk(dir)?;
        static N: AtomicUsize = AtomicUsize::new(0);
        let group = root.join(format!(
            "muster-test-slowdisk-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&group).map_err(|e| format!("{}: {e}", group.display()))?;
        let slow = SlowDisk { group };
        let limit = slow.group.join("blkio.throttle.write_iops_device");
        fs::write(&limit, format!("{device} {write_iops}"))
            .map_err(|e| format!("{}: {e}", limit.display()))?;
        for pid in pids {
            // A process may have exited meanwhile: not an error.
            let _ = fs::write(slow.group.join("cgroup.procs"), pid.to_string());
        }
        Ok(slow)
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let procs = fs::read_to_string(self.group.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = fs::write(Path::new(BLKIO).join("cgroup.procs"), pid);
        }
        let _ = fs::remove_dir(&self.group);
    }
}

/// Removes groups a crashed test run left behind (its processes died with
/// their namespaces, so the groups are empty; a live run's are kept).
fn sweep_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix("muster-test-slowdisk-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{owner}")).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// `MAJOR:MINOR` of the whole disk under `dir` (throttle rules name whole
/// disks, not partitions).
fn whole_disk(dir: &Path) -> Result<String, String> {
    let dev = fs::metadata(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return Err(format!(
            "{} is not on a block device ({major}:{minor}: tmpfs, overlay or btrfs)",
            dir.display()
        ));
    }
    let disk = if sys.join("partition").exists() {
        sys.canonicalize()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("dev")))
            .ok_or_else(|| format!("cannot find the disk of partition {major}:{minor}"))?
    } else {
        sys.join("dev")
    };
    fs::read_to_string(&disk)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{}: {e}", disk.display()))
}
