//! containerd on a node: its config (`config.rs`) and the container images
//! the node image ships, imported into containerd's `k8s.io` namespace
//! before the kubelet starts, so the CRI plugin never pulls (there may be
//! no registry). Talks to containerd's gRPC API (`containerd-client`):
//! under a lease (`lease.rs`), content blobs are written with the labels
//! containerd's garbage collector follows, then the image record is
//! created, pinned, and the layers are unpacked (`unpack.rs`).
//!
//! An image is an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/...`, built by `image/images/build.sh`); its name is the
//! index's `org.opencontainers.image.ref.name` annotation.

pub mod config;
mod lease;
pub mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, GetImageRequest, Image, InfoRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{self, Request, transport::Channel};
use containerd_client::types::Descriptor;
use serde::Deserialize;

/// Where the node image keeps the images it ships.
pub const IMAGES_DIR: &str = "/usr/lib/muster/images";
/// containerd's socket.
pub const SOCKET: &str = "/run/containerd/containerd.sock";
/// The CRI plugin never garbage-collects a pinned image (containerd ≥ 1.7.3).
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";
/// Marks an image as the CRI plugin's own.
pub const MANAGED_LABEL: &str = "io.cri-containerd.image";

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Blobs go over the stream in pieces well below gRPC's message limit.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("containerd at {socket}: {message}")]
    Connect { socket: String, message: String },
    #[error("containerd: {op}: {status}")]
    Call { op: String, status: tonic::Status },
    #[error("containerd: {op}: no answer within {timeout:?}")]
    Timeout { op: String, timeout: Duration },
    #[error("image layout {dir}: {message}")]
    Layout { dir: PathBuf, message: String },
    #[error("containerd: {header} {value:?} is not a valid gRPC header value")]
    Header { header: &'static str, value: String },
}

/// A connection to containerd, optionally holding a lease (`lease.rs`).
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    lease: Option<String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// One blob to store, with the GC labels that keep its children alive.
struct Blob {
    digest: String,
    size: i64,
    labels: HashMap<String, String>,
}

/// An image layout read from disk, ready to import.
pub struct Layout {
    dir: PathBuf,
    /// The image's name (`registry.k8s.io/pause:3.9`).
    pub name: String,
    manifest: OciDescriptor,
    /// Children first: layers, config, then the manifest.
    blobs: Vec<Blob>,
    /// The layers, bottom first, and their uncompressed digests (the
    /// config's `rootfs.diff_ids`), for unpacking.
    layers: Vec<OciDescriptor>,
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

impl Layout {
    /// Reads and checks `dir` (pure apart from reading its files).
    pub fn read(dir: &Path) -> Result<Layout, ContainerdError> {
        let bad = |message: String| ContainerdError::Layout {
            dir: dir.to_path_buf(),
            message,
        };
        let read_json = |path: PathBuf| -> Result<Vec<u8>, ContainerdError> {
            std::fs::read(&path).map_err(|e| bad(format!("{}: {e}", path.display())))
        };
        let index: Index = serde_json::from_slice(&read_json(dir.join("index.json"))?)
            .map_err(|e| bad(format!("index.json: {e}")))?;
        let [manifest] = &index.manifests[..] else {
            return Err(bad(format!(
                "index.json lists {} manifests; one per layout is supported",
                index.manifests.len()
            )));
        };
        let name = manifest
            .annotations
            .get("org.opencontainers.image.ref.name")
            .cloned()
            .ok_or_else(|| {
                bad("index.json names no image (org.opencontainers.image.ref.name)".into())
            })?;
        let m: Manifest = serde_json::from_slice(&read_json(blob_path(dir, &manifest.digest))?)
            .map_err(|e| bad(format!("manifest {}: {e}", manifest.digest)))?;
        let config: ImageConfig =
            serde_json::from_slice(&read_json(blob_path(dir, &m.config.digest))?)
                .map_err(|e| bad(format!("config {}: {e}", m.config.digest)))?;
        let diff_ids = config.rootfs.diff_ids;
        let mut blobs: Vec<Blob> = m
            .layers
            .iter()
            .map(|d| Blob {
                digest: d.digest.clone(),
                size: d.size,
                labels: HashMap::new(),
            })
            .collect();
        // The config keeps the unpacked layers alive (what containerd's own
        // unpack labels it with): `unpack` names the top snapshot so.
        let top = unpack::chain_ids(&diff_ids).pop();
        blobs.push(Blob {
            digest: m.config.digest.clone(),
            size: m.config.size,
            labels: top
                .map(|id| {
                    (
                        format!("containerd.io/gc.ref.snapshot.{}", unpack::SNAPSHOTTER),
                        id,
                    )
                })
                .into_iter()
                .collect(),
        });
        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            m.config.digest.clone(),
        )]);
        for (i, l) in m.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        blobs.push(Blob {
            digest: manifest.digest.clone(),
            size: manifest.size,
            labels,
        });
        for b in &blobs {
            let path = blob_path(dir, &b.digest);
            let len = std::fs::metadata(&path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?
                .len();
            if i64::try_from(len).ok() != Some(b.size) {
                return Err(bad(format!(
                    "{} is {len} bytes, the manifest says {}",
                    b.digest, b.size
                )));
            }
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
            name,
            manifest: manifest.clone(),
            blobs,
            layers: m.layers.clone(),
            diff_ids,
        })
    }
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(alg).join(hex)
}

async fn within<T>(
    op: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ContainerdError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(ContainerdError::Call {
            op: op.to_string(),
            status,
        }),
        Err(_) => Err(ContainerdError::Timeout {
            op: op.to_string(),
            timeout: CALL_TIMEOUT,
        }),
    }
}

impl Containerd {
    pub async fn connect(socket: &Path) -> Result<Containerd, ContainerdError> {
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|e| ContainerdError::Connect {
                    socket: socket.display().to_string(),
                    message: e.to_string(),
                })?;
        Ok(Containerd {
            channel,
            lease: None,
        })
    }

    /// A call in `namespace`, under this connection's lease if it has one
    /// (containerd reads both from gRPC metadata).
    fn request<T>(&self, namespace: &str, message: T) -> Result<Request<T>, ContainerdError> {
        let mut req = Request::new(message);
        let headers = [
            ("containerd-namespace", Some(namespace)),
            ("containerd-lease", self.lease.as_deref()),
        ];
        for (header, value) in headers {
            let Some(value) = value else { continue };
            let parsed = value.parse().map_err(|_| ContainerdError::Header {
                header,
                value: value.to_string(),
            })?;
            req.metadata_mut().insert(header, parsed);
        }
        Ok(req)
    }

    /// Whether `namespace` has an image named `name`.
    pub async fn has_image(&self, namespace: &str, name: &str) -> Result<bool, ContainerdError> {
        let mut images = ImagesClient::new(self.channel.clone());
        let req = self.request(
            namespace,
            GetImageRequest {
                name: name.to_string(),
            },
        )?;
        match images.get(req).await {
            Ok(r) => Ok(r.into_inner().image.is_some()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(ContainerdError::Call {
                op: format!("get image {name}"),
                status,
            }),
        }
    }

    /// Stores the layout's blobs (those not there yet) and creates its
    /// image record with `labels`. An existing record of that name is left
    /// as it is. Returns whether anything was created.
    pub async fn import(
        &self,
        namespace: &str,
        layout: &Layout,
        labels: &[(&str, &str)],
    ) -> Result<bool, ContainerdError> {
        if self.has_image(namespace, &layout.name).await? {
            return Ok(false);
        }
        for blob in &layout.blobs {
            self.store_blob(namespace, &layout.dir, blob).await?;
        }
        let image = Image {
            name: layout.name.clone(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: Some(Descriptor {
                media_type: layout.manifest.media_type.clone(),
                digest: layout.manifest.digest.clone(),
                size: layout.manifest.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let req = self.request(
            namespace,
            CreateImageRequest {
                image: Some(image),
                source_date_epoch: None,
            },
        )?;
        match images.create(req).await {
            Ok(_) => Ok(true),
            // Another import got there first: fine.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
            Err(status) => Err(ContainerdError::Call {
                op: format!("create image {}", layout.name),
                status,
            }),
        }
    }

    async fn store_blob(
        &self,
        namespace: &str,
        dir: &Path,
        blob: &Blob,
    ) -> Result<(), ContainerdError> {
        let mut content = ContentClient::new(self.channel.clone());
        let info = self.request(
            namespace,
            InfoRequest {
                digest: blob.digest.clone(),
            },
        )?;
        match content.info(info).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(status) => {
                return Err(ContainerdError::Call {
                    op: format!("content info {}", blob.digest),
                    status,
                });
            }
        }
        let path = blob_path(dir, &blob.digest);
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| ContainerdError::Layout {
                dir: dir.to_path_buf(),
                message: format!("{}: {e}", path.display()),
            })?;
        let reference = format!("muster-import-{}", blob.digest);
        let mut requests: Vec<WriteContentRequest> = data
            .chunks(CHUNK)
            .scan(0i64, |offset, chunk| {
                let req = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total: blob.size,
                    expected: blob.digest.clone(),
                    offset: *offset,
                    data: chunk.to_vec(),
                    labels: HashMap::new(),
                };
                *offset += chunk.len() as i64;
                Some(req)
            })
            .collect();
        requests.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total: blob.size,
            expected: blob.digest.clone(),
            offset: blob.size,
            data: Vec::new(),
            labels: blob.labels.clone(),
        });
        let req = self.request(namespace, futures_util::stream::iter(requests))?;
        let op = format!("write {}", blob.digest);
        let mut responses = match within(&op, content.write(req)).await {
            Ok(r) => r,
            Err(ContainerdError::Call { status, .. })
                if status.code() == tonic::Code::AlreadyExists =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Drain the answers: an error on the stream is the commit failing.
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Err(status) => return Err(ContainerdError::Call { op, status }),
            }
        }
    }
}

/// Imports every image layout under `dir` into the CRI namespace, pinned,
/// and unpacks it durably (`unpack`). Returns the names imported now
/// (already present ones are skipped; their missing layers are unpacked).
pub async fn import_shipped(
    containerd: &Containerd,
    dir: &Path,
) -> Result<Vec<String>, ContainerdError> {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("index.json").is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(ContainerdError::Layout {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    entries.sort();
    let leased = containerd
        .leased(config::CRI_NAMESPACE, IMPORT_LEASE)
        .await?;
    let imported = import_layouts(&leased, &entries).await;
    let released = leased.release(config::CRI_NAMESPACE).await;
    let imported = imported?;
    released?;
    Ok(imported)
}

/// The lease every import holds (`lease.rs`): one at a time per node.
const IMPORT_LEASE: &str = "muster-import";

async fn import_layouts(
    containerd: &Containerd,
    entries: &[PathBuf],
) -> Result<Vec<String>, ContainerdError> {
    let mut imported = Vec::new();
    for path in entries {
        let layout = Layout::read(path)?;
        let labels = [(PINNED_LABEL, "pinned"), (MANAGED_LABEL, "managed")];
        let new = containerd
            .import(config::CRI_NAMESPACE, &layout, &labels)
            .await?;
        containerd.unpack(config::CRI_NAMESPACE, &layout).await?;
        if new {
            imported.push(layout.name);
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout made the way image/images/build.sh makes one.
    fn layout(dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("dirs");
        let put = |bytes: &[u8]| {
            let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
            let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(blobs.join(&hex), bytes).expect("blob");
            (format!("sha256:{hex}"), bytes.len())
        };
        let (layer, layer_len) = put(b"layer");
        let config_json = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#);
        let (config, config_len) = put(config_json.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_len}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_len}}}]}}"#
        );
        let (m, m_len) = put(manifest.as_bytes());
        std::fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","size":{m_len},"annotations":{{"org.opencontainers.image.ref.name":"example.org/x:1"}}}}]}}"#
            ),
        )
        .expect("index");
    }

    #[test]
    fn a_layout_reads_children_first_with_gc_labels_on_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        layout(dir.path());
        let l = Layout::read(dir.path()).expect("layout");
        assert_eq!(l.name, "example.org/x:1");
        assert_eq!(l.blobs.len(), 3);
        let manifest = &l.blobs[2];
        assert_eq!(manifest.digest, l.manifest.digest);
        assert_eq!(
            manifest.labels.get("containerd.io/gc.ref.content.l.0"),
            Some(&l.blobs[0].digest)
        );
        assert_eq!(
            manifest.labels.get("containerd.io/gc.ref.content.config"),
            Some(&l.blobs[1].digest)
        );
        // The config refers to the unpacked top layer (one layer: its
        // chain ID is its diff ID, here the layer's own digest).
        assert_eq!(
            l.blobs[1]
                .labels
                .get("containerd.io/gc.ref.snapshot.overlayfs"),
            Some(&l.blobs[0].digest)
        );
        assert_eq!(l.diff_ids, vec![l.blobs[0].digest.clone()]);
    }

    #[test]
    fn a_truncated_blob_is_refused_with_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        layout(dir.path());
        let l = Layout::read(dir.path()).expect("layout");
        std::fs::write(blob_path(dir.path(), &l.blobs[0].digest), b"lay").expect("truncate");
        let e = Layout::read(dir.path()).err().expect("refused").to_string();
        assert!(e.contains("3 bytes, the manifest says 5"), "{e}");
    }
}
