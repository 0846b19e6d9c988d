//! etcd's offline tool: `etcdutl snapshot status` checks a snapshot before
//! it is uploaded, `etcdutl snapshot restore` turns one into a member's data
//! directory. The argument lists and the status parse are pure.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::formation::InitialMember;

/// How far a restore moves the revision on: clients that survived the loss
/// (kubelets, controllers of another group) may hold watch revisions newer
/// than the snapshot, and would silently miss events if the restored
/// cluster reused those numbers. etcd's own restore guide asks for a bump
/// this large (1e9) with the old revisions marked compacted, so such a
/// client relists instead.
pub const BUMP_REVISION: u64 = 1_000_000_000;

/// What `etcdutl snapshot status -w json` says about a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

/// Parses `etcdutl snapshot status -w json` (one JSON object).
pub fn parse_status(json: &str) -> Result<SnapshotStatus, String> {
    let status: SnapshotStatus = serde_json::from_str(json.trim())
        .map_err(|e| format!("etcdutl snapshot status printed {:?}: {e}", snippet(json)))?;
    if status.revision <= 0 || status.total_size == 0 {
        return Err(format!(
            "etcdutl calls the snapshot empty (revision {}, {} bytes)",
            status.revision, status.total_size
        ));
    }
    Ok(status)
}

fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}

/// What a restore writes and as whom.
#[derive(Debug, Clone)]
pub struct RestoreSpec<'a> {
    pub snapshot: &'a Path,
    pub name: &'a str,
    pub my_peer_url: &'a str,
    pub initial: &'a [InitialMember],
    pub token: &'a str,
    pub data_dir: &'a Path,
}

/// `etcdutl snapshot restore …` for `spec`.
pub fn restore_args(spec: &RestoreSpec<'_>) -> Vec<String> {
    let cluster: Vec<String> = spec
        .initial
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect();
    vec![
        "snapshot".into(),
        "restore".into(),
        spec.snapshot.display().to_string(),
        format!("--name={}", spec.name),
        format!("--initial-cluster={}", cluster.join(",")),
        format!("--initial-cluster-token={}", spec.token),
        format!("--initial-advertise-peer-urls={}", spec.my_peer_url),
        format!("--data-dir={}", spec.data_dir.display()),
        format!("--bump-revision={BUMP_REVISION}"),
        "--mark-compacted".into(),
    ]
}

/// Where etcdutl is: beside etcd, as Debian ships them.
pub fn beside(etcd_bin: &Path) -> PathBuf {
    etcd_bin.with_file_name("etcdutl")
}

/// Runs etcdutl with `args`; its stdout and its log (stderr), or an error
/// with what it said.
pub async fn run(etcdutl: &Path, args: &[String]) -> Result<(String, String), String> {
    let out = tokio::process::Command::new(etcdutl)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", etcdutl.display()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} {} failed ({}): {}",
            etcdutl.display(),
            args.iter().take(2).cloned().collect::<Vec<_>>().join(" "),
            out.status,
            said.trim()
        ));
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The cluster id a restore wrote, from etcdutl's log (its `added member`
/// lines carry `"cluster-id": "3845895a6a529af6"`).
pub fn parse_restored_cluster_id(log: &str) -> Option<u64> {
    let at = log.find("\"cluster-id\": \"")? + "\"cluster-id\": \"".len();
    let hex: String = log[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// Restores `spec.snapshot` into `spec.data_dir` (which must not exist);
/// returns the cluster id the restored member belongs to.
pub async fn restore(etcdutl: &Path, spec: &RestoreSpec<'_>) -> Result<u64, String> {
    let (_, log) = run(etcdutl, &restore_args(spec)).await?;
    parse_restored_cluster_id(&log).ok_or_else(|| {
        format!(
            "etcdutl restored {} but its log names no cluster id: {}",
            spec.snapshot.display(),
            snippet(&log)
        )
    })
}

/// Checks a snapshot file with `etcdutl snapshot status`.
pub async fn status(etcdutl: &Path, file: &Path) -> Result<SnapshotStatus, String> {
    let args = [
        "snapshot".to_string(),
        "status".into(),
        file.display().to_string(),
        "-w".into(),
        "json".into(),
    ];
    parse_status(&run(etcdutl, &args).await?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_of_a_real_snapshot_parses() {
        let text = crate::test_fixture("backup", "etcdutl-3.5.16-snapshot-status.json");
        assert_eq!(
            parse_status(&text),
            Ok(SnapshotStatus {
                hash: 1_601_178_803,
                revision: 6,
                total_key: 11,
                total_size: 20_480
            })
        );
        assert!(
            parse_status("Error: invalid database").is_err_and(|e| e.contains("invalid database"))
        );
        let empty = r#"{"hash":0,"revision":0,"totalKey":0,"totalSize":0}"#;
        assert!(parse_status(empty).is_err_and(|e| e.contains("empty")));
    }

    #[test]
    fn a_restore_names_the_whole_initial_set_and_bumps_the_revision() {
        let initial = vec![
            InitialMember {
                name: "i-1".into(),
                peer_url: "https://10.0.0.1:2380".into(),
            },
            InitialMember {
                name: "i-2".into(),
                peer_url: "https://10.0.0.2:2380".into(),
            },
        ];
        let args = restore_args(&RestoreSpec {
            snapshot: Path::new("/var/lib/muster/restore/s.db"),
            name: "i-2",
            my_peer_url: "https://10.0.0.2:2380",
            initial: &initial,
            token: "muster-prod-abc",
            data_dir: Path::new("/var/lib/muster/etcd.restoring"),
        });
        assert_eq!(
            args,
            [
                "snapshot",
                "restore",
                "/var/lib/muster/restore/s.db",
                "--name=i-2",
                "--initial-cluster=i-1=https://10.0.0.1:2380,i-2=https://10.0.0.2:2380",
                "--initial-cluster-token=muster-prod-abc",
                "--initial-advertise-peer-urls=https://10.0.0.2:2380",
                "--data-dir=/var/lib/muster/etcd.restoring",
                "--bump-revision=1000000000",
                "--mark-compacted",
            ]
        );
    }

    #[test]
    fn the_cluster_id_of_a_restore_is_read_from_its_log() {
        let log = crate::test_fixture("backup", "etcdutl-3.5.16-snapshot-restore.log");
        assert_eq!(parse_restored_cluster_id(&log), Some(0x3845_895a_6a52_9af6));
        assert_eq!(parse_restored_cluster_id("restored snapshot"), None);
    }
}
