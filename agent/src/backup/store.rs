//! Where snapshots live: an S3 bucket, a Cloud Storage bucket or a directory (a local disk, an NFS
//! mount). Each cluster's snapshots sit under `{prefix}/{cluster}/`, so
//! several clusters can share one bucket. `Target::parse` is pure and is
//! also what config validation uses.

use std::path::{Path, PathBuf};

use super::plan::SnapshotName;
use crate::cloud::aws::InstanceSession;
use crate::cloud::gce::{GceClient, storage};

/// `topology.etcd.backup.to`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Local { dir: PathBuf },
}

impl Target {
    /// `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]` or
    /// `file:///ABSOLUTE/PATH`.
    pub fn parse(text: &str) -> Result<Target, String> {
        for scheme in ["s3://", "gs://"] {
            let Some(rest) = text.strip_prefix(scheme) else {
                continue;
            };
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let (bucket, prefix) = (bucket.to_string(), prefix.trim_matches('/').to_string());
            bucket_name_problem(&bucket).map_or(Ok(()), Err)?;
            if let Some(c) = prefix
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || "-_./".contains(*c)))
            {
                return Err(format!(
                    "`{text}`: the key prefix may hold letters, digits, `-`, `_`, `.` and `/`, not {c:?}"
                ));
            }
            return Ok(if scheme == "s3://" {
                Target::S3 { bucket, prefix }
            } else {
                Target::Gcs { bucket, prefix }
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') || path.split('/').any(|s| s == "..") {
                return Err(format!(
                    "`{text}`: a file:// target needs an absolute path without `..` (file:///var/backups/etcd)"
                ));
            }
            return Ok(Target::Local {
                dir: PathBuf::from(path),
            });
        }
        Err(format!(
            "`{text}` is not a backup target: use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or file:///PATH"
        ))
    }
}

/// Why `bucket` is not a bucket name, if it is not (AWS's rules, which
/// Cloud Storage's include for names without dots).
fn bucket_name_problem(bucket: &str) -> Option<String> {
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    (!(3..=63).contains(&bucket.len()) || !ok_chars || !ends_ok).then(|| {
        format!(
            "`{bucket}` is not a bucket name: 3 to 63 lowercase letters, digits, `-` or `.`, starting and ending with a letter or digit"
        )
    })
}

/// A backup target opened for one cluster.
pub struct Store {
    cluster: String,
    place: Place,
}

enum Place {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        session: Box<InstanceSession>,
        /// The bucket's region (signed for).
        region: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
        client: Box<GceClient>,
    },
}

impl Store {
    pub fn local(dir: PathBuf, cluster: &str) -> Store {
        Store {
            cluster: cluster.into(),
            place: Place::Local(dir),
        }
    }

    /// An S3 bucket with the instance's AWS session, signing for `region`.
    pub fn s3(
        bucket: String,
        prefix: String,
        cluster: &str,
        session: InstanceSession,
        region: String,
    ) -> Store {
        Store {
            cluster: cluster.into(),
            place: Place::S3 {
                bucket,
                prefix,
                session: Box::new(session),
                region,
            },
        }
    }

    /// A Cloud Storage bucket with a client whose API root is the JSON
    /// API's (`cloud::gce::storage::DEFAULT_BASE`).
    pub fn gcs(bucket: String, prefix: String, cluster: &str, client: GceClient) -> Store {
        Store {
            cluster: cluster.into(),
            place: Place::Gcs {
                bucket,
                prefix,
                client: Box::new(client),
            },
        }
    }

    /// Where the cluster's snapshots are, for messages.
    pub fn place(&self) -> String {
        match &self.place {
            Place::S3 { bucket, prefix, .. } => format!(
                "s3://{bucket}/{}",
                self.key(prefix, "").trim_end_matches('/')
            ),
            Place::Gcs { bucket, prefix, .. } => format!(
                "gs://{bucket}/{}",
                self.key(prefix, "").trim_end_matches('/')
            ),
            Place::Local(dir) => format!("file://{}", dir.join(&self.cluster).display()),
        }
    }

    /// An object's key: `{prefix}/{cluster}/{file}`.
    fn key(&self, prefix: &str, file: &str) -> String {
        if prefix.is_empty() {
            format!("{}/{file}", self.cluster)
        } else {
            format!("{prefix}/{}/{file}", self.cluster)
        }
    }

    /// The cluster's snapshots (other files are ignored).
    pub async fn list(&self) -> Result<Vec<SnapshotName>, String> {
        let files: Vec<String> = match &self.place {
            Place::Local(root) => {
                let dir = root.join(&self.cluster);
                match std::fs::read_dir(&dir) {
                    Ok(entries) => entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
                }
            }
            Place::S3 {
                bucket,
                prefix,
                session,
                region,
            } => {
                let client = session.client().await.map_err(|e| e.to_string())?;
                let under = self.key(prefix, "");
                client
                    .list_objects(region, bucket, &under)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter_map(|o| o.key.strip_prefix(&under).map(str::to_string))
                    .collect()
            }
            Place::Gcs {
                bucket,
                prefix,
                client,
            } => {
                let under = self.key(prefix, "");
                storage::list(client, bucket, &under)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter_map(|o| o.name.strip_prefix(&under).map(str::to_string))
                    .collect()
            }
        };
        Ok(files
            .iter()
            .filter_map(|f| SnapshotName::parse(&self.cluster, f))
            .collect())
    }

    /// Stores `body` as `file`. A directory gets it whole or not at all
    /// (written aside, synced, renamed).
    pub async fn put(&self, file: &str, body: bytes::Bytes) -> Result<(), String> {
        match &self.place {
            Place::Local(root) => {
                let dir = root.join(&self.cluster);
                let path = dir.join(file);
                tokio::task::spawn_blocking(move || write_whole(&dir, &path, &body))
                    .await
                    .map_err(|e| format!("write task: {e}"))?
            }
            Place::S3 {
                bucket,
                prefix,
                session,
                region,
            } => {
                let client = session.client().await.map_err(|e| e.to_string())?;
                client
                    .put_object(region, bucket, &self.key(prefix, file), body)
                    .await
                    .map_err(|e| e.to_string())
            }
            Place::Gcs {
                bucket,
                prefix,
                client,
            } => storage::put(client, bucket, &self.key(prefix, file), body)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn get(&self, file: &str) -> Result<Vec<u8>, String> {
        match &self.place {
            Place::Local(root) => {
                let path = root.join(&self.cluster).join(file);
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
            Place::S3 {
                bucket,
                prefix,
                session,
                region,
            } => {
                let client = session.client().await.map_err(|e| e.to_string())?;
                client
                    .get_object(region, bucket, &self.key(prefix, file))
                    .await
                    .map_err(|e| e.to_string())
            }
            Place::Gcs {
                bucket,
                prefix,
                client,
            } => storage::get(client, bucket, &self.key(prefix, file))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn delete(&self, file: &str) -> Result<(), String> {
        match &self.place {
            Place::Local(root) => {
                let path = root.join(&self.cluster).join(file);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("cannot delete {}: {e}", path.display())),
                }
            }
            Place::S3 {
                bucket,
                prefix,
                session,
                region,
            } => {
                let client = session.client().await.map_err(|e| e.to_string())?;
                client
                    .delete_object(region, bucket, &self.key(prefix, file))
                    .await
                    .map_err(|e| e.to_string())
            }
            Place::Gcs {
                bucket,
                prefix,
                client,
            } => storage::delete(client, bucket, &self.key(prefix, file))
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Writes `body` to `path` through a `.part` file: a reader never sees half
/// a snapshot, and a crash leaves only a `.part` that listings ignore.
fn write_whole(dir: &Path, path: &Path, body: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let part = path.with_extension("db.part");
    let mut f = std::fs::File::create(&part)
        .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    f.write_all(body)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    std::fs::rename(&part, path).map_err(|e| format!("cannot rename {}: {e}", part.display()))?;
    // The rename itself must survive a power cut.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        assert_eq!(
            Target::parse("s3://muster-backups/prod/etcd/"),
            Ok(Target::S3 {
                bucket: "muster-backups".into(),
                prefix: "prod/etcd".into()
            })
        );
        assert_eq!(
            Target::parse("s3://muster-backups"),
            Ok(Target::S3 {
                bucket: "muster-backups".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Target::parse("gs://muster-backups/prod"),
            Ok(Target::Gcs {
                bucket: "muster-backups".into(),
                prefix: "prod".into()
            })
        );
        assert_eq!(
            Target::parse("file:///var/backups/etcd"),
            Ok(Target::Local {
                dir: "/var/backups/etcd".into()
            })
        );
        for (bad, why) in [
            ("s3://Muster_Backups/x", "bucket name"),
            ("gs://bucket/a b", "key prefix"),
            ("s3://ab", "bucket name"),
            ("s3://bucket/a b", "key prefix"),
            ("file://relative/dir", "absolute path"),
            ("file:///var/../etc", "absolute path"),
            ("gs://Bad_Bucket/x", "bucket name"),
            ("/var/backups", "not a backup target"),
        ] {
            let err = Target::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_directory_store_lists_puts_gets_and_deletes() {
        let root = tempfile::tempdir().expect("tempdir");
        let store = Store::local(root.path().to_path_buf(), "prod");
        assert_eq!(store.list().await, Ok(vec![]));
        let name = SnapshotName {
            taken_at: 1_796_520_600,
            revision: 7,
            cluster: "prod".into(),
        };
        store
            .put(&name.file_name(), bytes::Bytes::from_static(b"db"))
            .await
            .expect("put");
        // Another cluster's snapshot and a partial upload are not listed.
        std::fs::write(
            root.path()
                .join("prod")
                .join("stage-20261206T013000Z-r1.db"),
            b"x",
        )
        .expect("write");
        std::fs::write(root.path().join("prod").join("x.db.part"), b"x").expect("write");
        assert_eq!(store.list().await, Ok(vec![name.clone()]));
        assert_eq!(
            store.get(&name.file_name()).await.as_deref(),
            Ok(&b"db"[..])
        );
        assert!(store.place().ends_with("/prod"), "{}", store.place());
        store.delete(&name.file_name()).await.expect("delete");
        store
            .delete(&name.file_name())
            .await
            .expect("deleting twice is fine");
        assert_eq!(store.list().await, Ok(vec![]));
    }
}
