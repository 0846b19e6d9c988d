//! Small pure helpers that turn provider strings into fact fields, the same
//! way for every provider: trimmed, empty means absent, bad addresses are
//! errors that name where they came from.

use std::net::Ipv4Addr;

use super::{MetadataError, ProviderKind};

/// Trimmed, or `None` when empty.
pub(crate) fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An IPv4 address, `None` when empty; an address with a `/prefix` is accepted.
pub(crate) fn ipv4(
    provider: ProviderKind,
    origin: &str,
    s: Option<&str>,
) -> Result<Option<Ipv4Addr>, MetadataError> {
    let Some(s) = non_empty(s) else {
        return Ok(None);
    };
    let addr = s.split_once('/').map_or(s.as_str(), |(a, _)| a);
    addr.parse::<Ipv4Addr>().map(Some).map_err(|_| {
        // Addresses are not secret; quoting a short one helps the operator.
        let shown: String = s.chars().take(64).collect();
        MetadataError::parse(
            provider,
            origin,
            format!("{shown:?} is not an IPv4 address"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_absent_and_prefixes_are_dropped() {
        assert_eq!(non_empty(Some("  ")), None);
        assert_eq!(non_empty(Some(" a ")), Some("a".into()));
        let p = ProviderKind::Metal;
        assert_eq!(ipv4(p, "x", Some("")).expect("ok"), None);
        assert_eq!(
            ipv4(p, "x", Some("10.0.0.5/24")).expect("ok"),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
        let e = ipv4(p, "muster.ip", Some("fe80::1")).expect_err("v6");
        assert_eq!(
            e.to_string(),
            "metal metadata in muster.ip: \"fe80::1\" is not an IPv4 address"
        );
    }
}
