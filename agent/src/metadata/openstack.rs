//! OpenStack config drive: `openstack/latest/meta_data.json` and
//! `openstack/latest/user_data` inside the mounted drive.
//!
//! Mapping: `uuid` → instance id; `hostname` (else `name`) → hostname;
//! `availability_zone` → zone; `meta` (user key/value properties) → tags,
//! and the `muster-group` property, if set, → group (OpenStack has no group
//! membership in its metadata). Addresses are not in `meta_data.json`; they
//! stay unset (DHCP gives them to the OS).
//!
//! Finding the drive: `Options::seed_dir`, else [`super::DEFAULT_SEED_DIRS`].
//! Mounting the `config-2` volume is the image's job, not the agent's.
//!
//! Docs: <https://docs.openstack.org/nova/latest/user/metadata.html>.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::value::non_empty;
use super::{InstanceFacts, MetadataError, Options, ProviderKind, local, nocloud};

const P: ProviderKind = ProviderKind::Openstack;

pub const META_DATA: &str = "openstack/latest/meta_data.json";
pub const USER_DATA: &str = "openstack/latest/user_data";
/// The `meta` property that names the group, since OpenStack has none.
pub const GROUP_PROPERTY: &str = "muster-group";

#[derive(Deserialize)]
struct MetaData {
    uuid: Option<String>,
    hostname: Option<String>,
    name: Option<String>,
    availability_zone: Option<String>,
    #[serde(default)]
    meta: BTreeMap<String, serde_json::Value>,
}

/// Parses `meta_data.json` and the optional `user_data`. Pure.
pub fn parse(meta_data: &[u8], user_data: Option<&[u8]>) -> Result<InstanceFacts, MetadataError> {
    let m: MetaData = serde_json::from_slice(meta_data)
        .map_err(|e| MetadataError::parse(P, META_DATA, e.to_string()))?;
    let instance_id = non_empty(m.uuid.as_deref())
        .ok_or_else(|| MetadataError::parse(P, META_DATA, "no instance id (uuid)"))?;
    // Properties are strings in Nova; other scalars are shown as JSON text.
    let tags: BTreeMap<String, String> = m
        .meta
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(InstanceFacts {
        provider: P,
        instance_id,
        hostname: non_empty(m.hostname.as_deref()).or_else(|| non_empty(m.name.as_deref())),
        private_ipv4: None,
        public_ipv4: None,
        region: None,
        zone: non_empty(m.availability_zone.as_deref()),
        group: non_empty(tags.get(GROUP_PROPERTY).map(String::as_str)),
        tags,
        user_data: user_data
            .map(|b| local::user_data(P, USER_DATA, b))
            .transpose()?
            .flatten(),
    })
}

/// Does `dir` look like a config drive?
pub fn is_config_drive(dir: &Path) -> bool {
    dir.join(META_DATA).is_file()
}

/// Reads and parses the config drive.
#[tracing::instrument(name = "metadata.openstack", skip_all, fields(dir))]
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    let dir = find_dir(opts)?;
    tracing::Span::current().record("dir", dir.display().to_string());
    let meta = local::read_required(P, &dir.join(META_DATA)).await?;
    let user = local::read_optional(P, &dir.join(USER_DATA)).await?;
    let facts = parse(&meta, user.as_deref()).map_err(|e| nocloud::at_dir(e, &dir))?;
    tracing::info!(
        instance_id = %facts.instance_id,
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified from an OpenStack config drive"
    );
    Ok(facts)
}

fn find_dir(opts: &Options) -> Result<PathBuf, MetadataError> {
    let dirs = super::seed_dirs(opts);
    dirs.iter()
        .find(|d| is_config_drive(d))
        .cloned()
        .ok_or_else(|| MetadataError::NotConfigured {
            provider: P,
            what: format!(
                "no config drive with {META_DATA} (looked in {})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_property_and_scalar_meta() {
        let f = parse(
            br#"{"uuid":"u","name":"n","meta":{"muster-group":"g","count":3}}"#,
            Some(b""),
        )
        .expect("parses");
        assert_eq!(f.hostname.as_deref(), Some("n"));
        assert_eq!(f.group.as_deref(), Some("g"));
        assert_eq!(f.tags.get("count").map(String::as_str), Some("3"));
        assert_eq!(f.user_data, None);
        assert!(parse(br#"{"hostname":"h"}"#, None).is_err());
    }
}
