//! Reading small local files (seed dirs, fw_cfg, sysfs, /etc) with a size cap,
//! so a wrong path pointing at a huge file cannot exhaust memory.

use std::io::ErrorKind;
use std::path::Path;

use tokio::io::AsyncReadExt;

use super::http::MAX_BODY;
use super::{MetadataError, ProviderKind};

/// Reads a file; a missing file is `None`.
pub(crate) async fn read_optional(
    provider: ProviderKind,
    path: &Path,
) -> Result<Option<Vec<u8>>, MetadataError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(MetadataError::Read {
                provider,
                path: path.to_path_buf(),
                cause,
            });
        }
    };
    let mut body = Vec::new();
    file.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|cause| MetadataError::Read {
            provider,
            path: path.to_path_buf(),
            cause,
        })?;
    if body.len() > MAX_BODY {
        return Err(MetadataError::parse(
            provider,
            path.display().to_string(),
            format!("file larger than {MAX_BODY} bytes"),
        ));
    }
    Ok(Some(body))
}

/// Reads a file that must exist.
pub(crate) async fn read_required(
    provider: ProviderKind,
    path: &Path,
) -> Result<Vec<u8>, MetadataError> {
    read_optional(provider, path)
        .await?
        .ok_or_else(|| MetadataError::Read {
            provider,
            path: path.to_path_buf(),
            cause: std::io::Error::new(ErrorKind::NotFound, "no such file"),
        })
}

/// Reads a one-line sysfs or /etc value: trimmed, `None` if missing or empty.
pub(crate) async fn read_value(
    provider: ProviderKind,
    path: &Path,
) -> Result<Option<String>, MetadataError> {
    let Some(bytes) = read_optional(provider, path).await? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    Ok((!text.is_empty()).then_some(text))
}

/// Bytes as UTF-8 text, or a parse error naming where they came from.
pub(crate) fn utf8(
    provider: ProviderKind,
    origin: &str,
    bytes: &[u8],
) -> Result<String, MetadataError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        MetadataError::parse(
            provider,
            origin,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// User data as text: empty means none. Gzip-compressed user data (as
/// Terraform's `cloudinit_config` sends it by default) is decompressed
/// first, bounded by `config::userdata::MAX_UNPACKED`.
pub(crate) fn user_data(
    provider: ProviderKind,
    origin: &str,
    bytes: &[u8],
) -> Result<Option<String>, MetadataError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if crate::config::userdata::is_gzip(bytes) {
        let plain = crate::config::userdata::gunzip(bytes)
            .map_err(|e| MetadataError::parse(provider, origin, format!("user data {e}")))?;
        return utf8(provider, origin, &plain).map(Some);
    }
    utf8(provider, origin, bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_is_none_and_values_are_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("v");
        assert!(
            read_optional(ProviderKind::Qemu, &p)
                .await
                .expect("ok")
                .is_none()
        );
        assert!(read_required(ProviderKind::Qemu, &p).await.is_err());
        std::fs::write(&p, "  abc \n").expect("write");
        assert_eq!(
            read_value(ProviderKind::Qemu, &p)
                .await
                .expect("ok")
                .as_deref(),
            Some("abc")
        );
        std::fs::write(&p, "\n").expect("write");
        assert_eq!(read_value(ProviderKind::Qemu, &p).await.expect("ok"), None);
    }

    #[tokio::test]
    async fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'a'; MAX_BODY + 1]).expect("write");
        let e = read_optional(ProviderKind::Nocloud, &p)
            .await
            .expect_err("too big");
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn user_data_rules() {
        assert_eq!(user_data(ProviderKind::Aws, "x", b"").expect("ok"), None);
        assert_eq!(
            user_data(ProviderKind::Aws, "x", b"a: 1")
                .expect("ok")
                .as_deref(),
            Some("a: 1")
        );
        let e = user_data(ProviderKind::Aws, "x", &[0x1f, 0x8b, 8, 0]).expect_err("broken gzip");
        assert!(
            e.to_string()
                .contains("gzip-compressed but does not decompress"),
            "{e}"
        );
        let packed = {
            use std::io::Write;
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(b"a: 1").expect("write");
            z.finish().expect("gzip")
        };
        assert_eq!(
            user_data(ProviderKind::Aws, "x", &packed)
                .expect("gzip")
                .as_deref(),
            Some("a: 1")
        );
        let e = user_data(ProviderKind::Aws, "x", &[b'a', 0xff]).expect_err("not utf8");
        assert!(e.to_string().contains("offset 1"), "{e}");
    }
}
