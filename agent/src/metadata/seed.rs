//! The NoCloud-style `meta-data` document (YAML), shared by the `nocloud`
//! seed directory and the `qemu` fw_cfg provider.
//!
//! cloud-init's keys are understood (`instance-id`, `local-hostname`, and
//! `hostname` as in its docs' example); Muster adds optional keys for the
//! facts NoCloud has no name for: `private-ipv4` (alias `local-ipv4`),
//! `public-ipv4`, `region`, `zone` (alias `availability-zone`), `group` and
//! `tags` (a map). Other keys (`network-interfaces`, ...) are ignored, so a
//! seed written for cloud-init works unchanged.
//!
//! Docs: <https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html>.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::value::{ipv4, non_empty};
use super::{InstanceFacts, MetadataError, ProviderKind};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetaData {
    pub instance_id: Option<String>,
    pub local_hostname: Option<String>,
    pub hostname: Option<String>,
    #[serde(alias = "local-ipv4")]
    pub private_ipv4: Option<String>,
    pub public_ipv4: Option<String>,
    pub region: Option<String>,
    #[serde(alias = "availability-zone")]
    pub zone: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Parses a `meta-data` document. Empty text is an empty document.
pub fn parse_meta_data(
    provider: ProviderKind,
    origin: &str,
    text: &str,
) -> Result<MetaData, MetadataError> {
    if text.trim().is_empty() {
        return Ok(MetaData::default());
    }
    // Without the snippet: the message must not quote the file's content.
    serde_saphyr::from_str(text)
        .map_err(|e| MetadataError::parse(provider, origin, e.without_snippet().to_string()))
}

impl MetaData {
    /// Builds the facts; `instance-id` is the one required key.
    pub fn into_facts(
        self,
        provider: ProviderKind,
        origin: &str,
        user_data: Option<String>,
    ) -> Result<InstanceFacts, MetadataError> {
        let instance_id = non_empty(self.instance_id.as_deref())
            .ok_or_else(|| MetadataError::parse(provider, origin, "no instance-id"))?;
        Ok(InstanceFacts {
            provider,
            instance_id,
            hostname: non_empty(self.local_hostname.as_deref())
                .or_else(|| non_empty(self.hostname.as_deref())),
            private_ipv4: ipv4(
                provider,
                &format!("{origin}: private-ipv4"),
                self.private_ipv4.as_deref(),
            )?,
            public_ipv4: ipv4(
                provider,
                &format!("{origin}: public-ipv4"),
                self.public_ipv4.as_deref(),
            )?,
            region: non_empty(self.region.as_deref()),
            zone: non_empty(self.zone.as_deref()),
            group: non_empty(self.group.as_deref()),
            tags: self.tags,
            user_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProviderKind = ProviderKind::Nocloud;

    #[test]
    fn cloud_init_keys_and_muster_extensions() {
        let m = parse_meta_data(
            P,
            "meta-data",
            "instance-id: 12345\nlocal-ipv4: 10.0.0.7\navailability-zone: lab-a\ntags: {role: etcd, n: 3}\n",
        )
        .expect("parses");
        let f = m.into_facts(P, "meta-data", None).expect("facts");
        assert_eq!(f.instance_id, "12345");
        assert_eq!(f.private_ipv4, Some(std::net::Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(f.zone.as_deref(), Some("lab-a"));
        assert_eq!(f.tags.get("n").map(String::as_str), Some("3"));
    }

    #[test]
    fn errors_do_not_quote_the_file() {
        let e = parse_meta_data(P, "meta-data", "instance-id: [secret-value]\n")
            .expect_err("not a string");
        assert!(!e.to_string().contains("secret-value"), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse_meta_data(P, "meta-data", "")
            .expect("empty is fine")
            .into_facts(P, "meta-data", None);
        assert!(e.expect_err("no id").to_string().contains("no instance-id"));
    }
}
