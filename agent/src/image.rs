//! Facts about the node image this agent runs from.
//!
//! On the Muster image `/usr` is a read-only erofs opened through dm-verity
//! (`/dev/mapper/usr`, set up by systemd-veritysetup from `usrhash=` on the
//! kernel command line), `/usr/lib/os-release` names the image
//! (`IMAGE_ID=`, `IMAGE_VERSION=`) and `/usr/lib/muster/kubernetes.json`
//! says which Kubernetes it carries. The agent logs these facts once at
//! start and reports them in `muster status`, so an operator (or a test
//! reading the serial console) sees what booted.
//!
//! Each source has a pure parser tested on recorded text; [`read`] is the
//! thin I/O around them. A file that is missing is not an error (a
//! development machine is not the image): the facts say what is there.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The device-mapper UUID prefix of a device that systemd-veritysetup (via
/// libcryptsetup) opened: `CRYPT-VERITY-<uuid>-<name>`.
pub const VERITY_UUID_PREFIX: &str = "CRYPT-VERITY-";

/// Where the facts come from; tests point these at fixtures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePaths {
    pub mountinfo: PathBuf,
    /// `/sys/dev/block`: `MAJ:MIN/dm/{uuid,name}` below it.
    pub sys_dev_block: PathBuf,
    pub cmdline: PathBuf,
    pub os_release: PathBuf,
    pub kubernetes_json: PathBuf,
}

impl Default for ImagePaths {
    fn default() -> Self {
        ImagePaths {
            mountinfo: "/proc/self/mountinfo".into(),
            sys_dev_block: "/sys/dev/block".into(),
            cmdline: crate::cmdline::PROC_CMDLINE.into(),
            os_release: "/usr/lib/os-release".into(),
            kubernetes_json: "/usr/lib/muster/kubernetes.json".into(),
        }
    }
}

/// What the agent knows about its image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    /// `IMAGE_ID=` of os-release (`muster` on the image).
    pub id: Option<String>,
    /// `IMAGE_VERSION=` of os-release.
    pub version: Option<String>,
    /// `PRETTY_NAME=` of os-release (the distribution underneath).
    pub os: Option<String>,
    pub usr: UsrFacts,
    /// The Kubernetes version the image carries; `None` when it carries none
    /// (or has no manifest: not the image).
    pub kubernetes_version: Option<String>,
    /// The Kubernetes binaries the image carries.
    #[serde(default)]
    pub kubernetes_binaries: Vec<String>,
}

/// The filesystem `/usr` lives on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsrFacts {
    /// Mount point of that filesystem: `/usr` on the image, `/` where `/usr`
    /// is no mount of its own; `None` when mountinfo could not be read.
    pub mount_point: Option<String>,
    /// Mount source, e.g. `/dev/mapper/usr`.
    pub source: Option<String>,
    pub fstype: Option<String>,
    pub read_only: bool,
    /// The device number `MAJ:MIN`.
    pub device: Option<String>,
    /// The device is a dm-verity target opened by systemd-veritysetup.
    pub verity: bool,
    /// Device-mapper name (`usr`), when the device is a dm device.
    pub dm_name: Option<String>,
    /// `usrhash=` of the kernel command line: the verity root hash.
    pub usrhash: Option<String>,
}

/// One line of `/proc/self/mountinfo`, the fields the facts need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: String,
    pub major: u32,
    pub minor: u32,
    pub fstype: String,
    pub source: String,
    /// `ro` in the per-mount or the superblock options.
    pub read_only: bool,
}

/// The `IMAGE_*` and name fields of an os-release file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub image_id: Option<String>,
    pub image_version: Option<String>,
    pub pretty_name: Option<String>,
}

/// `/usr/lib/muster/kubernetes.json`, written by `image/kubernetes.sh`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesManifest {
    pub version: Option<String>,
    #[serde(default)]
    pub binaries: Vec<String>,
}

/// A source that exists but cannot be used. Never fatal: the agent logs it
/// and reports the rest.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image facts: {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "image facts: {path}: expected {{\"version\": \"v1.33.2\" or null, \"binaries\": [...]}}: {source}"
    )]
    KubernetesManifest {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The facts, plus the sources that were there but unusable.
#[derive(Debug)]
pub struct ImageReport {
    pub facts: ImageFacts,
    pub problems: Vec<ImageError>,
}

/// Parses one mountinfo line (proc(5)):
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
pub fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split(' ');
    let (_id, _parent) = (head.next()?, head.next()?);
    let (major, minor) = head.next()?.split_once(':')?;
    let _root = head.next()?;
    let mount_point = unescape_octal(head.next()?);
    let mount_opts = head.next()?;
    let mut tail = tail.split(' ');
    let fstype = tail.next()?.to_string();
    let source = unescape_octal(tail.next()?);
    let super_opts = tail.next().unwrap_or("");
    let has_ro = |opts: &str| opts.split(',').any(|o| o == "ro");
    Some(Mount {
        mount_point,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        fstype,
        source,
        read_only: has_ro(mount_opts) || has_ro(super_opts),
    })
}

/// The mount that holds `/usr`: the mount at `/usr` itself, else the one
/// with the longest mount point above it (`/`). When mounts are stacked on
/// one point, the last listed is the one visible.
pub fn usr_mount(mountinfo: &str) -> Option<Mount> {
    let depth = |m: &Mount| match m.mount_point.as_str() {
        "/usr" => Some(2),
        "/" => Some(1),
        _ => None,
    };
    mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter_map(|m| depth(&m).map(|d| (d, m)))
        .fold(None, |best: Option<(u8, Mount)>, (d, m)| match best {
            Some((bd, _)) if bd > d => best,
            _ => Some((d, m)),
        })
        .map(|(_, m)| m)
}

/// Whether a device-mapper UUID (`/sys/dev/block/M:N/dm/uuid`) is that of
/// a verity device set up by systemd-veritysetup / cryptsetup.
pub fn is_verity_uuid(uuid: &str) -> bool {
    uuid.trim().starts_with(VERITY_UUID_PREFIX)
}

/// The last `usrhash=` of a kernel command line (later words win).
pub fn usrhash(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("usrhash="))
        .next_back()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Parses os-release(5): `KEY=VALUE` lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut out = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        let slot = match key.trim() {
            "IMAGE_ID" => &mut out.image_id,
            "IMAGE_VERSION" => &mut out.image_version,
            "PRETTY_NAME" => &mut out.pretty_name,
            _ => continue,
        };
        *slot = Some(value).filter(|v| !v.is_empty());
    }
    out
}

/// Parses `kubernetes.json`.
pub fn parse_kubernetes_manifest(text: &str) -> Result<KubernetesManifest, serde_json::Error> {
    serde_json::from_str(text)
}

/// Reads every source. Missing files leave their facts empty; unreadable or
/// malformed ones are listed in `problems`.
pub fn read(paths: &ImagePaths) -> ImageReport {
    let mut problems = Vec::new();
    let mut text = |path: &Path| match read_optional(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let mountinfo = text(&paths.mountinfo);
    let cmdline = text(&paths.cmdline);
    let os = text(&paths.os_release).map(|t| parse_os_release(&t));
    let manifest = text(&paths.kubernetes_json);

    let mut usr = UsrFacts {
        usrhash: cmdline.as_deref().and_then(usrhash),
        ..UsrFacts::default()
    };
    if let Some(m) = mountinfo.as_deref().and_then(usr_mount) {
        let dm = paths
            .sys_dev_block
            .join(format!("{}:{}", m.major, m.minor))
            .join("dm");
        // Not a dm device (no `dm/` directory) is the normal case off the image.
        let dm_uuid = text(&dm.join("uuid"));
        usr.dm_name = text(&dm.join("name")).map(|n| n.trim().to_string());
        usr.verity = dm_uuid.as_deref().is_some_and(is_verity_uuid);
        usr.device = Some(format!("{}:{}", m.major, m.minor));
        usr.mount_point = Some(m.mount_point);
        usr.source = Some(m.source);
        usr.fstype = Some(m.fstype);
        usr.read_only = m.read_only;
    }
    let manifest = manifest.and_then(|t| match parse_kubernetes_manifest(&t) {
        Ok(k) => Some(k),
        Err(source) => {
            problems.push(ImageError::KubernetesManifest {
                path: paths.kubernetes_json.clone(),
                source,
            });
            None
        }
    });
    let os = os.unwrap_or_default();
    let manifest = manifest.unwrap_or_default();
    ImageReport {
        facts: ImageFacts {
            id: os.image_id,
            version: os.image_version,
            os: os.pretty_name,
            usr,
            kubernetes_version: manifest.version.filter(|v| !v.is_empty()),
            kubernetes_binaries: manifest.binaries,
        },
        problems,
    }
}

impl ImageFacts {
    /// The one log line, e.g. `image muster 1.2.3: /usr read-only erofs on
    /// /dev/mapper/usr (dm-verity, usrhash=0123abcd…), kubernetes none`.
    /// It contains `dm-verity` only when `/usr` is verity-protected and
    /// `/usr read-only` only when it is mounted read-only: tests grep the
    /// serial console for both.
    pub fn summary(&self) -> String {
        let image = match (&self.id, &self.version) {
            (Some(id), Some(v)) => format!("image {id} {v}"),
            (Some(id), None) => format!("image {id} (no IMAGE_VERSION)"),
            (None, _) => "image unknown (no IMAGE_ID in os-release)".to_string(),
        };
        let kubernetes = self.kubernetes_version.as_deref().unwrap_or("none");
        format!("{image}: {}, kubernetes {kubernetes}", self.usr.summary())
    }
}

impl UsrFacts {
    fn summary(&self) -> String {
        let (Some(source), Some(fstype)) = (&self.source, &self.fstype) else {
            return "/usr mount unknown (no mountinfo)".to_string();
        };
        let mode = if self.read_only {
            "read-only"
        } else {
            "read-write"
        };
        let mut out = format!("/usr {mode} {fstype} on {source}");
        if let Some(point) = self.mount_point.as_deref().filter(|p| *p != "/usr") {
            out.push_str(&format!(" (mounted at {point})"));
        }
        if self.verity {
            match &self.usrhash {
                Some(hash) => out.push_str(&format!(" (dm-verity, usrhash={})", short_hash(hash))),
                None => out.push_str(" (dm-verity, no usrhash= on the command line)"),
            }
        } else {
            out.push_str(" (not verity-protected)");
        }
        out
    }
}

/// The first 8 characters of a hash and `…` when there are more.
fn short_hash(hash: &str) -> String {
    match hash.char_indices().nth(8) {
        Some((i, _)) => format!("{}…", &hash[..i]),
        None => hash.to_string(),
    }
}

/// Reads a file; `None` when it does not exist (or its parent does not).
fn read_optional(path: &Path) -> Result<Option<String>, ImageError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ImageError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Undoes mountinfo's `\NNN` octal escapes (space, tab, newline, `\`).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Strips os-release quoting: `"..."` or `'...'`, with `\` escapes in
/// double quotes.
fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_string();
    }
    let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return v.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_and_quotes() {
        assert_eq!(unescape_octal(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_octal(r"/x\\y\0"), r"/x\\y\0");
        assert_eq!(unquote(r#""Debian \"trixie\"""#), r#"Debian "trixie""#);
        assert_eq!(unquote("'1.2.3'"), "1.2.3");
        assert_eq!(unquote("muster"), "muster");
    }

    #[test]
    fn hashes_are_shortened_on_char_boundaries() {
        assert_eq!(short_hash("0123456789abcdef"), "01234567…");
        assert_eq!(short_hash("abc"), "abc");
        assert_eq!(short_hash("ééééééééé"), "éééééééé…");
    }
}
