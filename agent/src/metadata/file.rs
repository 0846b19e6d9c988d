//! Facts from a local file (tests, static setups): YAML, or JSON when the
//! name ends in `.json`. The keys are those of [`InstanceFacts`]; `provider`
//! is optional (default `file`), and `user_data_file` names a file, relative
//! to the facts file, whose content becomes the user data. Unknown keys are
//! errors: this format is ours, so a typo should not pass silently.
//!
//! ```yaml
//! instance_id: node-1
//! hostname: node-1.lab
//! private_ipv4: 10.0.0.11
//! zone: lab-a
//! group: etcd
//! tags: {role: control-plane}
//! user_data_file: cluster.yaml
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::value::{ipv4, non_empty};
use super::{InstanceFacts, MetadataError, Options, ProviderKind, local};

const P: ProviderKind = ProviderKind::File;

/// The file's content, before `user_data_file` is read.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsFile {
    pub provider: Option<ProviderKind>,
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
    pub private_ipv4: Option<String>,
    pub public_ipv4: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub user_data: Option<String>,
    pub user_data_file: Option<PathBuf>,
}

impl std::fmt::Debug for FactsFile {
    // User data may hold the cluster secret: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactsFile")
            .field("provider", &self.provider)
            .field("instance_id", &self.instance_id)
            .field("hostname", &self.hostname)
            .field("private_ipv4", &self.private_ipv4)
            .field("public_ipv4", &self.public_ipv4)
            .field("region", &self.region)
            .field("zone", &self.zone)
            .field("group", &self.group)
            .field("tags", &self.tags)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|u| format!("<{} bytes>", u.len())),
            )
            .field("user_data_file", &self.user_data_file)
            .finish()
    }
}

/// Parses the file's text; `json` selects JSON, else YAML. Pure.
pub fn parse(text: &str, json: bool, origin: &str) -> Result<FactsFile, MetadataError> {
    let file: FactsFile = if json {
        serde_json::from_str(text).map_err(|e| MetadataError::parse(P, origin, e.to_string()))?
    } else if text.trim().is_empty() {
        FactsFile::default()
    } else {
        // Without the snippet: the file may hold user data inline.
        serde_saphyr::from_str(text)
            .map_err(|e| MetadataError::parse(P, origin, e.without_snippet().to_string()))?
    };
    if file.user_data.is_some() && file.user_data_file.is_some() {
        return Err(MetadataError::parse(
            P,
            origin,
            "give user_data or user_data_file, not both",
        ));
    }
    Ok(file)
}

impl FactsFile {
    /// Builds the facts; `user_data` is the content of `user_data_file`, if any.
    pub fn into_facts(
        self,
        origin: &str,
        user_data: Option<String>,
    ) -> Result<InstanceFacts, MetadataError> {
        let instance_id = non_empty(self.instance_id.as_deref())
            .ok_or_else(|| MetadataError::parse(P, origin, "instance_id is required"))?;
        Ok(InstanceFacts {
            provider: self.provider.unwrap_or(P),
            instance_id,
            hostname: non_empty(self.hostname.as_deref()),
            private_ipv4: ipv4(
                P,
                &format!("{origin}: private_ipv4"),
                self.private_ipv4.as_deref(),
            )?,
            public_ipv4: ipv4(
                P,
                &format!("{origin}: public_ipv4"),
                self.public_ipv4.as_deref(),
            )?,
            region: non_empty(self.region.as_deref()),
            zone: non_empty(self.zone.as_deref()),
            group: non_empty(self.group.as_deref()),
            tags: self.tags,
            user_data: user_data.or(self.user_data).filter(|u| !u.is_empty()),
        })
    }
}

/// Reads `Options::metadata_file` (and its `user_data_file`).
#[tracing::instrument(name = "metadata.file", skip_all, fields(path))]
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    let path = opts
        .metadata_file
        .as_deref()
        .ok_or_else(|| MetadataError::NotConfigured {
            provider: P,
            what: "no facts file given (Options::metadata_file)".into(),
        })?;
    tracing::Span::current().record("path", path.display().to_string());
    let facts = read(path).await?;
    tracing::info!(
        instance_id = %facts.instance_id,
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified from a facts file"
    );
    Ok(facts)
}

async fn read(path: &Path) -> Result<InstanceFacts, MetadataError> {
    let origin = path.display().to_string();
    let bytes = local::read_required(P, path).await?;
    let text = local::utf8(P, &origin, &bytes)?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut file = parse(&text, json, &origin)?;
    let user_data = match file.user_data_file.take() {
        Some(rel) => {
            let full = path.parent().unwrap_or(Path::new(".")).join(rel);
            let bytes = local::read_required(P, &full).await?;
            local::user_data(P, &full.display().to_string(), &bytes)?
        }
        None => None,
    };
    file.into_facts(&origin, user_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_with_defaults() {
        let f = parse("instance_id: a\nprivate_ipv4: 10.0.0.1\n", false, "f.yaml")
            .expect("yaml")
            .into_facts("f.yaml", None)
            .expect("facts");
        assert_eq!(
            (f.provider, f.instance_id.as_str()),
            (ProviderKind::File, "a")
        );
        let f = parse(
            r#"{"provider":"aws","instance_id":"i-1","user_data":"x: 1"}"#,
            true,
            "f.json",
        )
        .expect("json")
        .into_facts("f.json", None)
        .expect("facts");
        assert_eq!(f.provider, ProviderKind::Aws);
        assert_eq!(f.user_data.as_deref(), Some("x: 1"));
    }

    #[test]
    fn typos_and_conflicts_are_errors_without_echoing_secrets() {
        let e = parse(
            "instance_id: a\nuser_data: hunter2\nhostnme: x\n",
            false,
            "f.yaml",
        )
        .expect_err("typo");
        assert!(e.to_string().contains("hostnme"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse(
            "instance_id: a\nuser_data: x\nuser_data_file: u\n",
            false,
            "f.yaml",
        )
        .expect_err("both");
        assert!(e.to_string().contains("not both"), "{e}");
        assert!(
            parse("", false, "f")
                .expect("empty")
                .into_facts("f", None)
                .is_err()
        );
    }
}
