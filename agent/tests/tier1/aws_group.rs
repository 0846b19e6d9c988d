//! Tier 1, cloud-group discovery end to end: moto (the AWS API emulator) runs
//! in a "cloud" host of the test network; an Auto Scaling group of 5
//! instances is created there; each instance becomes a host with the
//! instance's private IP, running the real `muster agent` that discovers its
//! peers through DescribeAutoScalingGroups + DescribeInstances (SigV4).
//! Checks: 3 etcd members named by instance id + 2 workers; then an etcd
//! member's instance is terminated, the group launches a replacement, and the
//! new agent takes the dead member's place (removed at once: its machine left
//! the group, no grace period needed).

use crate::support::cluster;
use crate::support::moto;
use crate::support::netns;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster::Cluster;
use muster::cloud::aws::{AUTOSCALING, AwsClient, AwsOptions, Credentials};
use muster::discovery::aws_asg::list_group;
use muster::discovery::{Lifecycle, Peer};
use netns::{Host, wait_until};

const GROUP: &str = "muster-cp";
const KEY: &str = "AKIDMUSTERTEST";
const SECRET_KEY: &str = "muster-test-secret";

fn aws(endpoint: &str) -> AwsClient {
    let mut opts = AwsOptions::new("us-east-1");
    opts.endpoint = Some(url::Url::parse(endpoint).expect("url"));
    AwsClient::new(opts, Credentials::new(KEY, SECRET_KEY, None)).expect("client")
}

/// Runs AWS calls from inside the cloud host's namespace (moto is only
/// reachable there).
fn in_cloud<T: Send>(cloud: &Host, f: impl AsyncFnOnce() -> T + Send) -> T {
    cloud.in_netns(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
}

fn in_service(cloud: &Host, endpoint: &str) -> Vec<Peer> {
    in_cloud(cloud, async || {
        let view = list_group(&aws(endpoint), GROUP).await.expect("list group");
        view.peers
            .into_iter()
            .filter(|p| p.lifecycle == Lifecycle::InService)
            .collect()
    })
}

/// A host for an instance: the instance's private IP on its interface and
/// facts as AWS IMDS would give them.
fn add_instance(c: &mut Cluster, peer: &Peer) -> usize {
    let i = c.add_host_with_facts(|_, _| {
        format!(
            "instance_id: {}\nprivate_ipv4: {}\nregion: us-east-1\nzone: us-east-1a\ngroup: {GROUP}\n",
            peer.id, peer.address
        )
    });
    // Only the instance's address: etcd checks a peer's certificate against
    // the address it connects from.
    let host = &c.nodes[i].host;
    host.ip_cmd(&["addr", "del", &format!("{}/24", host.ip()), "dev", "eth0"]);
    host.ip_cmd(&[
        "addr",
        "add",
        &format!("{}/24", peer.address),
        "dev",
        "eth0",
    ]);
    i
}

#[test]
fn an_autoscaling_group_assembles_itself_and_replaces_a_terminated_member() {
    let mut c = Cluster::with_discovery("asg", 3, |_| {
        format!("discovery:\n  cloudGroup:\n    provider: aws\n    name: {GROUP}\n")
    });
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

    // The group's subnet is the test network, so instance IPs are routable here.
    let [a, b, k, _] = c
        .net
        .subnet()
        .split(['.', '/'])
        .filter_map(|x| x.parse::<u8>().ok())
        .collect::<Vec<_>>()[..4]
        .try_into()
        .expect("subnet");
    let subnet = format!("{a}.{b}.{k}.0/24");
    in_cloud(&cloud, async || {
        moto::create_group(&aws(&endpoint), GROUP, 5, "10.200.0.0/16", &subnet).await
    });
    let peers = in_service(&cloud, &endpoint);
    assert_eq!(peers.len(), 5, "{peers:#?}");

    c.agent_env.extend([
        ("MUSTER_AWS_ENDPOINT".to_string(), endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".to_string(), KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
    ]);
    let start = Instant::now();
    for peer in &peers {
        let i = add_instance(&mut c, peer);
        c.start_agent(i);
    }
    // The first three in (launch time, instance id) order form etcd.
    let mut order = peers.clone();
    order.sort_by(muster::roles::compare);
    let first: Vec<usize> = (0..3)
        .map(|n| {
            peers
                .iter()
                .position(|p| p.id == order[n].id)
                .expect("index")
        })
        .collect();
    c.wait_for_cluster(&first, 3, Duration::from_secs(90));
    eprintln!(
        "5 agents via the AWS group API (10 s settle time) -> 3 healthy voting members: {:?}",
        start.elapsed()
    );
    for (i, peer) in peers.iter().enumerate() {
        let want = if first.contains(&i) {
            "control-plane"
        } else {
            "worker"
        };
        wait_until(
            "roles settle",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || c.status(i).is_some_and(|s| s["role"] == want),
        )
        .unwrap_or_else(|e| panic!("{} ({}): {e}: {:?}", peer.id, peer.address, c.status(i)));
    }
    let names: Vec<String> = c.status(first[0]).expect("status")["etcd"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default().to_string())
        .collect();
    for n in &first {
        assert!(
            names.contains(&peers[*n].id),
            "members are named by instance id: {names:?}"
        );
    }

    // Terminate one etcd member's instance; the group launches a replacement.
    let victim = first[1];
    in_cloud(&cloud, async || {
        aws(&endpoint)
            .query(
                &AUTOSCALING,
                "TerminateInstanceInAutoScalingGroup",
                &moto::params(&[
                    ("InstanceId", &peers[victim].id),
                    ("ShouldDecrementDesiredCapacity", "false"),
                ]),
            )
            .await
            .expect("terminate")
    });
    c.destroy(victim);
    let mut replacement = None;
    wait_until(
        "the group launches a replacement",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            replacement = in_service(&cloud, &endpoint)
                .into_iter()
                .find(|p| peers.iter().all(|q| q.id != p.id));
            replacement.is_some()
        },
    )
    .expect("replacement instance");
    let replacement = replacement.expect("replacement");
    let new = add_instance(&mut c, &replacement);
    let started = Instant::now();
    c.start_agent(new);
    let survivors: Vec<usize> = first
        .iter()
        .copied()
        .filter(|i| *i != victim)
        .chain([new])
        .collect();
    c.wait_for_cluster(&survivors, 3, Duration::from_secs(90));
    eprintln!(
        "terminated member's replacement agent start -> healthy voting member: {:?}",
        started.elapsed()
    );
    assert_eq!(c.status(new).expect("status")["role"], "control-plane");
}
