//! etcd backups and restores (docs/design/backup.md).
//!
//! The etcd leader's agent takes a snapshot on a schedule, checks it with
//! `etcdutl snapshot status`, stores it (S3, Cloud Storage or a directory) under a name
//! that carries the cluster, time and revision, and deletes the oldest
//! beyond `keep`. A new group with `etcd.restore` forms its cluster from a
//! snapshot instead of an empty one (the decision is `formation::decide`'s,
//! the restore itself `etcd::runner`'s).
//!
//! Pure parts: `plan` (names, due, prune, choose, gate), `etcdutl`'s
//! argument lists and parses, `store::Target::parse`. Side effects: the
//! stores and the loop in `phase`.

pub mod etcdutl;
pub mod phase;
pub mod plan;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cloud::aws::{API_BACKOFF, AwsError, InstanceSession};
use crate::cloud::gce::{GceClient, GceOptions, storage};
use crate::config::Config;
use crate::metadata::{self, InstanceFacts};
use plan::Wanted;
use store::{Store, Target};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("etcd backup to {target}: {why}")]
    Target { target: String, why: String },
    #[error("etcd backup to {target}: {source}")]
    Aws {
        target: String,
        #[source]
        source: AwsError,
    },
}

/// Backups and restores as configured, with the store opened.
pub struct BackupSetup {
    pub store: Arc<Store>,
    pub schedule: Duration,
    pub keep: u16,
    /// `etcd.restore`, when set.
    pub restore: Option<Wanted>,
    pub etcdutl: PathBuf,
}

/// Opens the store of `topology.etcd.backup`; `None` when no backup is
/// configured. An S3 target signs with the instance's credentials, for the
/// configured region or the instance's.
pub async fn setup(
    config: &Config,
    facts: &InstanceFacts,
    imds: &metadata::Options,
    api_endpoint: Option<&url::Url>,
    etcd_bin: &std::path::Path,
) -> Result<Option<BackupSetup>, BackupError> {
    let etcd = &config.topology.etcd;
    let Some(backup) = &etcd.backup else {
        return Ok(None);
    };
    let fail = |why: String| BackupError::Target {
        target: backup.to.clone(),
        why,
    };
    let target = Target::parse(&backup.to).map_err(fail)?;
    let cluster = &config.cluster.name;
    let store = match target {
        Target::Local { dir } => Store::local(dir, cluster),
        Target::S3 { bucket, prefix } => {
            let region = backup
                .region
                .clone()
                .or_else(|| facts.region.clone())
                .ok_or_else(|| {
                    fail("an S3 target needs a region: set topology.etcd.backup.region (the metadata gives none)".into())
                })?;
            let session = InstanceSession::new(&region, api_endpoint, imds, API_BACKOFF)
                .await
                .map_err(|source| BackupError::Aws {
                    target: backup.to.clone(),
                    source,
                })?;
            Store::s3(bucket, prefix, cluster, session, region)
        }
        Target::Gcs { bucket, prefix } => {
            // The JSON API's root, or `cloud.endpoint` (a test's fake).
            let default = url::Url::parse(storage::DEFAULT_BASE)
                .map_err(|e| fail(format!("{}: {e}", storage::DEFAULT_BASE)))?;
            let api = api_endpoint.unwrap_or(&default);
            let opts = GceOptions::with_endpoints(imds.endpoint.as_ref(), Some(api), API_BACKOFF);
            let client = GceClient::new(opts).map_err(|e| fail(e.to_string()))?;
            Store::gcs(bucket, prefix, cluster, client)
        }
    };
    Ok(Some(BackupSetup {
        store: Arc::new(store),
        schedule: backup.schedule(),
        keep: backup.keep(),
        restore: etcd.restore.as_deref().map(Wanted::from_config),
        etcdutl: etcdutl::beside(etcd_bin),
    }))
}

impl BackupSetup {
    /// What the etcd runner needs to restore, when `etcd.restore` is set.
    pub fn restore_setup(&self) -> Option<crate::etcd::runner::RestoreSetup> {
        self.restore
            .clone()
            .map(|wanted| crate::etcd::runner::RestoreSetup {
                store: Arc::clone(&self.store),
                wanted,
                schedule: self.schedule,
                etcdutl: self.etcdutl.clone(),
            })
    }
}
