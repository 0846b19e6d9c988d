//! identify — who is this machine?
//!
//! One module per provider. Each provider keeps fetching (HTTP, files) apart
//! from a pure `parse` function that unit tests drive with recorded responses
//! from the provider's public documentation (`tests/fixtures/<provider>/`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::cmdline::KernelCmdline;
use crate::retry::Backoff;

/// The metadata sources Muster understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// AWS EC2 instance metadata (IMDSv2).
    Aws,
    /// Google Compute Engine metadata server.
    Gce,
    /// Azure Instance Metadata Service.
    Azure,
    /// OpenStack config drive (`openstack/latest/meta_data.json`).
    Openstack,
    /// NoCloud seed (`meta-data`, `user-data`).
    Nocloud,
    /// QEMU fw_cfg (`opt/muster/...`) or SMBIOS.
    Qemu,
    /// Bare metal / PXE: `muster.config=URL|PATH` on the kernel command line.
    Metal,
    /// A local YAML/JSON file of facts (tests and static setups).
    File,
}

impl ProviderKind {
    /// The name used on the command line, in `muster.platform=` and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aws => "aws",
            ProviderKind::Gce => "gce",
            ProviderKind::Azure => "azure",
            ProviderKind::Openstack => "openstack",
            ProviderKind::Nocloud => "nocloud",
            ProviderKind::Qemu => "qemu",
            ProviderKind::Metal => "metal",
            ProviderKind::File => "file",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider tells us about this machine. The same shape for every
/// provider; fields a provider cannot know are `None` / empty.
///
/// `user_data` may hold the cluster secret: never log it, and print it only
/// through [`crate::config::redact_user_data`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceFacts {
    pub provider: ProviderKind,
    pub instance_id: String,
    pub hostname: Option<String>,
    pub private_ipv4: Option<Ipv4Addr>,
    pub public_ipv4: Option<Ipv4Addr>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Autoscaling / managed instance group this machine belongs to.
    pub group: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub user_data: Option<String>,
}

impl std::fmt::Debug for InstanceFacts {
    // Hand-written so user data (which may carry the secret) never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceFacts")
            .field("provider", &self.provider)
            .field("instance_id", &self.instance_id)
            .field("hostname", &self.hostname)
            .field("private_ipv4", &self.private_ipv4)
            .field("public_ipv4", &self.public_ipv4)
            .field("region", &self.region)
            .field("zone", &self.zone)
            .field("group", &self.group)
            .field("tags", &self.tags)
            .field("user_data", &self.user_data.as_ref().map(|u| format!("<{} bytes>", u.len())))
            .finish()
    }
}

/// Where and how to look. Defaults are the real locations on a node; tests
/// and static setups override them.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of an HTTP metadata service (AWS, GCE, Azure); `None` means
    /// the provider's well-known address.
    pub endpoint: Option<Url>,
    /// AWS: fall back to IMDSv1 (no token) when the token PUT is refused.
    /// Off by default: IMDSv1 is open to SSRF.
    pub allow_imdsv1: bool,
    /// Retry policy for transient faults (timeouts, 5xx, dropped connections).
    pub backoff: Backoff,
    /// The `file` provider's facts file.
    pub metadata_file: Option<PathBuf>,
    /// The kernel command line (`muster.platform=`, `muster.config=`).
    pub cmdline: KernelCmdline,
    /// Root of the fw_cfg sysfs tree (`/sys/firmware/qemu_fw_cfg`).
    pub fw_cfg_root: PathBuf,
    /// Root of the DMI/SMBIOS sysfs tree (`/sys/class/dmi/id`).
    pub dmi_root: PathBuf,
    /// Where a config drive or NoCloud seed is mounted, if anywhere.
    pub seed_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            endpoint: None,
            allow_imdsv1: false,
            backoff: Backoff::METADATA,
            metadata_file: None,
            cmdline: KernelCmdline::default(),
            fw_cfg_root: PathBuf::from("/sys/firmware/qemu_fw_cfg"),
            dmi_root: PathBuf::from("/sys/class/dmi/id"),
            seed_dir: None,
        }
    }
}
