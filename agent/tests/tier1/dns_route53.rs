//! The route53 provider against moto (the AWS API emulator) on loopback,
//! through Muster's own SigV4 client: a hosted zone created in the test,
//! found by name; 200 node names (more than one 300-set page to list back);
//! a steady state with no writes; a replaced node; another owner's record
//! left alone. Fails (never skips) when moto is not installed.
//!
//! moto applies a batch change by change, not atomically, and its DELETE
//! matching is looser than Route 53's (research notes, §5): this tests the
//! request shapes, paging and ownership, not Route 53's transactions.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use muster::cloud::aws::{AwsClient, Credentials, InstanceSession, ROUTE53};
use muster::dns::records;
use muster::dns::route53::Route53Provider;
use muster::dns::{Fault, Provider, reconcile};

use crate::support::dns as dns_support;
use crate::support::moto::{self, Moto, first};

const ZONE: &str = "example.com";
const NODES: usize = 200;

fn client(moto: &Moto) -> AwsClient {
    moto::quick_client(
        moto,
        "eu-west-1",
        Credentials::new(moto::KEY, moto::SECRET_KEY, None),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_publishes_pages_and_respects_other_owners() {
    let moto = Moto::start();
    let aws = client(&moto);
    let create = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <Name>{ZONE}.</Name><CallerReference>muster-test</CallerReference></CreateHostedZoneRequest>"
    );
    let created = aws
        .rest(
            &ROUTE53,
            "CreateHostedZone",
            "POST",
            "/2013-04-01/hostedzone",
            create,
        )
        .await
        .expect("CreateHostedZone");
    let zone_id = first(&created, "Id");
    // Another owner's record inside our scope.
    let foreign = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Changes>\
        <Change><Action>CREATE</Action><ResourceRecordSet><Name>node-0.nodes.example.com.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.9</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>\
        <Change><Action>CREATE</Action><ResourceRecordSet><Name>a-node-0.nodes.example.com.</Name><Type>TXT</Type><TTL>300</TTL><ResourceRecords><ResourceRecord><Value>\"heritage=external-dns,external-dns/owner=other\"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>\
        </Changes></ChangeBatch></ChangeResourceRecordSetsRequest>";
    aws.rest(
        &ROUTE53,
        "ChangeResourceRecordSets",
        "POST",
        &format!(
            "/2013-04-01/hostedzone/{}/rrset",
            zone_id.trim_start_matches("/hostedzone/")
        ),
        foreign.to_string(),
    )
    .await
    .expect("seed a foreign record");

    // Found by name (no hostedZoneId configured).
    let dns = Provider::Route53(Route53Provider::new(
        InstanceSession::with_client(client(&moto)),
        None,
    ));
    let names = dns_support::names(ZONE);
    let vip: BTreeSet<IpAddr> = ["10.0.0.100".parse().expect("ip")].into();
    let (wanted, scope) = records::render(&names, &vip, &dns_support::nodes(0..NODES));
    let t = Instant::now();
    let first_run = reconcile(&dns, ZONE, &wanted, &names.owner, &scope)
        .await
        .expect("publish");
    eprintln!(
        "route53 (moto): {} changes for {} names in {:.2} s",
        first_run.changes.len(),
        wanted.len(),
        t.elapsed().as_secs_f64()
    );
    // The API and 199 nodes, each with its TXT; node-0 is someone else's.
    assert_eq!(
        first_run.changes.len(),
        2 * NODES,
        "{:?}",
        first_run.conflicts
    );
    dns_support::assert_only_node0_conflict(&first_run, ZONE);

    // Listing back pages past 300 sets and finds everything in place.
    let listed = dns.list(ZONE).await.expect("list");
    assert!(listed.len() > 300, "{} sets", listed.len());
    let txt = listed
        .iter()
        .find(|s| s.name == "a-api.example.com")
        .expect("the API's ownership record");
    assert_eq!(
        txt.values.iter().next().map(String::as_str),
        Some(
            "heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api"
        )
    );
    assert_eq!(txt.ttl, 300);
    let node0 = listed
        .iter()
        .find(|s| s.name == "node-0.nodes.example.com")
        .expect("node-0");
    assert_eq!(
        node0.values.iter().next().map(String::as_str),
        Some("192.0.2.9")
    );

    // Steady state: no change to write.
    let again = reconcile(&dns, ZONE, &wanted, &names.owner, &scope)
        .await
        .expect("steady");
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    // node-7 replaced by node-200 (a new name and address).
    let replaced = dns_support::node7_replaced(NODES);
    let (wanted, scope) = records::render(&names, &vip, &replaced);
    let swap = reconcile(&dns, ZONE, &wanted, &names.owner, &scope)
        .await
        .expect("replace");
    assert_eq!(swap.changes.len(), 4, "{:?}", swap.changes);
    let listed = dns.list(ZONE).await.expect("list");
    assert!(
        !listed.iter().any(|s| s.name.contains("node-7.")),
        "node-7 is gone"
    );
    assert!(
        listed
            .iter()
            .any(|s| s.name == "node-200.nodes.example.com")
    );

    // A zone the role cannot see.
    let e = reconcile(&dns, "elsewhere.org", &[], "prod", &scope)
        .await
        .expect_err("unknown zone");
    assert!(
        matches!(e.fault, Fault::Config { field: "dns.zone" }),
        "{e:?}"
    );
}
