//! Which provider is this? The order and the reasons are in the module docs
//! of `metadata` (mod.rs); this file implements exactly that order.

use clap::ValueEnum as _;
use url::Url;

use super::http::HttpClient;
use super::{
    MetadataError, Options, ProviderKind, aws, azure, gce, nocloud, openstack, qemu, seed_dirs,
};
use crate::retry;

/// The link-local address all three clouds serve metadata on.
const CLOUD_ENDPOINT: &str = "http://169.254.169.254/";

/// Reads `muster.platform=`: a provider name, case-insensitive.
pub fn parse_platform(value: &str) -> Result<ProviderKind, MetadataError> {
    ProviderKind::from_str(value.trim(), true).map_err(|_| MetadataError::UnknownPlatform {
        value: value.to_string(),
    })
}

/// Finds the provider; see the module docs for the order.
#[tracing::instrument(name = "metadata.detect", skip_all)]
pub async fn detect(opts: &Options) -> Result<ProviderKind, MetadataError> {
    if let Some(value) = opts.cmdline.get("platform") {
        let kind = parse_platform(value)?;
        tracing::info!(provider = %kind, "provider set by muster.platform=");
        return Ok(kind);
    }
    let mut tried = vec!["muster.platform= on the kernel command line (not set)".to_string()];
    if let Some(kind) = detect_local(opts, &mut tried) {
        tracing::info!(provider = %kind, "provider detected locally");
        return Ok(kind);
    }
    let kind = detect_network(opts, tried).await?;
    tracing::info!(provider = %kind, "provider detected over the network");
    Ok(kind)
}

/// Steps 2–6: local checks only. Appends what it looked at to `tried`.
fn detect_local(opts: &Options, tried: &mut Vec<String>) -> Option<ProviderKind> {
    if opts.metadata_file.is_some() {
        return Some(ProviderKind::File);
    }
    tried.push("a facts file (none given)".into());

    let fw_cfg = opts.fw_cfg_root.join(qemu::FW_CFG_DIR);
    if qemu::has_fw_cfg(&opts.fw_cfg_root) {
        return Some(ProviderKind::Qemu);
    }
    tried.push(format!("QEMU fw_cfg {} (absent)", fw_cfg.display()));

    for dir in seed_dirs(opts) {
        if openstack::is_config_drive(&dir) {
            return Some(ProviderKind::Openstack);
        }
        if nocloud::is_seed(&dir) {
            return Some(ProviderKind::Nocloud);
        }
        tried.push(format!(
            "a config drive or NoCloud seed in {} (absent)",
            dir.display()
        ));
    }

    // A small sysfs file; reading it synchronously is fine this once.
    let serial_path = opts.dmi_root.join("product_serial");
    let serial = std::fs::read_to_string(&serial_path).unwrap_or_default();
    if qemu::serial_has_seed(&serial) {
        return Some(ProviderKind::Qemu);
    }
    tried.push(format!(
        "a seed in the SMBIOS serial {} (none)",
        serial_path.display()
    ));

    if opts.cmdline.get("config").is_some() {
        return Some(ProviderKind::Metal);
    }
    tried.push("muster.config= on the kernel command line (not set)".into());
    None
}

/// Step 7: probe AWS, GCE and Azure at once, in rounds, within the backoff budget.
async fn detect_network(
    opts: &Options,
    mut tried: Vec<String>,
) -> Result<ProviderKind, MetadataError> {
    let base = match &opts.endpoint {
        Some(url) => url.clone(),
        None => Url::parse(CLOUD_ENDPOINT).map_err(|e| MetadataError::NotConfigured {
            provider: ProviderKind::Aws,
            what: format!("bad built-in endpoint: {e}"),
        })?,
    };
    // Probes report their own causes; the client's provider label is unused.
    let client = HttpClient::new(ProviderKind::Aws, opts)?;
    let outcome = retry::retry(
        opts.backoff,
        |_: &[String; 3]| true,
        |round| {
            let (client, base) = (&client, &base);
            async move {
                let (a, g, z) = tokio::join!(
                    aws::probe(client, base, opts),
                    gce::probe(client, base, opts),
                    azure::probe(client, base, opts),
                );
                tracing::debug!(round, aws = ?a, gce = ?g, azure = ?z, "metadata probes");
                match (a, g, z) {
                    (Ok(()), _, _) => Ok(ProviderKind::Aws),
                    (_, Ok(()), _) => Ok(ProviderKind::Gce),
                    (_, _, Ok(())) => Ok(ProviderKind::Azure),
                    (Err(a), Err(g), Err(z)) => Err([a, g, z]),
                }
            }
        },
    )
    .await;
    outcome.map_err(|gave_up| {
        let [a, g, z] = gave_up.last;
        tried.push(format!("AWS IMDS at {base} ({a})"));
        tried.push(format!("GCE metadata at {base} ({g})"));
        tried.push(format!("Azure IMDS at {base} ({z})"));
        MetadataError::NotDetected {
            tried,
            elapsed: gave_up.elapsed,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names() {
        assert_eq!(parse_platform("aws").expect("ok"), ProviderKind::Aws);
        assert_eq!(parse_platform(" QEMU ").expect("ok"), ProviderKind::Qemu);
        let e = parse_platform("ec2").expect_err("unknown");
        assert!(e.to_string().contains("\"ec2\""), "{e}");
    }

    #[test]
    fn local_order_file_beats_fw_cfg_beats_seed_beats_metal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mut opts = Options {
            fw_cfg_root: root.join("fw_cfg"),
            dmi_root: root.join("dmi"),
            seed_dir: Some(root.join("seed")),
            cmdline: crate::cmdline::KernelCmdline::parse("muster.config=/c.yaml"),
            metadata_file: Some(root.join("facts.yaml")),
            ..Options::default()
        };
        std::fs::create_dir_all(root.join("fw_cfg").join(qemu::FW_CFG_DIR)).expect("mkdir");
        std::fs::create_dir_all(root.join("seed/openstack/latest")).expect("mkdir");
        std::fs::write(root.join("seed/openstack/latest/meta_data.json"), "{}").expect("write");
        std::fs::write(root.join("seed/meta-data"), "").expect("write");
        let mut tried = Vec::new();
        assert_eq!(detect_local(&opts, &mut tried), Some(ProviderKind::File));
        opts.metadata_file = None;
        assert_eq!(detect_local(&opts, &mut tried), Some(ProviderKind::Qemu));
        std::fs::remove_dir_all(root.join("fw_cfg")).expect("rm");
        assert_eq!(
            detect_local(&opts, &mut tried),
            Some(ProviderKind::Openstack)
        );
        std::fs::remove_dir_all(root.join("seed/openstack")).expect("rm");
        assert_eq!(detect_local(&opts, &mut tried), Some(ProviderKind::Nocloud));
        std::fs::remove_file(root.join("seed/meta-data")).expect("rm");
        assert_eq!(detect_local(&opts, &mut tried), Some(ProviderKind::Metal));
        opts.cmdline = Default::default();
        tried.clear();
        assert_eq!(detect_local(&opts, &mut tried), None);
        assert_eq!(tried.len(), 5, "{tried:?}");
    }
}
