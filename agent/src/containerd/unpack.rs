//! Unpacking the shipped images into containerd's snapshotter, durably.
//!
//! Left to itself, the CRI plugin unpacks an image when its first
//! container starts, and containerd 1.7 writes the layer's files without
//! syncing them: the snapshot's record is committed (bolt, fsynced) while
//! its files may still sit in the page cache. A power cut in that window
//! leaves a committed snapshot of empty files that is never unpacked
//! again. Seen in the tier-2 worker lab: a power cut about a minute after
//! the first pods started left `/pause` at 0 bytes, and every pod sandbox
//! on that node died at once, across reboots (containerd/containerd#5854,
//! #9115). So the agent unpacks the images it ships itself, through the
//! Diff service with `sync_fs` (containerd runs `syncfs(2)` after each
//! layer), and commits each layer's snapshot under its chain ID, the name
//! the CRI plugin looks for; the image's config carries the GC reference
//! to the top snapshot (`Layout::read`).

use containerd_client::services::v1::ApplyRequest;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::tonic;
use containerd_client::types::Descriptor;
use std::collections::HashMap;

use super::{Containerd, ContainerdError, Layout, within};

/// The snapshotter the CRI plugin uses (containerd's default).
pub const SNAPSHOTTER: &str = "overlayfs";

/// The chain IDs of a stack of layers, bottom first (OCI image spec,
/// "Layer ChainID"): the first is its diff ID, each next one
/// `sha256(parent chain ID + " " + diff ID)`. Pure.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let digest = ring::digest::digest(
                    &ring::digest::SHA256,
                    format!("{parent} {diff_id}").as_bytes(),
                );
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}")
            }
        };
        chain.push(next);
    }
    chain
}

impl Containerd {
    /// Unpacks `layout`'s layers that have no snapshot yet, syncing each
    /// to disk before its snapshot is committed. Returns whether any layer
    /// was unpacked now.
    pub async fn unpack(&self, namespace: &str, layout: &Layout) -> Result<bool, ContainerdError> {
        let chain = chain_ids(&layout.diff_ids);
        if chain.len() != layout.layers.len() {
            return Err(ContainerdError::Layout {
                dir: layout.dir.clone(),
                message: format!(
                    "the config lists {} diff IDs for {} layers",
                    chain.len(),
                    layout.layers.len()
                ),
            });
        }
        let mut parent = String::new();
        let mut unpacked = false;
        for (layer, chain_id) in layout.layers.iter().zip(&chain) {
            if !self.snapshot_exists(namespace, chain_id).await? {
                self.unpack_layer(namespace, layer, chain_id, &parent)
                    .await?;
                unpacked = true;
            }
            parent = chain_id.clone();
        }
        Ok(unpacked)
    }

    async fn snapshot_exists(&self, namespace: &str, key: &str) -> Result<bool, ContainerdError> {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let req = self.request(
            namespace,
            StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            },
        )?;
        match snapshots.stat(req).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(ContainerdError::Call {
                op: format!("stat snapshot {key}"),
                status,
            }),
        }
    }

    /// Prepare an active snapshot on `parent`, apply the layer with
    /// `sync_fs`, commit it as `chain_id`; the active one is removed if
    /// any step fails (and first, if an earlier run left it behind).
    async fn unpack_layer(
        &self,
        namespace: &str,
        layer: &super::OciDescriptor,
        chain_id: &str,
        parent: &str,
    ) -> Result<(), ContainerdError> {
        let key = format!("muster-unpack {chain_id}");
        self.remove_snapshot(namespace, &key).await;
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        // A GC root while it is being filled (nothing else refers to it yet).
        let labels = HashMap::from([("containerd.io/gc.root".to_string(), "muster".to_string())]);
        let req = self.request(
            namespace,
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: parent.into(),
                labels,
            },
        )?;
        let op = format!("prepare snapshot {chain_id}");
        let mounts = within(&op, snapshots.prepare(req)).await?.mounts;
        let applied = self.apply(namespace, layer, mounts).await;
        let committed = match applied {
            Ok(()) => {
                let req = self.request(
                    namespace,
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain_id.into(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                )?;
                within(
                    &format!("commit snapshot {chain_id}"),
                    snapshots.commit(req),
                )
                .await
                .map(|_| ())
            }
            Err(e) => Err(e),
        };
        if committed.is_err() {
            self.remove_snapshot(namespace, &key).await;
        }
        committed
    }

    async fn apply(
        &self,
        namespace: &str,
        layer: &super::OciDescriptor,
        mounts: Vec<containerd_client::types::Mount>,
    ) -> Result<(), ContainerdError> {
        let mut diff = DiffClient::new(self.channel.clone());
        let req = self.request(
            namespace,
            ApplyRequest {
                diff: Some(Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    annotations: HashMap::new(),
                }),
                mounts,
                payloads: HashMap::new(),
                sync_fs: true,
            },
        )?;
        within(&format!("apply layer {}", layer.digest), diff.apply(req))
            .await
            .map(|_| ())
    }

    /// Best effort: a leftover active snapshot of an interrupted unpack.
    async fn remove_snapshot(&self, namespace: &str, key: &str) {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let req = self.request(
            namespace,
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            },
        );
        if let Ok(req) = req {
            let _ = snapshots.remove(req).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_chain_id_is_the_diff_id_and_each_next_hashes_its_parent() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        // `printf '%s %s' sha256:aaa… sha256:bbb… | sha256sum`
        assert_eq!(
            chain[1],
            "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c"
        );
        assert!(chain_ids(&[]).is_empty());
    }
}
