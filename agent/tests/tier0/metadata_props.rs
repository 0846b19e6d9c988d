//! Property tests: whatever bytes a metadata source hands us, the pure parse
//! functions return a value or an error — never a panic — and errors never
//! echo user data.

use std::collections::BTreeMap;

use muster::cmdline::KernelCmdline;
use muster::metadata::{MetadataError, ProviderKind};
use muster::metadata::{aws, azure, file, gce, metal, nocloud, openstack, qemu, seed};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    }
}

/// JSON-ish text: more likely than random bytes to get deep into the parsers.
fn jsonish() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
    ];
    let keys = prop_oneof![
        Just("id"),
        Just("zone"),
        Just("compute"),
        Just("vmId"),
        Just("userData"),
        Just("network"),
        Just("interface"),
        Just("ipv4"),
        Just("ipAddress"),
        Just("privateIpAddress"),
        Just("uuid"),
        Just("meta"),
        Just("networkInterfaces"),
        Just("accessConfigs"),
        Just("externalIp"),
        Just("ip"),
        Just("attributes"),
        Just("user-data"),
        Just("created-by"),
        Just("tags"),
        Just("tagsList"),
        Just("name"),
        Just("value"),
        Just("instanceId"),
        Just("region"),
        Just("privateIp"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((keys.clone(), inner), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

/// YAML-ish text built from the keys the seed and file parsers know.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("instance-id"),
        Just("local-hostname"),
        Just("hostname"),
        Just("private-ipv4"),
        Just("local-ipv4"),
        Just("zone"),
        Just("tags"),
        Just("instance_id"),
        Just("private_ipv4"),
        Just("user_data"),
        Just("user_data_file"),
        Just("provider"),
        Just("group"),
        Just("x"),
    ];
    let value = prop_oneof![
        "[a-z0-9.:/ -]{0,16}",
        Just("{a: 1}".to_string()),
        Just("[1, 2]".to_string()),
        Just("|\n  text".to_string()),
        Just("~".to_string()),
        Just("\"quoted\"".to_string()),
        Just("*anchor".to_string()),
        Just("&a b".to_string()),
    ];
    prop::collection::vec((key, value), 0..6).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect::<String>()
    })
}

fn no_secret(e: &MetadataError, secret: &str) {
    assert!(
        !e.to_string().contains(secret),
        "error echoes user data: {e}"
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gce_and_azure_and_openstack_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = gce::parse(&bytes);
        let _ = azure::parse(&bytes);
        let _ = azure::parse_tags_list(&bytes);
        let _ = openstack::parse(&bytes, Some(&bytes));
        let _ = nocloud::parse(&bytes, Some(&bytes));
    }

    #[test]
    fn json_parsers_never_panic_on_jsonish(text in jsonish()) {
        let _ = gce::parse(text.as_bytes());
        let _ = azure::parse(text.as_bytes());
        let _ = azure::parse(format!("{{\"compute\":{text},\"network\":{text}}}").as_bytes());
        let _ = openstack::parse(text.as_bytes(), None);
        let _ = aws::parse_identity_document(&text);
        let _ = file::parse(&text, true, "f.json");
    }

    #[test]
    fn aws_parse_never_panics(
        id in prop::option::of(".{0,20}"),
        ip in prop::option::of(".{0,20}"),
        pubip in prop::option::of("[0-9.]{0,16}"),
        doc in prop::option::of(".{0,40}"),
        listing in ".{0,60}",
        user in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    ) {
        let r = aws::Responses {
            instance_id: id,
            local_ipv4: ip,
            public_ipv4: pubip,
            identity_document: doc,
            tags: aws::parse_tag_keys(&listing).into_iter().map(|k| (k.clone(), k)).collect(),
            user_data: user,
            ..aws::Responses::default()
        };
        let _ = aws::parse(&r);
    }

    #[test]
    fn yaml_parsers_never_panic(text in yamlish(), raw in ".{0,200}") {
        for t in [&text, &raw] {
            let _ = seed::parse_meta_data(ProviderKind::Nocloud, "meta-data", t);
            let _ = nocloud::parse(t.as_bytes(), None);
            let _ = file::parse(t, false, "f.yaml").map(|f| f.into_facts("f.yaml", None));
            let fw = qemu::FwCfg { meta_data: Some(t.as_bytes().to_vec()), ..qemu::FwCfg::default() };
            let _ = qemu::parse(&fw, &qemu::Smbios::default());
        }
    }

    #[test]
    fn small_helpers_never_panic(s in ".{0,80}") {
        let _ = gce::split_zone(&s);
        let _ = gce::group_from_created_by(&s);
        let _ = azure::parse_tags(&s);
        let _ = qemu::parse_serial(&s);
        let _ = qemu::serial_has_seed(&s);
        let smbios = qemu::Smbios { product_uuid: Some(s.clone()), product_serial: Some(s.clone()) };
        let _ = qemu::parse(&qemu::FwCfg::default(), &smbios);
        let cmdline = KernelCmdline::parse(&s);
        let _ = metal::config_source(&cmdline);
        let machine = metal::LocalMachine {
            etc_hostname: Some(s.clone()),
            machine_id: Some(s.clone()),
            product_uuid: Some(s.clone()),
        };
        let _ = metal::parse(&cmdline, &machine, None);
        let _ = muster::metadata::parse_platform(&s);
    }

    #[test]
    fn split_zone_round_trips_documented_paths(region in "[a-z]{2,8}-[a-z]{2,9}[0-9]", letter in "[a-f]", project in 1u64..) {
        let (zone, got) = gce::split_zone(&format!("projects/{project}/zones/{region}-{letter}"));
        prop_assert_eq!(zone, format!("{region}-{letter}"));
        prop_assert_eq!(got, Some(region));
    }

    #[test]
    fn azure_tag_strings_round_trip(tags in prop::collection::btree_map("[A-Za-z0-9_]{1,8}", "[A-Za-z0-9_ ]{0,8}", 0..5)) {
        let text: Vec<String> = tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let want: BTreeMap<String, String> = tags.into_iter().map(|(k, v)| (k, v.trim().to_string())).collect();
        prop_assert_eq!(azure::parse_tags(&text.join(";")), want);
    }

    #[test]
    fn errors_never_echo_user_data(secret in "[a-z]{12}") {
        // Invalid base64 around the secret.
        let body = format!(r#"{{"compute":{{"vmId":"v","userData":"!{secret}!"}}}}"#);
        if let Err(e) = azure::parse(body.as_bytes()) { no_secret(&e, &secret); }
        // A facts file with inline user data and a typo elsewhere.
        let text = format!("instance_id: a\nuser_data: {secret}\nbogus: 1\n");
        if let Err(e) = file::parse(&text, false, "f.yaml") { no_secret(&e, &secret); }
        // Gzip magic followed by the secret.
        let mut gz = vec![0x1f, 0x8b];
        gz.extend_from_slice(secret.as_bytes());
        if let Err(e) = nocloud::parse(b"instance-id: i\n", Some(&gz)) { no_secret(&e, &secret); }
    }
}
