//! What the CNI plugins keep on disk per sandbox, though no sandbox
//! outlives a reboot: libcni's result cache (`/var/lib/cni/results`, read
//! back to tear a sandbox down) and host-local's address reservations
//! (`/var/lib/cni/networks/NAME`). Both are written without fsync, so a
//! power cut soon after the first pods start can leave them as empty
//! files. An empty cached result makes every teardown of its sandbox fail
//! ("unexpected end of JSON input"), the kubelet never gets past the old
//! sandbox and the node runs no pod again (the tier-2 worker lab saw it);
//! an empty reservation is never released. A missing cached result is
//! fine: libcni then tears down without one.
//!
//! So once per boot, before the kubelet starts, the agent removes them. A
//! stamp holding the boot id makes it once per boot: an agent restart in
//! the same boot never removes what live sandboxes need.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::pki::{CERT_MODE, write_if_changed};

/// The kernel's id of the running boot (new at every boot).
pub const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";
/// libcni's and host-local's state directory (their default).
pub const CNI_STATE_DIR: &str = "/var/lib/cni";

#[derive(Debug, Error)]
#[error("pod network: {what} {}: {source}", path.display())]
pub struct CleanupError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CleanupError {
    let path = path.to_path_buf();
    move |source| CleanupError { what, path, source }
}

/// Where the per-sandbox state lives and where the boot stamp goes.
#[derive(Debug, Clone)]
pub struct SandboxState {
    pub cni_state_dir: PathBuf,
    /// The CNI network whose host-local reservations are cleared (the
    /// `bridge` network's name); other networks' IPAM is their add-on's.
    pub network: String,
    pub boot_id_file: PathBuf,
    pub stamp: PathBuf,
}

/// The stamp does not name this boot. Pure.
pub fn is_new_boot(stamp: Option<&str>, boot_id: &str) -> bool {
    stamp.map(str::trim) != Some(boot_id.trim())
}

/// The directories whose files belong to sandboxes only. Pure.
pub fn per_sandbox_dirs(cni_state_dir: &Path, network: &str) -> [PathBuf; 2] {
    [
        cni_state_dir.join("results"),
        cni_state_dir.join("networks").join(network),
    ]
}

impl SandboxState {
    /// On the first call of each boot, removes the sandboxes' files and
    /// then stamps the boot. `Some(n)`: removed `n` files this call;
    /// `None`: already done this boot. On error the stamp is not written,
    /// so the next call tries again (and the kubelet must not start).
    pub fn clear_once_per_boot(&self) -> Result<Option<usize>, CleanupError> {
        let boot_id = std::fs::read_to_string(&self.boot_id_file)
            .map_err(at("reading", &self.boot_id_file))?;
        let stamp = match std::fs::read_to_string(&self.stamp) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(at("reading", &self.stamp)(e)),
        };
        if !is_new_boot(stamp.as_deref(), &boot_id) {
            return Ok(None);
        }
        let mut removed = 0;
        for dir in per_sandbox_dirs(&self.cni_state_dir, &self.network) {
            removed += remove_files_in(&dir)?;
        }
        if let Some(dir) = self.stamp.parent() {
            std::fs::create_dir_all(dir).map_err(at("creating", dir))?;
        }
        write_if_changed(&self.stamp, boot_id.trim().as_bytes(), CERT_MODE)
            .map_err(|e| at("writing", &self.stamp)(io::Error::other(e.to_string())))?;
        Ok(Some(removed))
    }
}

/// Removes the regular files directly in `dir` (a missing `dir` has none).
fn remove_files_in(dir: &Path) -> Result<usize, CleanupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(at("listing", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(at("listing", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(at("reading", &path))?;
        if kind.is_file() || kind.is_symlink() {
            std::fs::remove_file(&path).map_err(at("removing", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT_A: &str = "0f1d6a53-5d0e-4c69-9d0b-6c7f1f2b2a11\n";
    const BOOT_B: &str = "7b3c1e2a-9a44-4f2f-8d55-0b1e6e9c7d22\n";

    #[test]
    fn only_a_stamp_naming_this_boot_counts_as_done() {
        assert!(is_new_boot(None, BOOT_A));
        assert!(is_new_boot(Some(BOOT_B.trim()), BOOT_A));
        assert!(!is_new_boot(Some(BOOT_A.trim()), BOOT_A));
        assert!(!is_new_boot(Some(BOOT_A), BOOT_A.trim()));
    }

    /// A disk as a power cut left it: an empty cached result, a torn
    /// reservation, another network's reservations.
    fn disk(root: &Path) -> SandboxState {
        let cni = root.join("cni");
        for (path, text) in [
            ("results/muster-3f2a-eth0", ""),
            ("results/muster-9c1b-eth0", "{\"cniVersion\":\"1.0.0\"}"),
            ("networks/muster/10.244.1.2", ""),
            ("networks/muster/last_reserved_ip.0", "10.244.1.2"),
            ("networks/muster/lock", ""),
            ("networks/other/10.9.0.2", "abc\neth0"),
        ] {
            let p = cni.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        let boot_id_file = root.join("boot_id");
        std::fs::write(&boot_id_file, BOOT_A).expect("boot id");
        SandboxState {
            cni_state_dir: cni,
            network: "muster".into(),
            boot_id_file,
            stamp: root.join("state/node/cni-boot-id"),
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn a_new_boot_clears_the_sandboxes_files_once_and_keeps_other_networks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = disk(tmp.path());
        assert_eq!(s.clear_once_per_boot().expect("clear"), Some(5));
        assert!(files(&s.cni_state_dir.join("results")).is_empty());
        assert!(files(&s.cni_state_dir.join("networks/muster")).is_empty());
        assert_eq!(
            files(&s.cni_state_dir.join("networks/other")),
            vec!["10.9.0.2"]
        );
        assert_eq!(
            std::fs::read_to_string(&s.stamp).expect("stamp"),
            BOOT_A.trim()
        );

        // The same boot: what new sandboxes wrote since stays.
        std::fs::write(s.cni_state_dir.join("results/muster-77aa-eth0"), "{}").expect("w");
        assert_eq!(s.clear_once_per_boot().expect("again"), None);
        assert_eq!(
            files(&s.cni_state_dir.join("results")),
            vec!["muster-77aa-eth0"]
        );

        // The next boot clears again.
        std::fs::write(&s.boot_id_file, BOOT_B).expect("boot id");
        assert_eq!(s.clear_once_per_boot().expect("next boot"), Some(1));
    }

    #[test]
    fn a_first_boot_without_cni_state_just_stamps() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = SandboxState {
            cni_state_dir: tmp.path().join("absent"),
            network: "muster".into(),
            boot_id_file: tmp.path().join("boot_id"),
            stamp: tmp.path().join("stamp"),
        };
        std::fs::write(&s.boot_id_file, BOOT_A).expect("boot id");
        assert_eq!(s.clear_once_per_boot().expect("clear"), Some(0));
        assert!(s.stamp.is_file());
    }

    #[test]
    fn an_unreadable_boot_id_is_an_error_naming_the_file_and_writes_no_stamp() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = disk(tmp.path());
        std::fs::remove_file(&s.boot_id_file).expect("rm");
        let e = s.clear_once_per_boot().expect_err("no boot id");
        assert!(e.to_string().contains("boot_id"), "{e}");
        assert!(!s.stamp.exists());
        assert_eq!(files(&s.cni_state_dir.join("results")).len(), 2);
    }
}
