//! identify — who is this machine?
//!
//! One module per provider. Each provider keeps fetching (HTTP, files) apart
//! from a pure `parse` function that unit tests drive with recorded responses
//! from the provider's public documentation (`tests/fixtures/metadata/<provider>/`).
//!
//! Entry points: [`identify`] (detect if needed, then fetch) and [`detect`].
//! All HTTP providers share one retrying client (`http`): per-request
//! timeout, capped backoff on timeouts, dropped connections and 5xx, and a
//! final error naming the provider, the URL and the last cause.
//!
//! # Detection order
//!
//! [`detect`] stops at the first match:
//!
//! 1. `muster.platform=` on the kernel command line — the operator's word wins.
//! 2. `file`, when `Options::metadata_file` is set — an explicit flag.
//! 3. `qemu`, when `<fw_cfg_root>/by_name/opt/muster` exists — local, instant,
//!    and only our lab creates it.
//! 4. `openstack`, when a seed dir holds `openstack/latest/meta_data.json`;
//!    then `nocloud`, when it holds `meta-data` (the more specific layout
//!    is checked first).
//! 5. `qemu`, when the SMBIOS serial carries a `ds=nocloud;…`/`muster;…` seed.
//! 6. `metal`, when `muster.config=` is on the kernel command line: PXE boots
//!    set it, and checking before the network means bare metal never waits
//!    on link-local probes.
//! 7. The network: AWS (token PUT answers 200), GCE (the answer carries
//!    `Metadata-Flavor: Google`), Azure (`/metadata/instance` answers with a
//!    `compute` object). The three probes run at once with a short timeout
//!    (`Options::probe_timeout`); if several answer, that order decides.
//!    All three use 169.254.169.254, which may not be reachable yet this
//!    early in boot, so rounds repeat with `Options::backoff` until its
//!    budget is spent, then [`MetadataError::NotDetected`] lists every check.
//!
//! Local checks come first because they cost nothing and cannot hang; the
//! network is last because on bare metal or QEMU nothing answers there.
//!
//! Mounting a config drive or NoCloud volume is out of scope here: the image
//! mounts it (by label `config-2` / `cidata`) at one of
//! [`DEFAULT_SEED_DIRS`], or the caller passes `Options::seed_dir`.

mod detect;
mod error;
mod http;
mod local;
mod value;

pub mod aws;
pub mod azure;
pub mod file;
pub mod gce;
pub mod metal;
pub mod netinfo;
pub mod nocloud;
pub mod openstack;
pub mod qemu;
pub mod seed;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::cmdline::KernelCmdline;
use crate::retry::Backoff;

pub use detect::{detect, parse_platform};
pub use error::MetadataError;
pub use http::{MAX_BODY, install_crypto_provider};

/// Where an image mounts a config drive or NoCloud seed, in the order we look.
pub const DEFAULT_SEED_DIRS: &[&str] = &["/run/muster/seed"];

/// The metadata sources Muster understands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
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
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|u| format!("<{} bytes>", u.len())),
            )
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
    /// Where a config drive or NoCloud seed is mounted, if anywhere
    /// (`None`: look in [`DEFAULT_SEED_DIRS`]).
    pub seed_dir: Option<PathBuf>,
    /// Longest a single HTTP request may take before it counts as a timeout.
    pub request_timeout: Duration,
    /// Longest a detection probe may take (shorter: most probes find nothing).
    pub probe_timeout: Duration,
    /// Root for the local machine's files (`etc/hostname`, `etc/machine-id`).
    pub host_root: PathBuf,
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
            request_timeout: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
            host_root: PathBuf::from("/"),
        }
    }
}

/// The seed directories to look in: `Options::seed_dir`, else the defaults.
pub(crate) fn seed_dirs(opts: &Options) -> Vec<PathBuf> {
    match &opts.seed_dir {
        Some(dir) => vec![dir.clone()],
        None => DEFAULT_SEED_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// Identifies this machine: detects the provider unless `kind` is given,
/// then fetches and parses its facts.
#[tracing::instrument(name = "metadata.identify", skip_all, fields(provider))]
pub async fn identify(
    kind: Option<ProviderKind>,
    opts: &Options,
) -> Result<InstanceFacts, MetadataError> {
    let kind = match kind {
        Some(kind) => kind,
        None => detect(opts).await?,
    };
    tracing::Span::current().record("provider", kind.as_str());
    match kind {
        ProviderKind::Aws => aws::fetch(opts).await,
        ProviderKind::Gce => gce::fetch(opts).await,
        ProviderKind::Azure => azure::fetch(opts).await,
        ProviderKind::Openstack => openstack::fetch(opts).await,
        ProviderKind::Nocloud => nocloud::fetch(opts).await,
        ProviderKind::Qemu => qemu::fetch(opts).await,
        ProviderKind::Metal => metal::fetch(opts).await,
        ProviderKind::File => file::fetch(opts).await,
    }
}
