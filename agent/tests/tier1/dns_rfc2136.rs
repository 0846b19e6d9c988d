//! Tier 1: the rfc2136 provider against a real BIND 9 in its own network
//! namespace, checked with `dig` from another one: records in ExternalDNS's
//! exact format, a steady state with no writes, foreign records left alone,
//! a replaced node's record replaced, and a wrong TSIG key or zone refused
//! with a clear error and nothing written.

use muster::config::{Rfc2136, Secret, Tsig, TsigAlgorithm};
use muster::dns::records;
use muster::dns::{Fault, Provider, reconcile};

use crate::support::bind::{Bind, KEY_NAME, KEY_SECRET};
use crate::support::dns as dns_support;
use crate::support::netns::{Host, Net};

const ZONE: &str = "example.test";

fn provider(server: &str, secret: &str) -> Provider {
    Provider::Rfc2136(
        muster::dns::rfc2136::Rfc2136Provider::new(&Rfc2136 {
            server: server.to_string(),
            tsig: Tsig {
                key_name: KEY_NAME.into(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: Secret::new(secret.to_string()),
            },
        })
        .expect("provider"),
    )
}

#[test]
fn rfc2136_publishes_in_externaldns_format_and_respects_other_owners() {
    let net = Net::new("dns");
    let server_host = net.add_host("ns");
    let client = net.add_host("client");
    let bind = Bind::start(&server_host, ZONE);
    // The agent's side runs in the client's namespace: its sockets reach
    // only the test's own network.
    client.block_on(async || scenario(&bind, &client).await);
}

async fn scenario(bind: &Bind, client: &Host) {
    let dns = provider(&bind.server, KEY_SECRET);
    // Another owner's record and a hand-made one, inside our scope.
    bind.nsupdate(
        client,
        "update add other.nodes.example.test 60 A 192.0.2.7\n\
         update add a-other.nodes.example.test 300 TXT \"heritage=external-dns,external-dns/owner=someone-else\"\n\
         update add hand.nodes.example.test 60 A 192.0.2.8",
    );

    let names = dns_support::names(ZONE);
    let run = |api: &[&str], n: &[(&str, &str)]| {
        let (wanted, scope) =
            records::render(&names, &dns_support::ips(api), &dns_support::named(n));
        let dns = &dns;
        let owner = names.owner.clone();
        async move { reconcile(dns, ZONE, &wanted, &owner, &scope).await }
    };

    // First publish: the API, three nodes, a conflict for each foreign name.
    let all = [
        ("muster-1", "10.0.0.1"),
        ("muster-2", "10.0.0.2"),
        ("hand", "10.0.0.3"),
        ("other", "10.0.0.4"),
    ];
    let first = run(&["10.0.0.100"], &all).await.expect("publish");
    assert_eq!(first.changes.len(), 6, "{:#?}", first.changes);
    let conflicts: Vec<String> = first.conflicts.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        conflicts,
        [
            "hand.nodes.example.test: a A record exists without an ExternalDNS ownership record",
            "other.nodes.example.test: owned by ExternalDNS owner `someone-else`",
        ]
    );
    assert_eq!(
        bind.dig(client, &["+short", "A", "api.example.test"])
            .trim(),
        "10.0.0.100"
    );
    assert_eq!(
        bind.dig(client, &["+short", "TXT", "a-api.example.test"])
            .trim(),
        "\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api\""
    );
    assert_eq!(
        bind.dig(client, &["+short", "A", "muster-2.nodes.example.test"])
            .trim(),
        "10.0.0.2"
    );
    assert_eq!(
        bind.dig(client, &["+short", "TXT", "a-muster-2.nodes.example.test"])
            .trim(),
        "\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-nodes\""
    );
    assert_eq!(
        bind.dig(client, &["+short", "A", "hand.nodes.example.test"])
            .trim(),
        "192.0.2.8"
    );
    assert_eq!(
        bind.dig(client, &["+short", "A", "other.nodes.example.test"])
            .trim(),
        "192.0.2.7"
    );

    // Steady state: nothing to write.
    let before = bind.zone_dump(client);
    let again = run(&["10.0.0.100"], &all).await.expect("steady");
    assert!(again.changes.is_empty(), "{:#?}", again.changes);
    assert_eq!(bind.zone_dump(client), before);

    // muster-2 replaced by muster-5: its record and ownership go, the new
    // one comes; nobody else's record moves.
    let replaced = [
        ("muster-1", "10.0.0.1"),
        ("muster-5", "10.0.0.5"),
        ("hand", "10.0.0.3"),
        ("other", "10.0.0.4"),
    ];
    let swap = run(&["10.0.0.100"], &replaced).await.expect("replace");
    assert_eq!(swap.changes.len(), 4, "{:#?}", swap.changes);
    assert_eq!(
        bind.dig(client, &["+short", "A", "muster-2.nodes.example.test"])
            .trim(),
        ""
    );
    assert_eq!(
        bind.dig(client, &["+short", "TXT", "a-muster-2.nodes.example.test"])
            .trim(),
        ""
    );
    assert_eq!(
        bind.dig(client, &["+short", "A", "muster-5.nodes.example.test"])
            .trim(),
        "10.0.0.5"
    );
    assert_eq!(
        bind.dig(client, &["+short", "A", "hand.nodes.example.test"])
            .trim(),
        "192.0.2.8"
    );

    // A wrong key: a config error naming the TSIG field; nothing written.
    let before = bind.zone_dump(client);
    let wrong = provider(&bind.server, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let (wanted, scope) = records::render(
        &names,
        &dns_support::ips(&["10.0.0.200"]),
        &dns_support::named(&[]),
    );
    let e = reconcile(&wrong, ZONE, &wanted, "prod", &scope)
        .await
        .expect_err("a wrong key must be refused");
    assert!(
        matches!(e.fault, Fault::Config { field } if field.starts_with("dns.rfc2136.tsig")),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("rfc2136 (dns.rfc2136.tsig): zone transfer of `example.test`: the server rejected key `muster-test`"),
        "{e}"
    );
    let e = wrong
        .apply(ZONE, &swap.changes)
        .await
        .expect_err("an update with a wrong key must be refused");
    assert!(matches!(e.fault, Fault::Config { .. }), "{e:?}");
    assert_eq!(bind.zone_dump(client), before);

    // A zone the server does not serve.
    let e = reconcile(&dns, "nowhere.test", &[], "prod", &scope)
        .await
        .expect_err("unknown zone");
    assert!(
        matches!(e.fault, Fault::Config { field: "dns.zone" }),
        "{e:?}"
    );
    assert_eq!(bind.zone_dump(client), before);
}
