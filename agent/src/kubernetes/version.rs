//! Which Kubernetes runs, and everything that depends on its version, in
//! one place: the supported range and the rendering differences between
//! releases (flags and config API versions).

use std::fmt;
use std::path::Path;

/// A Kubernetes release, `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// The oldest and newest minor releases the renderers are written for:
/// 1.28 (the release the tests run) up to the current one. Outside it,
/// flags and config APIs may differ in ways not handled here.
pub const OLDEST_MINOR: u32 = 28;
pub const NEWEST_MINOR: u32 = 35;

impl KubeVersion {
    /// Parses `1.28.7`, `v1.28.7`, or what `kube-apiserver --version`
    /// prints (`Kubernetes v1.28.7`); a pre-release or build suffix
    /// (`-rc.1`, `+k3s1`) is ignored.
    pub fn parse(text: &str) -> Option<KubeVersion> {
        let word = text.split_whitespace().last()?;
        let core = word.trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let v = KubeVersion {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(v)
    }

    /// Whether Muster's renderers know this release.
    pub fn supported(&self) -> bool {
        self.major == 1 && (OLDEST_MINOR..=NEWEST_MINOR).contains(&self.minor)
    }

    /// Same major and minor: patch releases are interchangeable.
    pub fn same_minor(&self, other: &KubeVersion) -> bool {
        self.major == other.major && self.minor == other.minor
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The Kubernetes the node can run: from the image's manifest
/// (`/usr/lib/muster/kubernetes.json`) when it names one, else by asking
/// `kube-apiserver --version` in `bin_dir` (tier-1 tests, hand-made
/// hosts). `None`: no Kubernetes binaries here.
pub async fn detect(image_version: Option<&str>, bin_dir: &Path) -> Option<KubeVersion> {
    if let Some(v) = image_version.and_then(KubeVersion::parse) {
        return Some(v);
    }
    let out = tokio::process::Command::new(bin_dir.join("kube-apiserver"))
        .arg("--version")
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| KubeVersion::parse(String::from_utf8_lossy(&out.stdout).trim()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_and_binaries_write() {
        let v = KubeVersion {
            major: 1,
            minor: 28,
            patch: 7,
        };
        for text in [
            "1.28.7",
            "v1.28.7",
            "Kubernetes v1.28.7",
            "v1.28.7-rc.1",
            "1.28.7+k3s1",
        ] {
            assert_eq!(KubeVersion::parse(text), Some(v), "{text}");
        }
        for bad in ["", "1.28", "1.28.7.1", "v1.x.7", "latest"] {
            assert_eq!(KubeVersion::parse(bad), None, "{bad}");
        }
        assert_eq!(v.to_string(), "v1.28.7");
    }

    #[test]
    fn the_supported_range_is_1_28_to_the_newest() {
        let v = |minor| KubeVersion {
            major: 1,
            minor,
            patch: 0,
        };
        assert!(!v(27).supported());
        assert!(v(28).supported());
        assert!(v(NEWEST_MINOR).supported());
        assert!(!v(NEWEST_MINOR + 1).supported());
        assert!(v(28).same_minor(&KubeVersion { patch: 9, ..v(28) }));
    }
}
