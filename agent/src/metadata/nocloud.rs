//! NoCloud seed directory: `meta-data` (YAML, see [`super::seed`]) and
//! `user-data`, as cloud-init's NoCloud datasource defines them.
//!
//! The directory is `Options::seed_dir`, else the first of
//! [`super::DEFAULT_SEED_DIRS`] that holds a `meta-data` file. Mounting the
//! `cidata` volume is not done here: the image mounts it (by label) before
//! the agent runs.

use std::path::{Path, PathBuf};

use super::{InstanceFacts, MetadataError, Options, ProviderKind, local, seed};

const P: ProviderKind = ProviderKind::Nocloud;

pub const META_DATA: &str = "meta-data";
pub const USER_DATA: &str = "user-data";

/// Parses the two seed files. Pure.
pub fn parse(meta_data: &[u8], user_data: Option<&[u8]>) -> Result<InstanceFacts, MetadataError> {
    let text = local::utf8(P, META_DATA, meta_data)?;
    let meta = seed::parse_meta_data(P, META_DATA, &text)?;
    let user_data = user_data
        .map(|b| local::user_data(P, USER_DATA, b))
        .transpose()?
        .flatten();
    meta.into_facts(P, META_DATA, user_data)
}

/// Does `dir` look like a NoCloud seed?
pub fn is_seed(dir: &Path) -> bool {
    dir.join(META_DATA).is_file()
}

/// Reads and parses the seed.
#[tracing::instrument(name = "metadata.nocloud", skip_all, fields(dir))]
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    let dir = find_dir(opts)?;
    tracing::Span::current().record("dir", dir.display().to_string());
    let meta = local::read_required(P, &dir.join(META_DATA)).await?;
    let user = local::read_optional(P, &dir.join(USER_DATA)).await?;
    let facts = parse(&meta, user.as_deref()).map_err(|e| at_dir(e, &dir))?;
    tracing::info!(
        instance_id = %facts.instance_id,
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified from a NoCloud seed"
    );
    Ok(facts)
}

fn find_dir(opts: &Options) -> Result<PathBuf, MetadataError> {
    let dirs = super::seed_dirs(opts);
    dirs.iter()
        .find(|d| is_seed(d))
        .cloned()
        .ok_or_else(|| MetadataError::NotConfigured {
            provider: P,
            what: format!(
                "no seed directory with a {META_DATA} file (looked in {})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Parse errors name the file inside the seed dir; give them the full path.
pub(crate) fn at_dir(e: MetadataError, dir: &Path) -> MetadataError {
    match e {
        MetadataError::Parse {
            provider,
            origin,
            cause,
        } => MetadataError::Parse {
            provider,
            origin: format!("{}/{origin}", dir.display()),
            cause,
        },
        other => other,
    }
}
