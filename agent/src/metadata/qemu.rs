//! QEMU: fw_cfg entries, with SMBIOS as a fallback.
//!
//! Layout (Linux exposes each fw_cfg entry as `by_name/<name>/raw` once the
//! `qemu_fw_cfg` driver is loaded; the names follow cloud-init's QemuFwCfg
//! datasource, under our own `opt/muster/` prefix):
//!
//! | fw_cfg name              | content                                           |
//! |--------------------------|---------------------------------------------------|
//! | `opt/muster/meta-data`   | YAML, the NoCloud keys plus Muster's (see [`super::seed`]) |
//! | `opt/muster/user-data`   | the user data (cluster config), as is             |
//! | `opt/muster/instance-id` | optional, overrides `instance-id` of meta-data    |
//! | `opt/muster/hostname`    | optional, overrides the hostname of meta-data     |
//!
//! The lab passes e.g. `-fw_cfg name=opt/muster/meta-data,file=meta.yaml
//! -fw_cfg name=opt/muster/user-data,file=cluster.yaml`, or
//! `-fw_cfg name=opt/muster/instance-id,string=node-1` for one value.
//!
//! SMBIOS fallback, for VMs started without fw_cfg entries: the system serial
//! (`-smbios type=1,serial=ds=nocloud;i=node-1;h=node-1`, cloud-init's
//! format; keys `i`/`instance-id`, `h`/`local-hostname`/`hostname`,
//! `ip`/`private-ipv4`), and the SMBIOS UUID (`-uuid`) as the last resort for
//! the instance id. SMBIOS carries no user data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::value::{ipv4, non_empty};
use super::{InstanceFacts, MetadataError, Options, ProviderKind, local, seed};

const P: ProviderKind = ProviderKind::Qemu;

/// Our fw_cfg directory, relative to the fw_cfg sysfs root.
pub const FW_CFG_DIR: &str = "by_name/opt/muster";
pub const META_DATA: &str = "meta-data";
pub const USER_DATA: &str = "user-data";
pub const INSTANCE_ID: &str = "instance-id";
pub const HOSTNAME: &str = "hostname";

/// The raw fw_cfg entries, `None` where absent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FwCfg {
    pub meta_data: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub instance_id: Option<Vec<u8>>,
    pub hostname: Option<Vec<u8>>,
}

impl std::fmt::Debug for FwCfg {
    // User data may hold the cluster secret: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FwCfg")
            .field(
                "meta_data",
                &self
                    .meta_data
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(m).into_owned()),
            )
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|u| format!("<{} bytes>", u.len())),
            )
            .field(
                "instance_id",
                &self
                    .instance_id
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(m).into_owned()),
            )
            .field(
                "hostname",
                &self
                    .hostname
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(m).into_owned()),
            )
            .finish()
    }
}

/// The SMBIOS values we read (`/sys/class/dmi/id/product_{uuid,serial}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smbios {
    pub product_uuid: Option<String>,
    pub product_serial: Option<String>,
}

/// Builds the facts from fw_cfg entries and SMBIOS values. Pure.
pub fn parse(fw: &FwCfg, smbios: &Smbios) -> Result<InstanceFacts, MetadataError> {
    let mut meta = match &fw.meta_data {
        Some(bytes) => seed::parse_meta_data(P, META_DATA, &local::utf8(P, META_DATA, bytes)?)?,
        None => seed::MetaData::default(),
    };
    if let Some(id) = &fw.instance_id {
        meta.instance_id = Some(local::utf8(P, INSTANCE_ID, id)?);
    }
    if let Some(host) = &fw.hostname {
        meta.local_hostname = Some(local::utf8(P, HOSTNAME, host)?);
    }
    let serial = smbios
        .product_serial
        .as_deref()
        .map(parse_serial)
        .unwrap_or_default();
    let pick = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| non_empty(serial.get(*k).map(String::as_str)))
    };
    if non_empty(meta.instance_id.as_deref()).is_none() {
        meta.instance_id =
            pick(&["i", "instance-id"]).or_else(|| non_empty(smbios.product_uuid.as_deref()));
    }
    if non_empty(meta.local_hostname.as_deref()).is_none()
        && non_empty(meta.hostname.as_deref()).is_none()
    {
        meta.local_hostname = pick(&["h", "local-hostname", "hostname"]);
    }
    if meta.private_ipv4.is_none() {
        meta.private_ipv4 = pick(&["ip", "private-ipv4"]);
        ipv4(P, "SMBIOS serial: ip", meta.private_ipv4.as_deref())?;
    }
    let user_data = fw
        .user_data
        .as_deref()
        .map(|b| local::user_data(P, USER_DATA, b))
        .transpose()?
        .flatten();
    meta.into_facts(P, "fw_cfg opt/muster", user_data)
}

/// Parses an SMBIOS serial of the form `[ds=nocloud|muster;]key=value;key=value`.
pub fn parse_serial(serial: &str) -> BTreeMap<String, String> {
    serial
        .trim()
        .split(';')
        .filter_map(|part| part.split_once('='))
        .filter(|(k, _)| *k != "ds")
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Does the serial carry our (or cloud-init's NoCloud) key/value format?
pub fn serial_has_seed(serial: &str) -> bool {
    let s = serial.trim();
    (s.starts_with("ds=nocloud") || s.starts_with("muster;")) && !parse_serial(s).is_empty()
}

/// Is our fw_cfg directory present?
pub fn has_fw_cfg(fw_cfg_root: &Path) -> bool {
    fw_cfg_root.join(FW_CFG_DIR).is_dir()
}

/// Reads fw_cfg and SMBIOS and parses them.
#[tracing::instrument(name = "metadata.qemu", skip_all, fields(fw_cfg))]
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    let dir = opts.fw_cfg_root.join(FW_CFG_DIR);
    tracing::Span::current().record("fw_cfg", dir.display().to_string());
    let entry = |name: &str| -> PathBuf { dir.join(name).join("raw") };
    let fw = FwCfg {
        meta_data: local::read_optional(P, &entry(META_DATA)).await?,
        user_data: local::read_optional(P, &entry(USER_DATA)).await?,
        instance_id: local::read_optional(P, &entry(INSTANCE_ID)).await?,
        hostname: local::read_optional(P, &entry(HOSTNAME)).await?,
    };
    let smbios = Smbios {
        product_uuid: dmi(&opts.dmi_root.join("product_uuid")).await,
        product_serial: dmi(&opts.dmi_root.join("product_serial")).await,
    };
    let has_seed = smbios
        .product_serial
        .as_deref()
        .is_some_and(serial_has_seed);
    if !has_fw_cfg(&opts.fw_cfg_root) && !has_seed {
        return Err(MetadataError::NotConfigured {
            provider: P,
            what: format!(
                "neither {} nor a seed in the SMBIOS serial ({}/product_serial) is present; \
                 is the qemu_fw_cfg driver loaded?",
                dir.display(),
                opts.dmi_root.display()
            ),
        });
    }
    let facts = parse(&fw, &smbios)?;
    tracing::info!(
        instance_id = %facts.instance_id,
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified from QEMU fw_cfg/SMBIOS"
    );
    Ok(facts)
}

/// A DMI value; unreadable (they are root-only) counts as absent, with a note.
async fn dmi(path: &Path) -> Option<String> {
    match local::read_value(P, path).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "ignoring unreadable DMI value");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_formats() {
        let s = parse_serial("ds=nocloud;i=node-1;h=host-1");
        assert_eq!(s.get("i").map(String::as_str), Some("node-1"));
        assert_eq!(s.get("h").map(String::as_str), Some("host-1"));
        assert!(!s.contains_key("ds"));
        assert!(serial_has_seed("muster;i=a"));
        assert!(!serial_has_seed("Not Specified"));
        assert!(!serial_has_seed("ds=nocloud"));
    }

    #[test]
    fn overrides_and_fallbacks() {
        let fw = FwCfg {
            meta_data: Some(b"instance-id: from-meta\nhostname: meta-host\n".to_vec()),
            instance_id: Some(b"from-entry\n".to_vec()),
            ..FwCfg::default()
        };
        let f = parse(&fw, &Smbios::default()).expect("parses");
        assert_eq!(f.instance_id, "from-entry");
        assert_eq!(f.hostname.as_deref(), Some("meta-host"));

        let smbios = Smbios {
            product_uuid: Some("4c4c4544-0000".into()),
            product_serial: Some("ds=nocloud;h=vm1;ip=10.0.2.15".into()),
        };
        let f = parse(&FwCfg::default(), &smbios).expect("parses");
        assert_eq!(f.instance_id, "4c4c4544-0000");
        assert_eq!(f.hostname.as_deref(), Some("vm1"));
        assert_eq!(f.private_ipv4, Some(std::net::Ipv4Addr::new(10, 0, 2, 15)));
        assert!(parse(&FwCfg::default(), &Smbios::default()).is_err());
    }
}
