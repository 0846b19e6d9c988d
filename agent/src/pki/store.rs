//! The node's certificates on disk: `ensure_node_certs` keeps what is still
//! good and re-issues the rest.
//!
//! Layout of the pki dir (0700): `ca.crt` (0644) and, per [`CertKind`],
//! `<stem>.crt` (0644) + `<stem>.key` (0600). Every file is written to a
//! temporary name created with its final mode, synced, then renamed: no
//! window where a key is readable by others, no half-written file.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::ca::ClusterCa;
use super::der;
use super::error::PkiError;
use super::leaf::{CertKind, KeyPem, LeafSpec, NodeIdentity, San, Usage};

/// A certificate with less than this left is re-issued.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

pub const CA_FILE: &str = "ca.crt";
const DIR_MODE: u32 = 0o700;
/// Mode of certificates and other public files.
pub const CERT_MODE: u32 = 0o644;
/// Mode of private keys and files that embed one.
pub const KEY_MODE: u32 = 0o600;

/// Signature algorithms accepted when checking our own certificates.
static SIG_ALGS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] =
    &[webpki::ring::ED25519, webpki::ring::ECDSA_P256_SHA256];

/// What `ensure_node_certs` did with one kind, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Issued(Reason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Missing,
    /// The key file is readable by group/others or is not a regular file:
    /// the key may have leaked, so it is replaced, not just chmod-ed.
    KeyExposed,
    Unparsable,
    /// Not signed by this CA, not yet valid, expired, or wrong usages.
    NotTrusted(String),
    ExpiresSoon,
    NamesChanged,
    KeyMismatch,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing => f.write_str("missing"),
            Reason::KeyExposed => f.write_str("key file was accessible to others"),
            Reason::Unparsable => f.write_str("unparsable"),
            Reason::NotTrusted(why) => write!(f, "not valid under this CA ({why})"),
            Reason::ExpiresSoon => f.write_str("expires within 30 days"),
            Reason::NamesChanged => f.write_str("subject or SANs changed"),
            Reason::KeyMismatch => f.write_str("key does not match certificate"),
        }
    }
}

/// One kind's files and contents.
#[derive(Clone)]
pub struct NodeCert {
    pub kind: CertKind,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: KeyPem,
    pub outcome: Outcome,
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert")
            .field("kind", &self.kind)
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("key_pem", &self.key_pem)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// The node's pki dir after `ensure_node_certs`.
#[derive(Debug, Clone)]
pub struct NodePki {
    pub dir: PathBuf,
    pub ca_path: PathBuf,
    pub certs: Vec<NodeCert>,
}

impl NodePki {
    pub fn get(&self, kind: CertKind) -> Option<&NodeCert> {
        self.certs.iter().find(|c| c.kind == kind)
    }
}

/// Path of `<stem>.crt` and `<stem>.key` in `dir`.
pub fn cert_paths(dir: &Path, kind: CertKind) -> (PathBuf, PathBuf) {
    let stem = kind.stem();
    (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    )
}

/// Makes `dir` hold this CA and a valid certificate of every
/// [`CertKind::ALL`] for `node`. Idempotent: a second call with the same
/// inputs touches no file.
pub fn ensure_node_certs(
    dir: &Path,
    ca: &ClusterCa,
    node: &NodeIdentity,
) -> Result<NodePki, PkiError> {
    ensure_certs_at(dir, ca, node, &CertKind::ALL, SystemTime::now())
}

/// [`ensure_node_certs`] for chosen kinds at a chosen time.
pub fn ensure_certs_at(
    dir: &Path,
    ca: &ClusterCa,
    node: &NodeIdentity,
    kinds: &[CertKind],
    now: SystemTime,
) -> Result<NodePki, PkiError> {
    // Validate everything before the first write (S6).
    let specs = kinds
        .iter()
        .map(|&k| LeafSpec::for_kind(k, node).map(|s| (k, s)))
        .collect::<Result<Vec<_>, _>>()?;

    ensure_dir(dir)?;
    let ca_path = dir.join(CA_FILE);
    if fs::read(&ca_path).ok().as_deref() != Some(ca.cert_pem().as_bytes()) {
        write_atomic(&ca_path, ca.cert_pem().as_bytes(), CERT_MODE)?;
        tracing::info!(path = %ca_path.display(), spki = %ca.spki_sha256(), "wrote cluster CA certificate");
    }

    let mut certs = Vec::with_capacity(specs.len());
    for (kind, spec) in specs {
        let leaf = ensure_leaf(dir, kind.stem(), ca, &spec, now)?;
        certs.push(NodeCert {
            kind,
            cert_path: leaf.cert_path,
            key_path: leaf.key_path,
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            outcome: leaf.outcome,
        });
    }
    sync_dir(dir)?;
    Ok(NodePki {
        dir: dir.to_path_buf(),
        ca_path,
        certs,
    })
}

/// One certificate and key on disk, after [`ensure_leaf`].
#[derive(Clone)]
pub struct LeafFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: KeyPem,
    pub outcome: Outcome,
}

impl fmt::Debug for LeafFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafFiles")
            .field("cert_path", &self.cert_path)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// Makes `<dir>/<stem>.crt` + `.key` a valid pair for `spec` under `ca`:
/// kept when still good (trusted, not expiring within 30 days, same
/// names, key matching and private), else issued afresh. `dir` must exist.
pub fn ensure_leaf(
    dir: &Path,
    stem: &str,
    ca: &ClusterCa,
    spec: &LeafSpec,
    now: SystemTime,
) -> Result<LeafFiles, PkiError> {
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    let (cert_pem, key_pem, outcome) = match check_existing(ca, spec, &cert_path, &key_path, now)? {
        Ok((cert, key)) => (cert, key, Outcome::Kept),
        Err(reason) => {
            let issued = ca.issue_at(spec, now)?;
            // Key first: a crash between the renames leaves a
            // mismatched pair, which the next run detects.
            write_atomic(&key_path, issued.key_pem.expose().as_bytes(), KEY_MODE)?;
            write_atomic(&cert_path, issued.cert_pem.as_bytes(), CERT_MODE)?;
            tracing::info!(%stem, %reason, path = %cert_path.display(), "issued certificate");
            (issued.cert_pem, issued.key_pem, Outcome::Issued(reason))
        }
    };
    Ok(LeafFiles {
        cert_path,
        key_path,
        cert_pem,
        key_pem,
        outcome,
    })
}

/// Writes `bytes` to `path` (atomically, with `mode`) unless it already
/// holds exactly them, so derived files are repaired when tampered with
/// and untouched otherwise. True when it wrote. A key mode (0600) also
/// replaces a file of the right content that others could read.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, PkiError> {
    let same = fs::read(path).ok().as_deref() == Some(bytes);
    let mode_ok = fs::symlink_metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o777 == mode)
        .unwrap_or(false);
    if same && mode_ok {
        return Ok(false);
    }
    write_atomic(path, bytes, mode)?;
    Ok(true)
}

/// Creates `dir` (0700) and its parents, tightening a looser existing one.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    ensure_dir(dir)
}

type Existing = Result<(String, KeyPem), Reason>;

/// `Ok(Ok(..))`: keep these. `Ok(Err(reason))`: re-issue. `Err`: an I/O
/// fault other than "not there" (never overwrite what we cannot read).
fn check_existing(
    ca: &ClusterCa,
    spec: &LeafSpec,
    cert_path: &Path,
    key_path: &Path,
    now: SystemTime,
) -> Result<Existing, PkiError> {
    let Some(cert_pem) = read_opt(cert_path)? else {
        return Ok(Err(Reason::Missing));
    };
    match fs::symlink_metadata(key_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(Reason::Missing)),
        Err(e) => return Err(PkiError::io("inspecting", key_path, e)),
        Ok(m) if !m.is_file() || m.permissions().mode() & 0o077 != 0 => {
            return Ok(Err(Reason::KeyExposed));
        }
        Ok(_) => {}
    }
    let Some(key_pem) = read_opt(key_path)? else {
        return Ok(Err(Reason::Missing));
    };
    let key_pem = KeyPem::new(key_pem);
    let Ok(cert_der) = CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return Ok(Err(Reason::Unparsable));
    };
    Ok(judge(ca, spec, &cert_der, &key_pem, now).map(|()| (cert_pem, key_pem)))
}

/// The checks on an existing pair, pure (no I/O).
fn judge(
    ca: &ClusterCa,
    spec: &LeafSpec,
    cert_der: &CertificateDer<'_>,
    key_pem: &KeyPem,
    now: SystemTime,
) -> Result<(), Reason> {
    let Ok(ee) = EndEntityCert::try_from(cert_der) else {
        return Err(Reason::Unparsable);
    };
    verify_at(ca, &ee, &spec.usages, now).map_err(Reason::NotTrusted)?;
    let horizon = now.checked_add(RENEW_BEFORE).unwrap_or(now);
    if verify_at(ca, &ee, &spec.usages, horizon).is_err() {
        return Err(Reason::ExpiresSoon);
    }

    let names = der::cert_names(cert_der).ok_or(Reason::Unparsable)?;
    let mut sans: Vec<San> = names
        .sans
        .into_iter()
        .collect::<Option<_>>()
        .ok_or(Reason::NamesChanged)?;
    sans.sort();
    if names.common_name.as_ref() != Some(&spec.common_name)
        || names.organization != spec.organization
        || sans != spec.sans
    {
        return Err(Reason::NamesChanged);
    }

    let key = KeyPair::from_pem(key_pem.expose()).map_err(|_| Reason::Unparsable)?;
    if key.subject_public_key_info() != ee.subject_public_key_info().as_ref() {
        return Err(Reason::KeyMismatch);
    }
    Ok(())
}

/// Chain to `ca` and every usage in `usages`, at `at`.
pub(crate) fn verify_at(
    ca: &ClusterCa,
    ee: &EndEntityCert<'_>,
    usages: &[Usage],
    at: SystemTime,
) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca.cert_der()).map_err(|e| e.to_string())?;
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    for usage in usages {
        let eku = match usage {
            Usage::ServerAuth => KeyUsage::server_auth(),
            Usage::ClientAuth => KeyUsage::client_auth(),
        };
        ee.verify_for_usage(
            SIG_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            UnixTime::since_unix_epoch(since),
            eku,
            None,
            None,
        )
        .map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

fn read_opt(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // Not UTF-8: garbage, treat like a missing file and replace it.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Some(String::new())),
        Err(e) => Err(PkiError::io("reading", path, e)),
    }
}

fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| PkiError::io("creating", dir, e))?;
    let meta = fs::metadata(dir).map_err(|e| PkiError::io("inspecting", dir, e))?;
    // A pre-existing dir may be looser; tightening a dir exposes nothing.
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| PkiError::io("restricting", dir, e))?;
    }
    Ok(())
}

/// Creates `<dir>/.<name>.tmp` with `mode` from the first byte, writes,
/// syncs and renames over `path`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // A leftover from a crash: create_new below must not follow or reuse it.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(PkiError::io("removing", &tmp, e));
        }
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| PkiError::io("creating", &tmp, e))?;
    // The umask may have cleared bits of a public file (never adds any).
    if mode != KEY_MODE {
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| PkiError::io("setting mode of", &tmp, e))?;
    }
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| PkiError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| PkiError::io("renaming into", path, e))
}

fn sync_dir(dir: &Path) -> Result<(), PkiError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PkiError::io("syncing", dir, e))
}
