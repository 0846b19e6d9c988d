//! An AWS Auto Scaling group for tier-1 tests: moto runs in a "cloud" host
//! of the test network, the group's subnet is the network's, and each
//! instance becomes a host with the instance's private IP running the real
//! agent (discovery through the group API, SigV4).

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use muster::cloud::aws::AwsClient;
use muster::discovery::aws_asg::list_group;
use muster::discovery::{Lifecycle, Peer};

use super::cluster::Cluster;
use super::moto;
use super::netns::{Host, Proc, wait_until};

pub use super::moto::{KEY, SECRET_KEY};

/// moto in `cloud` on port 5000.
pub struct CloudApi {
    pub endpoint: String,
    _moto: Proc,
}

/// Which moto to run.
pub enum Moto {
    /// moto as shipped.
    Plain,
    /// moto with termination lifecycle hooks (`moto_lifecycle.py`).
    WithLifecycleHooks,
}

impl CloudApi {
    pub fn start(cloud: &Host, which: Moto) -> CloudApi {
        let server = moto::binary();
        let args = ["-H", "0.0.0.0", "-p", "5000"];
        let proc = match which {
            Moto::Plain => cloud.spawn(&server, &args, &[], "moto.log"),
            Moto::WithLifecycleHooks => {
                let python = server.with_file_name("python3");
                let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/support/moto_lifecycle.py");
                let mut all = vec![script.to_str().expect("utf-8 path")];
                all.extend(args);
                cloud.spawn(&python, &all, &[], "moto.log")
            }
        };
        let ip = cloud.ip();
        wait_until(
            "moto answers",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || cloud.in_netns(|| TcpStream::connect((ip, 5000)).is_ok()),
        )
        .expect("moto starts");
        CloudApi {
            endpoint: format!("http://{ip}:5000/"),
            _moto: proc,
        }
    }

    /// The agents' environment: AWS calls go to moto with test keys.
    pub fn agent_env(&self) -> [(String, String); 3] {
        [
            ("MUSTER_AWS_ENDPOINT".to_string(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".to_string(), KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
        ]
    }
}

/// A cluster that discovers its peers through the Auto Scaling group
/// `group` (created with `desired` instances in the test network's subnet),
/// moto in a "cloud" host of its network, and the agents' environment
/// pointed at it. No agent is started.
pub fn start(hint: &str, group: &str, desired: u32, which: Moto) -> (Cluster, Host, CloudApi) {
    start_with(hint, group, desired, which, |_| String::new())
}

/// [`start`], with more of the cluster config (`extra`, given the test
/// network: an `apiEndpoint` on one of its spare addresses, say).
pub fn start_with(
    hint: &str,
    group: &str,
    desired: u32,
    which: Moto,
    extra: impl FnOnce(&super::netns::Net) -> String,
) -> (Cluster, Host, CloudApi) {
    let mut c = Cluster::with_discovery(hint, 3, |net| {
        format!(
            "discovery:\n  cloudGroup:\n    provider: aws\n    name: {group}\n{}",
            extra(net)
        )
    });
    let cloud = c.net.add_host("cloud");
    let api = CloudApi::start(&cloud, which);
    let subnet = subnet_of(&c);
    in_cloud(&cloud, async || {
        super::moto::create_group(
            &aws(&api.endpoint),
            group,
            desired,
            "10.200.0.0/16",
            &subnet,
        )
        .await
    });
    c.agent_env.extend(api.agent_env());
    (c, cloud, api)
}

/// TerminateInstanceInAutoScalingGroup without lowering the desired
/// capacity: the group launches a replacement.
pub fn terminate(cloud: &Host, endpoint: &str, instance_id: &str) {
    in_cloud(cloud, async || {
        aws(endpoint)
            .query(
                &muster::cloud::aws::AUTOSCALING,
                "TerminateInstanceInAutoScalingGroup",
                &super::moto::params(&[
                    ("InstanceId", instance_id),
                    ("ShouldDecrementDesiredCapacity", "false"),
                ]),
            )
            .await
            .expect("TerminateInstanceInAutoScalingGroup")
    });
}

pub fn aws(endpoint: &str) -> AwsClient {
    moto::client(endpoint)
}

/// Runs AWS calls from inside the cloud host's namespace (moto is only
/// reachable there).
pub fn in_cloud<T: Send>(cloud: &Host, f: impl AsyncFnOnce() -> T + Send) -> T {
    cloud.block_on(f)
}

/// The group's peers as the agents see them.
pub fn listed(cloud: &Host, endpoint: &str, group: &str) -> Vec<Peer> {
    in_cloud(cloud, async || {
        list_group(&aws(endpoint), group)
            .await
            .expect("list group")
            .peers
    })
}

pub fn in_service(cloud: &Host, endpoint: &str, group: &str) -> Vec<Peer> {
    listed(cloud, endpoint, group)
        .into_iter()
        .filter(|p| p.lifecycle == Lifecycle::InService)
        .collect()
}

/// The test network's subnet, as the group's subnet (instance IPs are
/// then routable on the bridge).
pub fn subnet_of(c: &Cluster) -> String {
    let [a, b, k, _] = c
        .net
        .subnet()
        .split(['.', '/'])
        .filter_map(|x| x.parse::<u8>().ok())
        .collect::<Vec<_>>()[..4]
        .try_into()
        .expect("subnet");
    format!("{a}.{b}.{k}.0/24")
}

/// A host for an instance: the instance's private IP on its interface and
/// facts as AWS IMDS would give them.
pub fn add_instance(c: &mut Cluster, peer: &Peer, group: &str) -> usize {
    let i = c.add_host_with_facts(|_, _| {
        format!(
            "instance_id: {}\nprivate_ipv4: {}\nregion: us-east-1\nzone: us-east-1a\ngroup: {group}\n",
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
