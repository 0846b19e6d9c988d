//! Tier 1, etcd backups and restore end to end: three real agents back up
//! to S3 (moto, on a host of the test network), every host is destroyed,
//! and a new group of three with `etcd.restore: latest` brings the cluster
//! back from the newest snapshot.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use muster::backup::plan::SnapshotName;
use muster::cloud::aws::AwsClient;

use crate::support::cluster::Cluster;
use crate::support::etcd_direct;
use crate::support::moto;
use crate::support::netns::{Host, wait_until};

const BUCKET: &str = "muster-backups";
const CLUSTER: &str = "backup";
/// Values the size of a small Kubernetes object.
const VALUE_BYTES: usize = 1024;

/// Keys written before the backup: `BACKUP_TEST_KEYS` (the benchmark's
/// 10 000), else 200.
fn key_count() -> usize {
    std::env::var("BACKUP_TEST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn s3(endpoint: &str) -> AwsClient {
    moto::client(endpoint)
}

/// The cluster's snapshots in the bucket, oldest first (listed from the
/// cloud host: moto is only reachable there).
fn snapshots(cloud: &Host, endpoint: &str) -> Vec<SnapshotName> {
    cloud.block_on(async || {
        let objects = s3(endpoint)
            .list_objects("us-east-1", BUCKET, "tier1/")
            .await
            .expect("list the bucket");
        let mut names: Vec<SnapshotName> = objects
            .iter()
            .filter_map(|o| o.key.rsplit('/').next())
            .filter_map(|file| SnapshotName::parse(CLUSTER, file))
            .collect();
        names.sort();
        names
    })
}

/// Creates the bucket (moto takes an unsigned PUT).
fn create_bucket(cloud: &Host) {
    let addr = (cloud.ip(), 5000);
    cloud.in_netns(move || {
        let mut stream = TcpStream::connect(addr).expect("connect to moto");
        write!(
            stream,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: {}:5000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            addr.0
        )
        .expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "create bucket: {answer}");
    });
}

/// The revision of node `i`'s member (`etcdctl endpoint status`).
fn revision(c: &Cluster, i: usize) -> i64 {
    let out = c.etcdctl(i, &["endpoint", "status", "-w", "json"]);
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("endpoint status json");
    status[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

fn peers(c: &Cluster, hosts: std::ops::Range<u8>) -> String {
    let subnet = c.net.subnet();
    let prefix = subnet.trim_end_matches("0/24");
    let list: Vec<String> = hosts.map(|h| format!("\"{prefix}{h}\"")).collect();
    list.join(", ")
}

#[test]
fn backups_go_to_s3_and_a_new_group_restores_the_lost_cluster_from_the_newest() {
    // The old group: hosts .11-.13; the cloud host .14; the new group .15-.17.
    let mut c = Cluster::with_discovery(CLUSTER, 3, |_| {
        "  etcd:\n    backup:\n      to: s3://muster-backups/tier1\n      schedule: 2s\n      keep: 3\n      region: us-east-1\n\
         discovery:\n  static:\n    peers: [PEERS]\n"
            .to_string()
    });
    let old_peers = peers(&c, 11..14);
    c.rewrite_config(|t| t.replace("PEERS", &old_peers));
    let old: Vec<usize> = (0..3).map(|_| c.add_host()).collect();
    let cloud = c.net.add_host("cloud");
    let _moto = cloud.spawn(
        moto::binary(),
        &["-H", "0.0.0.0", "-p", "5000"],
        &[],
        "moto.log",
    );
    let endpoint = format!("http://{}:5000/", cloud.ip());
    let moto_ip = cloud.ip();
    wait_until(
        "moto answers",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || cloud.in_netns(|| TcpStream::connect((moto_ip, 5000)).is_ok()),
    )
    .expect("moto starts");
    create_bucket(&cloud);
    c.agent_env.extend([
        ("MUSTER_AWS_ENDPOINT".to_string(), endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".to_string(), moto::KEY.to_string()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            moto::SECRET_KEY.to_string(),
        ),
    ]);
    for &i in &old {
        c.start_agent(i);
    }
    let old_id = c.wait_for_cluster(&old, 3, Duration::from_secs(90));
    let keys = key_count();
    let endpoint0 = format!("https://{}:2379", c.nodes[old[0]].host.ip());
    let load = Instant::now();
    etcd_direct::put_many(&c.nodes[old[0]].host, &endpoint0, "k/", keys, VALUE_BYTES);
    eprintln!(
        "{keys} keys of {VALUE_BYTES} bytes written in {:.1}s",
        load.elapsed().as_secs_f64()
    );
    let written = revision(&c, old[0]);

    // A snapshot holding every write reaches the bucket; older ones are
    // pruned to `keep: 3` while the leader goes on taking them.
    wait_until(
        "a snapshot at or past the writes' revision, and the oldest pruned",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let names = snapshots(&cloud, &endpoint);
            names.last().is_some_and(|n| n.revision >= written)
                && names.len() == 3
                && names[0].revision >= written
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:#?}", snapshots(&cloud, &endpoint)));
    let leader_status = old
        .iter()
        .filter_map(|&i| c.status(i))
        .find(|s| s["backup"]["last"].is_object())
        .expect("the leader reports its last backup");
    assert_eq!(
        leader_status["backup"]["target"],
        "s3://muster-backups/tier1/backup"
    );
    let last = &leader_status["backup"]["last"];
    assert!(last["keys"].as_u64() >= Some(keys as u64), "{last:#}");
    eprintln!(
        "backup of {} keys: snapshot {} bytes, snapshot + check + upload {} ms",
        last["keys"], last["size_bytes"], last["took_ms"]
    );

    // Every machine of the group is lost.
    for &i in &old {
        c.destroy(i);
    }
    let newest = snapshots(&cloud, &endpoint)
        .pop()
        .expect("a snapshot survives the group");
    eprintln!("lost the group; newest snapshot {}", newest.file_name());

    // A new group with the same cluster name restores the newest.
    let new_peers = peers(&c, 15..18);
    c.rewrite_config(|t| {
        t.replace(&old_peers, &new_peers).replace(
            "      region: us-east-1\n",
            "      region: us-east-1\n    restore: latest\n",
        )
    });
    let new: Vec<usize> = (0..3).map(|_| c.add_host()).collect();
    let start = Instant::now();
    for &i in &new {
        c.start_agent(i);
    }
    let new_id = c.wait_for_cluster(&new, 3, Duration::from_secs(120));
    eprintln!(
        "restored: cluster {new_id} (was {old_id}) with 3 healthy voters {:.1}s after the new agents started",
        start.elapsed().as_secs_f64()
    );
    let back = c.keys(new[0], "k/");
    let expected: std::collections::BTreeSet<String> =
        (0..keys).map(|k| format!("k/key{k:05}")).collect();
    assert!(
        back == expected,
        "every key written before the snapshot is back: {} of {keys}",
        back.len()
    );
    // The revision moved on past the snapshot's (watchers relist).
    assert!(revision(&c, new[0]) > newest.revision + 1_000_000_000 - 1);
    for &i in &new {
        let status = c.status(i).expect("status");
        assert_eq!(
            status["backup"]["restored_from"],
            serde_json::Value::String(newest.file_name()),
            "node {i}: {status:#}"
        );
    }
}
