//! Bare metal and PXE: everything comes from the kernel command line and the
//! machine itself.
//!
//! - User data: `muster.config=URL|PATH` — an `http://`/`https://` URL
//!   (fetched with the shared retrying client; https checks certificates
//!   against the system's trust store) or an absolute/`file://` path.
//! - Instance id: `muster.instance-id=`, else the SMBIOS system UUID
//!   (`<dmi_root>/product_uuid`, stable across reinstalls; known-bogus
//!   firmware values are skipped), else `/etc/machine-id`. The UUID goes
//!   first because on an immutable image `/etc/machine-id` may be recreated
//!   at every boot unless the image persists it.
//! - Hostname: `muster.hostname=`, else `/etc/hostname`.
//! - Private IPv4, in this order:
//!   1. `muster.ip=` (an address, `/prefix` allowed);
//!   2. the IPv4 address of the interface that holds the default IPv4 route
//!      (`<host_root>/proc/net/route`, addresses over rtnetlink): what a
//!      PXE boot with DHCP has. The primary global address wins, an address
//!      that is not a /32 before a /32 (the agent puts the API VIP on that
//!      interface as a /32), never loopback or link-local; see
//!      [`netinfo::choose_ipv4`]. With no default route yet, the agent
//!      waits a few seconds for one ([`netinfo::ROUTE_WAIT`]);
//!   3. else unset, and a node that needs it fails later saying so.
//! - Region, zone, group: `muster.region=`, `muster.zone=`, `muster.group=`.
//!
//! The local reads go through `Options::host_root` and `Options::dmi_root`
//! so tests can point them at a temporary directory; interface addresses
//! are read from the kernel only when `host_root` is `/`, and tests give
//! their own through [`fetch_with`].

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use url::Url;

use super::http::HttpClient;
use super::netinfo::{self, HostNetwork, Lookup, Network};
use super::value::{ipv4, non_empty};
use super::{InstanceFacts, MetadataError, Options, ProviderKind, local};
use crate::cmdline::KernelCmdline;

const P: ProviderKind = ProviderKind::Metal;

/// Where the user data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Url(Url),
    Path(PathBuf),
}

/// What the machine itself says (each value trimmed, `None` if absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalMachine {
    /// Content of `/etc/hostname`.
    pub etc_hostname: Option<String>,
    /// Content of `/etc/machine-id`.
    pub machine_id: Option<String>,
    /// SMBIOS system UUID.
    pub product_uuid: Option<String>,
}

/// Reads `muster.config=` from the command line. Pure.
pub fn config_source(cmdline: &KernelCmdline) -> Result<Option<ConfigSource>, MetadataError> {
    let Some(value) = non_empty(cmdline.get("config")) else {
        return Ok(None);
    };
    let bad = |why: &str| MetadataError::parse(P, "muster.config on the kernel command line", why);
    if value.starts_with("http://") || value.starts_with("https://") {
        let url = Url::parse(&value).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
        return Ok(Some(ConfigSource::Url(url)));
    }
    if value.starts_with("file://") {
        let url = Url::parse(&value).map_err(|e| bad(&format!("not a valid file URL ({e})")))?;
        let path = url
            .to_file_path()
            .map_err(|()| bad("file URL does not name a local path"))?;
        return Ok(Some(ConfigSource::Path(path)));
    }
    if value.starts_with('/') {
        return Ok(Some(ConfigSource::Path(PathBuf::from(value))));
    }
    Err(bad(
        "must be an http:// or https:// URL, a file:// URL or an absolute path",
    ))
}

/// Builds the facts from the command line and the local machine. Pure.
pub fn parse(
    cmdline: &KernelCmdline,
    local: &LocalMachine,
    user_data: Option<String>,
) -> Result<InstanceFacts, MetadataError> {
    let instance_id = non_empty(cmdline.get("instance-id"))
        .or_else(|| non_empty(local.product_uuid.as_deref()).filter(|u| usable_uuid(u)))
        .or_else(|| non_empty(local.machine_id.as_deref()).filter(|m| m != "uninitialized"))
        .ok_or_else(|| {
            MetadataError::parse(
                P,
                "local machine",
                "no instance id: set muster.instance-id=, or give the machine an SMBIOS UUID or /etc/machine-id",
            )
        })?;
    let hostname = non_empty(cmdline.get("hostname"))
        .or_else(|| local.etc_hostname.as_deref().and_then(hostname_file));
    Ok(InstanceFacts {
        provider: P,
        instance_id,
        hostname,
        private_ipv4: ipv4(P, "muster.ip on the kernel command line", cmdline.get("ip"))?,
        public_ipv4: None,
        region: non_empty(cmdline.get("region")),
        zone: non_empty(cmdline.get("zone")),
        group: non_empty(cmdline.get("group")),
        tags: Default::default(),
        user_data,
    })
}

/// Firmware often ships placeholder UUIDs; those would make every machine the same.
fn usable_uuid(uuid: &str) -> bool {
    let hex: String = uuid
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    let placeholder = "03000200040005000006000700080009";
    !hex.is_empty()
        && hex.chars().any(|c| c != '0')
        && hex.chars().any(|c| c != 'f')
        && hex != placeholder
}

/// `/etc/hostname`: the first line that is not a comment (hostname(5)).
fn hostname_file(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

/// Reads the command line's config source and the local machine, then parses.
pub async fn fetch(opts: &Options) -> Result<InstanceFacts, MetadataError> {
    fetch_with(opts, &HostNetwork::new(&opts.host_root)).await
}

/// [`fetch`], with the route table and interface addresses read from `net`.
#[tracing::instrument(name = "metadata.metal", skip_all)]
pub async fn fetch_with<N: Network>(
    opts: &Options,
    net: &N,
) -> Result<InstanceFacts, MetadataError> {
    let user_data = match config_source(&opts.cmdline)? {
        Some(ConfigSource::Url(url)) => Some(fetch_url(opts, &url).await?),
        Some(ConfigSource::Path(path)) => {
            let bytes = local::read_required(P, &path).await?;
            local::user_data(P, &path.display().to_string(), &bytes)?
        }
        None => {
            tracing::warn!("no muster.config= on the kernel command line: no user data");
            None
        }
    };
    let machine = LocalMachine {
        etc_hostname: local::read_value(P, &opts.host_root.join("etc/hostname")).await?,
        machine_id: local::read_value(P, &opts.host_root.join("etc/machine-id")).await?,
        product_uuid: match local::read_value(P, &opts.dmi_root.join("product_uuid")).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring unreadable SMBIOS UUID");
                None
            }
        },
    };
    let mut facts = parse(&opts.cmdline, &machine, user_data)?;
    match facts.private_ipv4 {
        Some(ip) => tracing::info!(
            private_ipv4 = %ip,
            source = "muster.ip",
            "private IPv4 from the kernel command line"
        ),
        // Only read the network when the operator did not say: the lookup
        // may wait a few seconds for a default route.
        None => facts.private_ipv4 = default_route_ipv4(opts, net).await,
    }
    tracing::info!(
        instance_id = %facts.instance_id,
        user_data_bytes = facts.user_data.as_ref().map_or(0, String::len),
        "identified a bare-metal machine"
    );
    Ok(facts)
}

/// The default route's interface address, logging where it came from or
/// why there is none. Never fails: no address is a legal outcome here, and
/// the steps that need one say so.
async fn default_route_ipv4<N: Network>(opts: &Options, net: &N) -> Option<std::net::Ipv4Addr> {
    let hint = "set muster.ip= on the kernel command line";
    match netinfo::default_route_ipv4(net, opts.backoff).await {
        Ok(Lookup::Found { route, address }) => {
            tracing::info!(
                private_ipv4 = %address.address,
                prefix_len = address.prefix_len,
                iface = %route.iface,
                metric = route.metric,
                source = "default route",
                "private IPv4 from the interface of the default IPv4 route"
            );
            Some(address.address)
        }
        Ok(Lookup::NoRouteTable) => {
            tracing::warn!(
                path = %opts.host_root.join("proc/net/route").display(),
                "no private IPv4: no muster.ip= and no route table to read; {hint}"
            );
            None
        }
        Ok(Lookup::NoDefaultRoute) => {
            tracing::warn!(
                waited_s = netinfo::route_wait(opts.backoff).total.as_secs_f64(),
                "no private IPv4: no muster.ip= and no default IPv4 route; {hint}"
            );
            None
        }
        Ok(Lookup::NoUsableAddress { route, seen }) => {
            tracing::warn!(
                iface = %route.iface,
                addresses = ?seen,
                "no private IPv4: the default route's interface has no global IPv4 \
                 address (loopback and link-local 169.254/16 never count); {hint}"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "no private IPv4: cannot read the default route's address; {hint}");
            None
        }
    }
}

async fn fetch_url(opts: &Options, url: &Url) -> Result<String, MetadataError> {
    let client = HttpClient::new(P, opts)?;
    let reply = client.send(Method::GET, url, &[]).await?;
    if reply.status != StatusCode::OK {
        return Err(MetadataError::Http {
            provider: P,
            url: url.to_string(),
            cause: format!("HTTP {}", reply.status),
        });
    }
    local::user_data(P, url.as_str(), &reply.body)?.ok_or_else(|| MetadataError::Http {
        provider: P,
        url: url.to_string(),
        cause: "empty config".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sources() {
        let c = |s: &str| config_source(&KernelCmdline::parse(s));
        assert_eq!(c("").expect("ok"), None);
        assert!(matches!(
            c("muster.config=https://10.0.0.1/c.yaml").expect("ok"),
            Some(ConfigSource::Url(_))
        ));
        assert_eq!(
            c("muster.config=file:///boot/c.yaml").expect("ok"),
            Some(ConfigSource::Path("/boot/c.yaml".into()))
        );
        assert_eq!(
            c("muster.config=/boot/c.yaml").expect("ok"),
            Some(ConfigSource::Path("/boot/c.yaml".into()))
        );
        assert!(c("muster.config=tftp://x/c").is_err());
        assert!(c("muster.config=relative.yaml").is_err());
    }

    #[test]
    fn instance_id_order_and_bogus_uuids() {
        let cmd = KernelCmdline::parse("");
        let mut m = LocalMachine {
            machine_id: Some("0123abcd".into()),
            product_uuid: Some("03000200-0400-0500-0006-000700080009".into()),
            etc_hostname: Some("# comment\nnode-7\n".into()),
        };
        let f = parse(&cmd, &m, None).expect("parses");
        assert_eq!(f.instance_id, "0123abcd", "placeholder UUID skipped");
        assert_eq!(f.hostname.as_deref(), Some("node-7"));
        m.product_uuid = Some("6d2b7f1c-1111-2222-3333-444455556666".into());
        assert_eq!(
            parse(&cmd, &m, None).expect("parses").instance_id,
            "6d2b7f1c-1111-2222-3333-444455556666"
        );
        let cmd = KernelCmdline::parse(
            "muster.instance-id=pxe-9 muster.hostname=h muster.ip=10.9.0.9/16",
        );
        let f = parse(&cmd, &m, None).expect("parses");
        assert_eq!(
            (f.instance_id.as_str(), f.hostname.as_deref()),
            ("pxe-9", Some("h"))
        );
        assert_eq!(f.private_ipv4, Some(std::net::Ipv4Addr::new(10, 9, 0, 9)));
        let none = LocalMachine {
            machine_id: Some("uninitialized".into()),
            product_uuid: Some("00000000-0000-0000-0000-000000000000".into()),
            ..LocalMachine::default()
        };
        assert!(parse(&KernelCmdline::parse(""), &none, None).is_err());
    }
}
