//! The machine's hostname, from its metadata: Kubernetes components name
//! themselves after it (leader leases now, node names once kubelets run),
//! and an image boots without one (`localhost`). Set through
//! systemd-hostnamed over D-Bus, as the image's agent unit has
//! `ProtectHostname=yes` (its own hostname changes would stay private).

use tracing::{info, warn};

#[zbus::proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1"
)]
trait Hostname {
    fn set_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn hostname(&self) -> zbus::Result<String>;
}

/// The hostname to give the machine: the metadata's, lower case, when it
/// is a valid host name (at most 64 characters, DNS labels); else `None`.
pub fn from_metadata(hostname: Option<&str>) -> Option<String> {
    let name = hostname?.trim().to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (name.len() <= 64 && name.split('.').all(label_ok)).then_some(name)
}

/// Sets the transient hostname through systemd-hostnamed unless it is
/// already `name`. A failure is logged: the cluster still forms, only
/// names in Kubernetes read `localhost`.
pub async fn ensure(name: &str) {
    let result = async {
        let conn = zbus::Connection::system().await?;
        let proxy = HostnameProxy::new(&conn).await?;
        if proxy.hostname().await? == name {
            return Ok(false);
        }
        proxy.set_hostname(name, false).await?;
        Ok::<_, zbus::Error>(true)
    }
    .await;
    match result {
        Ok(true) => info!(
            hostname = name,
            "set the machine's hostname from its metadata"
        ),
        Ok(false) => {}
        Err(e) => warn!(
            hostname = name,
            "cannot set the machine's hostname through systemd-hostnamed: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_hostnames_are_checked_and_lower_cased() {
        assert_eq!(from_metadata(Some("node-1")).as_deref(), Some("node-1"));
        assert_eq!(
            from_metadata(Some("IP-10-0-0-11.eu-west-1.compute.internal")).as_deref(),
            Some("ip-10-0-0-11.eu-west-1.compute.internal")
        );
        for bad in ["", "a..b", "-a", "a_b", &"x".repeat(65)] {
            assert_eq!(from_metadata(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(from_metadata(None), None);
    }
}
