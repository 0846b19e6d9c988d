//! Just enough DER reading to get the names out of a certificate.
//!
//! webpki checks the signature, validity and usages of an existing
//! certificate, but exposes neither IP SANs nor the subject CN; this reads
//! them so `ensure_node_certs` can compare them with what it wants. Every
//! read is bounds-checked and returns `None` on anything unexpected (the
//! caller then re-issues), so untrusted bytes can never panic it.

use std::net::IpAddr;

use super::leaf::San;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const VERSION: u8 = 0xa0; // [0] EXPLICIT
const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT
const SAN_DNS: u8 = 0x82; // [2] IMPLICIT IA5String
const SAN_IP: u8 = 0x87; // [7] IMPLICIT OCTET STRING

const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
const OID_CN: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
const OID_O: &[u8] = &[0x55, 0x04, 0x0a]; // 2.5.4.10

/// The naming parts of a certificate.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CertNames {
    pub common_name: Option<String>,
    pub organization: Option<String>,
    /// In certificate order; `None` inside means a name type we do not issue.
    pub sans: Vec<Option<San>>,
}

/// A cursor over a run of DER TLVs.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next (tag, value); `None` at the end or on malformed input.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags never occur in what we read
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None; // indefinite or absurd length
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, value))
    }

    fn expect(&mut self, want: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (tag, value) if tag == want => Some(value),
            _ => None,
        }
    }
}

/// Reads subject CN/O and the SAN list of a DER certificate.
pub(crate) fn cert_names(cert_der: &[u8]) -> Option<CertNames> {
    let cert = Reader(cert_der).expect(SEQUENCE)?;
    let mut tbs = Reader(Reader(cert).expect(SEQUENCE)?);

    let (mut tag, _) = tbs.next()?;
    if tag == VERSION {
        (tag, _) = tbs.next()?; // serial
    }
    if tag != 0x02 {
        return None;
    }
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let subject = tbs.expect(SEQUENCE)?;
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo

    let mut names = subject_names(subject)?;
    while let Some((tag, value)) = tbs.next() {
        if tag == EXTENSIONS
            && let Some(san) = find_extension(value, OID_SAN)?
        {
            names.sans = general_names(san)?;
        }
    }
    Some(names)
}

/// `subject` is the content of the Name SEQUENCE.
pub(crate) fn subject_names(subject: &[u8]) -> Option<CertNames> {
    let mut names = CertNames::default();
    let mut rdns = Reader(subject);
    while let Some(set) = rdns.next() {
        if set.0 != SET {
            return None;
        }
        let mut atvs = Reader(set.1);
        while let Some(atv) = atvs.next() {
            let mut atv = Reader((atv.0 == SEQUENCE).then_some(atv.1)?);
            let oid = atv.expect(OID)?;
            let (tag, value) = atv.next()?;
            // UTF8String, PrintableString, IA5String: all ASCII-compatible.
            if !matches!(tag, 0x0c | 0x13 | 0x16) {
                continue;
            }
            let text = String::from_utf8(value.to_vec()).ok()?;
            if oid == OID_CN {
                names.common_name = Some(text);
            } else if oid == OID_O {
                names.organization = Some(text);
            }
        }
    }
    Some(names)
}

/// The extnValue of extension `oid`, if present. `exts` is the content of
/// the `[3]` wrapper.
fn find_extension<'a>(exts: &'a [u8], oid: &[u8]) -> Option<Option<&'a [u8]>> {
    let mut list = Reader(Reader(exts).expect(SEQUENCE)?);
    while let Some((tag, ext)) = list.next() {
        if tag != SEQUENCE {
            return None;
        }
        let mut ext = Reader(ext);
        let id = ext.expect(OID)?;
        let (mut tag, mut value) = ext.next()?;
        if tag == BOOLEAN {
            (tag, value) = ext.next()?;
        }
        if tag != OCTET_STRING {
            return None;
        }
        if id == oid {
            return Some(Some(value));
        }
    }
    Some(None)
}

fn general_names(ext_value: &[u8]) -> Option<Vec<Option<San>>> {
    let mut names = Reader(Reader(ext_value).expect(SEQUENCE)?);
    let mut out = Vec::new();
    while let Some((tag, value)) = names.next() {
        out.push(match tag {
            SAN_DNS => Some(San::Dns(String::from_utf8(value.to_vec()).ok()?)),
            SAN_IP => Some(San::Ip(match value.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(value).ok()?),
                16 => IpAddr::from(<[u8; 16]>::try_from(value).ok()?),
                _ => return None,
            })),
            _ => None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_names_of_an_rcgen_certificate() {
        let mut p = rcgen::CertificateParams::new(vec![
            "node-1.example".to_string(),
            "10.0.0.7".to_string(),
            "fd00::7".to_string(),
        ])
        .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "grp");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "node-1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();

        let names = cert_names(cert.der()).unwrap();
        assert_eq!(names.common_name.as_deref(), Some("node-1"));
        assert_eq!(names.organization.as_deref(), Some("grp"));
        assert_eq!(
            names.sans,
            vec![
                Some(San::Dns("node-1.example".into())),
                Some(San::Ip("10.0.0.7".parse().unwrap())),
                Some(San::Ip("fd00::7".parse().unwrap())),
            ]
        );
    }

    #[test]
    fn truncated_input_is_none_not_a_panic() {
        let key = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let der = p.self_signed(&key).unwrap().der().to_vec();
        for cut in 0..der.len() {
            assert_eq!(cert_names(&der[..cut]), None, "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = cert_names(&bytes);
            let _ = subject_names(&bytes);
        }
    }
}
