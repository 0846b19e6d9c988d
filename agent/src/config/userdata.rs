//! User data as people really write it: plain YAML, a `#cloud-config`, or
//! a MIME multi-part message (Terraform's `cloudinit_config`, cloud-init's
//! `make-mime`, Packer, most AWS tooling), possibly gzip-compressed as a
//! whole or per part, parts possibly base64-encoded. Pure: bytes in, the
//! parts Muster reads out.
//!
//! What cloud-init would do with each part decides what Muster does:
//! `text/cloud-config` parts (and untyped parts whose first line is
//! `#cloud-config`) are read; parts of other types (shell scripts,
//! boothooks, include lists) are ignored with a note; `multipart/*` parts
//! are walked into. The caller merges the cloud-config parts' `muster:`
//! keys the way cloud-init merges cloud-config by default: an earlier part
//! keeps its values, a later part only adds keys that are missing
//! (recursively for mappings).

use std::io::Read;

/// No user data unpacks to more than this (a gzip bomb stops here). EC2
/// allows 16 KiB of user data; GCE 256 KiB per attribute.
pub const MAX_UNPACKED: usize = 4 * 1024 * 1024;

/// How deep `multipart` parts may nest.
const MAX_DEPTH: usize = 8;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One part Muster reads, with the name errors use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `aws user data, part 2 (config.yaml, text/cloud-config)`.
    pub origin: String,
    pub text: String,
    /// A cloud-config (the settings are under `muster:`), not plain
    /// Muster YAML.
    pub cloud_config: bool,
}

/// The parts to read, and notes on what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub parts: Vec<Part>,
    /// `part 3 (setup.sh, text/x-shellscript): ignored, ...`.
    pub ignored: Vec<String>,
    /// The user data was a MIME multi-part message.
    pub multipart: bool,
}

pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses gzip data, refusing more than [`MAX_UNPACKED`] bytes.
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(bytes).take(MAX_UNPACKED as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| format!("is gzip-compressed but does not decompress: {e}"))?;
    if out.len() > MAX_UNPACKED {
        return Err(format!(
            "decompresses to more than {} MiB",
            MAX_UNPACKED / 1024 / 1024
        ));
    }
    Ok(out)
}

fn is_mime(text: &str) -> bool {
    let head = text.trim_start_matches('\u{feff}').trim_start();
    let lower = head.get(..13).unwrap_or(head).to_ascii_lowercase();
    lower.starts_with("content-type:") || lower.starts_with("mime-version:")
}

/// Splits user data text into the parts Muster reads. Plain text is one
/// part named `origin`.
pub fn unpack(origin: &str, text: &str) -> Result<Unpacked, String> {
    let mut out = Unpacked::default();
    if !is_mime(text) {
        out.parts.push(Part {
            origin: origin.to_string(),
            text: text.to_string(),
            cloud_config: text
                .trim_start_matches('\u{feff}')
                .starts_with("#cloud-config"),
        });
        return Ok(out);
    }
    out.multipart = true;
    let mail = mailparse::parse_mail(text.as_bytes())
        .map_err(|e| format!("is not a readable MIME message: {e}"))?;
    let mut counter = 0;
    walk(origin, &mail, 0, &mut counter, &mut out)?;
    Ok(out)
}

fn walk(
    origin: &str,
    part: &mailparse::ParsedMail<'_>,
    depth: usize,
    counter: &mut usize,
    out: &mut Unpacked,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nests multipart parts deeper than {MAX_DEPTH}"));
    }
    let mimetype = part.ctype.mimetype.to_ascii_lowercase();
    if mimetype.starts_with("multipart/") {
        for sub in &part.subparts {
            walk(origin, sub, depth + 1, counter, out)?;
        }
        return Ok(());
    }
    *counter += 1;
    let filename = part
        .get_content_disposition()
        .params
        .get("filename")
        .or_else(|| part.ctype.params.get("name"))
        .cloned();
    let label = match &filename {
        Some(f) => format!("part {counter} ({f}, {mimetype})"),
        None => format!("part {counter} ({mimetype})"),
    };
    let name = format!("{origin}, {label}");
    let mut body = part
        .get_body_raw()
        .map_err(|e| format!("{label}: cannot decode its transfer encoding: {e}"))?;
    if is_gzip(&body) {
        body = gunzip(&body).map_err(|e| format!("{label} {e}"))?;
    }
    let text = String::from_utf8(body).map_err(|e| {
        format!(
            "{label}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    // A gzip or base64 part may itself hold a whole multi-part message.
    if is_mime(&text) {
        let inner = mailparse::parse_mail(text.as_bytes())
            .map_err(|e| format!("{label}: not a readable MIME message: {e}"))?;
        return walk(origin, &inner, depth + 1, counter, out);
    }
    let first_line = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("");
    let cloud_config = match mimetype.as_str() {
        "text/cloud-config" => true,
        // cloud-init looks at the first line of untyped parts.
        "text/plain" | "text/x-not-multipart" | "application/octet-stream" => {
            first_line.starts_with("#cloud-config")
        }
        _ => false,
    };
    if cloud_config {
        out.parts.push(Part {
            origin: name,
            text,
            cloud_config: true,
        });
    } else {
        out.ignored.push(format!(
            "{label}: ignored (Muster reads text/cloud-config parts; the image has no cloud-init to run the rest)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn plain_text_is_one_part() {
        let u = unpack("aws user data", "#cloud-config\nmuster: {}\n").expect("ok");
        assert!(!u.multipart);
        assert_eq!(u.parts.len(), 1);
        assert!(u.parts[0].cloud_config);
        assert_eq!(u.parts[0].origin, "aws user data");
    }

    #[test]
    fn gzip_round_trips_and_bombs_and_garbage_are_refused() {
        let text = b"cluster:\n  name: a\n";
        assert!(is_gzip(&gzip(text)));
        assert_eq!(gunzip(&gzip(text)).expect("ok"), text);
        let bomb = gzip(&vec![b'a'; MAX_UNPACKED + 10]);
        assert!(gunzip(&bomb).expect_err("bomb").contains("more than 4 MiB"));
        let mut broken = gzip(text);
        broken.truncate(12);
        assert!(
            gunzip(&broken)
                .expect_err("broken")
                .contains("does not decompress")
        );
    }
}
