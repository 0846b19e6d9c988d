//! Tier 0: every provider's pure `parse` on responses recorded from its
//! public documentation (see tests/fixtures/metadata/README.md), compared
//! with golden `expected*.json` files.

use crate::support::golden;

use std::collections::HashMap;

use golden::{assert_golden, read_fixture, read_fixture_text};
use muster::metadata::{self, aws, azure, gce, nocloud, openstack, qemu};

/// The AWS fixture is one answer per IMDS path; build `Responses` from it.
fn aws_responses() -> aws::Responses {
    let map: HashMap<String, String> =
        serde_json::from_str(&read_fixture_text("aws/imds.json")).expect("json");
    let get = |p: &str| map.get(p).cloned();
    let tags = aws::parse_tag_keys(&get(aws::TAGS).unwrap_or_default())
        .into_iter()
        .filter_map(|k| get(&format!("{}/{k}", aws::TAGS)).map(|v| (k, v)))
        .collect();
    aws::Responses {
        instance_id: get(aws::INSTANCE_ID),
        local_hostname: get(aws::LOCAL_HOSTNAME),
        local_ipv4: get(aws::LOCAL_IPV4),
        public_ipv4: get(aws::PUBLIC_IPV4),
        region: get(aws::REGION),
        availability_zone: get(aws::AVAILABILITY_ZONE),
        identity_document: None,
        tags,
        user_data: get(aws::USER_DATA).map(String::into_bytes),
    }
}

#[test]
fn aws_imds_answers() {
    let facts = aws::parse(&aws_responses()).expect("parses");
    assert_eq!(
        facts.group.as_deref(),
        Some("muster-etcd"),
        "group from aws:autoscaling:groupName"
    );
    assert_golden("aws/expected.json", &facts);
}

#[test]
fn aws_identity_document_from_the_docs() {
    let doc =
        aws::parse_identity_document(&read_fixture_text("aws/instance-identity-document.json"))
            .expect("parses");
    assert_eq!(doc.instance_id.as_deref(), Some("i-1234567890abcdef0"));
    assert_eq!(doc.region.as_deref(), Some("us-west-2"));
    assert_eq!(doc.availability_zone.as_deref(), Some("us-west-2b"));
    assert_eq!(doc.private_ip.as_deref(), Some("10.158.112.84"));
    assert_eq!(doc.account_id.as_deref(), Some("123456789012"));
    // Only the document (older IMDS, emulators): the facts still come out whole.
    let only_doc = aws::Responses {
        identity_document: Some(read_fixture_text("aws/instance-identity-document.json")),
        ..aws::Responses::default()
    };
    assert_golden(
        "aws/expected-identity-document-only.json",
        &aws::parse(&only_doc).expect("parses"),
    );
}

#[test]
fn aws_no_tags_no_user_data_no_public_ip() {
    let r = aws::Responses {
        public_ipv4: None,
        tags: Vec::new(),
        user_data: None,
        ..aws_responses()
    };
    let facts = aws::parse(&r).expect("parses");
    assert!(facts.tags.is_empty() && facts.group.is_none());
    assert!(facts.user_data.is_none() && facts.public_ipv4.is_none());
}

#[test]
fn gce_recursive_instance() {
    let facts = gce::parse(&read_fixture("gce/instance.json")).expect("parses");
    assert_eq!(
        facts.instance_id, "7015181712655481713",
        "u64 id kept exactly"
    );
    assert_eq!(facts.group.as_deref(), Some("muster-cp"));
    assert_golden("gce/expected.json", &facts);
}

#[test]
fn azure_full_instance_both_tabs() {
    let windows = azure::parse(&read_fixture("azure/instance-windows.json")).expect("parses");
    assert_eq!(
        windows.user_data.as_deref(),
        Some("foobar"),
        "userData is base64 of foobar"
    );
    assert_golden("azure/expected-windows.json", &windows);
    let linux = azure::parse(&read_fixture("azure/instance-linux.json")).expect("parses");
    assert_eq!(linux.user_data, None);
    assert_eq!(linux.public_ipv4, None, "empty publicIpAddress is none");
    assert_eq!(linux.zone, None, "empty zone is none");
    assert_golden("azure/expected-linux.json", &linux);
}

#[test]
fn azure_tags_list_and_tags_string_agree() {
    let list = azure::parse_tags_list(&read_fixture("azure/tags-list.json")).expect("parses");
    let text = azure::parse_tags(read_fixture_text("azure/tags.txt").trim());
    assert_eq!(list, text);
    assert_eq!(list.len(), 3);
    assert_eq!(list.get("Department").map(String::as_str), Some("IT"));
}

#[test]
fn openstack_config_drive() {
    let facts = openstack::parse(
        &read_fixture("openstack/openstack/latest/meta_data.json"),
        Some(&read_fixture("openstack/openstack/latest/user_data")),
    )
    .expect("parses");
    assert_golden("openstack/expected.json", &facts);
}

#[test]
fn nocloud_seed() {
    let facts = nocloud::parse(
        &read_fixture("nocloud/meta-data"),
        Some(&read_fixture("nocloud/user-data")),
    )
    .expect("parses");
    assert_eq!(facts.hostname.as_deref(), Some("myhost"));
    assert_golden("nocloud/expected.json", &facts);
}

#[test]
fn qemu_fw_cfg() {
    let fw = qemu::FwCfg {
        meta_data: Some(read_fixture("qemu/meta-data")),
        user_data: Some(read_fixture("qemu/user-data")),
        ..qemu::FwCfg::default()
    };
    let facts = qemu::parse(&fw, &qemu::Smbios::default()).expect("parses");
    assert_golden("qemu/expected.json", &facts);
}

#[test]
fn file_facts() {
    let path = golden::fixture("file/facts.yaml");
    let text = read_fixture_text("file/facts.yaml");
    let parsed = metadata::file::parse(&text, false, &path.display().to_string()).expect("parses");
    assert_eq!(
        parsed.user_data_file.as_deref(),
        Some(std::path::Path::new("cluster.yaml"))
    );
    let facts = parsed
        .into_facts("facts.yaml", Some(read_fixture_text("file/cluster.yaml")))
        .expect("facts");
    assert_golden("file/expected.json", &facts);
}

#[test]
fn debug_output_of_facts_never_contains_user_data() {
    let facts = azure::parse(&read_fixture("azure/instance-windows.json")).expect("parses");
    let shown = format!("{facts:?}");
    assert!(!shown.contains("foobar"), "{shown}");
    assert!(shown.contains("<6 bytes>"), "{shown}");
}
