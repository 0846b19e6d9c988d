//! ExternalDNS's TXT registry, byte for byte: the names and values of the
//! ownership records an ExternalDNS with the same owner id adopts without a
//! change (research: `../shared/research/dns-registration.md` §1;
//! kubernetes-sigs/external-dns `registry/mapper/mapper.go`,
//! `endpoint/labels.go`). Pure.

/// The record types the agent publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Txt,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Txt => "TXT",
        }
    }

    pub fn parse(s: &str) -> Option<RecordType> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Some(RecordType::A),
            "AAAA" => Some(RecordType::Aaaa),
            "TXT" => Some(RecordType::Txt),
            _ => None,
        }
    }
}

/// The ownership TXT record's name for `name`'s record of `kind`, in the
/// "new format" every ExternalDNS since v0.18 writes (no `--txt-prefix` or
/// `--txt-suffix`): the lower-cased type and `-` before the first label,
/// `api.prod.example.com` A → `a-api.prod.example.com`.
pub fn txt_name(name: &str, kind: RecordType) -> String {
    format!("{}-{}", kind.as_str().to_ascii_lowercase(), name)
}

/// The DNSEndpoint resource label ExternalDNS's crd source puts on the
/// records of `namespace/name` (`source/crd.go`).
pub fn crd_resource(namespace: &str, name: &str) -> String {
    format!("crd/{namespace}/{name}")
}

/// The ownership value, without the quotes a provider's wire format may add:
/// `heritage=external-dns` first, then the labels sorted by key
/// (`owner` < `resource`), joined by `,`.
pub fn ownership_value(owner: &str, resource: &str) -> String {
    format!("heritage=external-dns,external-dns/owner={owner},external-dns/resource={resource}")
}

/// The same value as Route 53, Google Cloud DNS and Cloudflare store it:
/// one quoted character string.
pub fn quoted(value: &str) -> String {
    format!("\"{value}\"")
}

/// The character strings of a TXT value as Route 53, Google Cloud DNS and
/// Cloudflare present it (`"a" "b"`, with `\"` escapes), joined: `ab`.
/// A value without quotes is returned as it is.
pub fn unquoted(value: &str) -> String {
    if !value.contains('"') {
        return value.to_string();
    }
    let mut out = String::new();
    let mut in_quotes = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' if in_quotes => out.extend(chars.next()),
            c if in_quotes => out.push(c),
            _ => {}
        }
    }
    out
}

/// Who owns a record, from its TXT value (quoted or not), the way
/// ExternalDNS reads it (`NewLabelsFromStringPlain`): `None` when the value
/// is not an ExternalDNS registry entry, `Some("")` when it is one without
/// an owner.
pub fn owner_of(txt_value: &str) -> Option<String> {
    let plain = txt_value.trim().trim_matches('"');
    let mut parts = plain.split(',');
    if parts.next() != Some("heritage=external-dns") {
        return None;
    }
    let mut owner = String::new();
    for part in parts {
        if let Some(v) = part.strip_prefix("external-dns/owner=") {
            owner = v.to_string();
        }
    }
    Some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Examples from external-dns docs/registry/txt.md and
    // registry/txt/registry_test.go (new format, no affixes).
    #[test]
    fn names_follow_the_new_format() {
        assert_eq!(
            txt_name("api.prod.example.com", RecordType::A),
            "a-api.prod.example.com"
        );
        assert_eq!(
            txt_name("api.prod.example.com", RecordType::Aaaa),
            "aaaa-api.prod.example.com"
        );
        assert_eq!(
            txt_name("node-1.nodes.prod.example.com", RecordType::A),
            "a-node-1.nodes.prod.example.com"
        );
    }

    #[test]
    fn values_match_externaldns_byte_for_byte() {
        let v = ownership_value("prod", &crd_resource("kube-system", "muster-api"));
        assert_eq!(
            v,
            "heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api"
        );
        assert_eq!(unquoted(&quoted(&v)), v);
        assert_eq!(unquoted("\"a\" \"b\\\"c\""), "ab\"c");
        assert_eq!(unquoted("plain"), "plain");
        assert_eq!(
            quoted(&v),
            "\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api\""
        );
    }

    #[test]
    fn owners_are_read_like_externaldns_reads_them() {
        assert_eq!(
            owner_of(
                "\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/a/b\""
            )
            .as_deref(),
            Some("prod")
        );
        // kOps writes no resource label.
        assert_eq!(
            owner_of("heritage=external-dns,external-dns/owner=kops-prod").as_deref(),
            Some("kops-prod")
        );
        assert_eq!(owner_of("heritage=external-dns").as_deref(), Some(""));
        assert_eq!(owner_of("v=spf1 -all"), None);
        assert_eq!(owner_of("heritage=other,external-dns/owner=prod"), None);
    }
}
