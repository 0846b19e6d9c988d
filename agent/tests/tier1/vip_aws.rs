//! Tier 1: the VIP in AWS mode against moto (the AWS API emulator). Three
//! candidates on a bridge, each a real etcd 3.5 member and a VIP manager
//! whose mover moves a secondary private IP between the candidates' EC2
//! network interfaces (AssignPrivateIpAddresses + AllowReassignment) and
//! holds the /32 on eth0. moto runs in the observer host; the instances are
//! those of an Auto Scaling group created there.
//!
//! Asserted: after every takeover exactly one ENI in EC2 holds the VIP, the
//! new holder's; the address is on exactly one candidate; the ARP observer
//! never sees two MACs. Not verified here: real AWS's reassignment timing
//! (moto answers in milliseconds and ignores AllowReassignment, which is why
//! the mover also takes the VIP off stale ENIs; see src/vip/aws.rs).

use crate::support::moto;
use crate::support::netns;
use crate::support::vip_lab;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use muster::cloud::aws::AwsClient;
use muster::cloud::aws::network_interfaces::describe_network_interfaces;
use muster::discovery::aws_asg::list_group;
use muster::vip::VipRole;
use netns::{Proc, wait_until};
use vip_lab::{AwsTarget, Lab, LabMode};

const GROUP: &str = "muster-cp";
const PORT: u16 = 5000;
const ELECT: Duration = Duration::from_secs(30);

struct AwsLab {
    lab: Lab,
    endpoint: url::Url,
    instance_ids: Vec<String>,
    _moto: Proc,
}

fn client(endpoint: &url::Url) -> AwsClient {
    moto::client(endpoint.as_str())
}

impl AwsLab {
    fn new(hint: &str) -> AwsLab {
        let mut lab = Lab::with_mode(hint, 3, LabMode::Aws);
        let obs = lab.observer.clone();
        let moto = obs.spawn(
            moto::binary(),
            &["-H", "0.0.0.0", "-p", "5000"],
            &[],
            "moto.log",
        );
        let ip = obs.ip();
        wait_until(
            "moto answers",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || obs.in_netns(|| TcpStream::connect((ip, PORT)).is_ok()),
        )
        .unwrap_or_else(|e| panic!("{e}: {}", moto.log()));
        let endpoint = url::Url::parse(&format!("http://{ip}:{PORT}/")).expect("url");
        let ids = {
            let endpoint = endpoint.clone();
            obs.in_netns(move || {
                rt().block_on(async move {
                    let c = client(&endpoint);
                    moto::create_group(&c, GROUP, 3, "10.0.0.0/16", "10.0.1.0/24").await;
                    let view = list_group(&c, GROUP).await.expect("list group");
                    view.peers.into_iter().map(|p| p.id).collect::<Vec<_>>()
                })
            })
        };
        assert_eq!(ids.len(), 3, "{ids:?}");
        lab.aws = Some(AwsTarget {
            endpoint: endpoint.clone(),
            instance_ids: ids.clone(),
            key: moto::KEY.into(),
            secret_key: moto::SECRET_KEY.into(),
        });
        AwsLab {
            lab,
            endpoint,
            instance_ids: ids,
            _moto: moto,
        }
    }

    /// Candidates whose instance's interfaces hold the VIP in EC2.
    fn ec2_holders(&self) -> Vec<usize> {
        let (endpoint, vip, ids) = (
            self.endpoint.clone(),
            self.lab.vip,
            self.instance_ids.clone(),
        );
        self.lab.observer.in_netns(move || {
            rt().block_on(async move {
                let c = client(&endpoint);
                let mut out = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let enis = describe_network_interfaces(&c, "attachment.instance-id", id)
                        .await
                        .expect("describe network interfaces");
                    if enis.iter().any(|e| e.holds(vip)) {
                        out.push(i);
                    }
                }
                out
            })
        })
    }

    /// Waits until exactly one running candidate is the holder: its role,
    /// the address on its interface, and its ENI alone holding the VIP.
    fn wait_for_holder(&self, timeout: Duration) -> usize {
        let mut holder = None;
        wait_until(
            "one VIP holder, alone in EC2",
            timeout,
            Duration::from_millis(50),
            || {
                let roles: Vec<usize> = (0..3)
                    .filter(|&i| {
                        self.lab.candidates[i]
                            .as_ref()
                            .is_some_and(|c| *c.role.borrow() == VipRole::Holder)
                    })
                    .collect();
                holder = match roles.as_slice() {
                    [i] if self.lab.holders_now().contains(i) && self.ec2_holders() == [*i] => {
                        Some(*i)
                    }
                    _ => None,
                };
                holder.is_some()
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}; with the address: {:?}; in EC2: {:?}",
                self.lab.holders_now(),
                self.ec2_holders()
            )
        });
        holder.expect("holder")
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_secondary_ip_follows_the_holder_through_a_crash_and_a_clean_stop() {
    let mut aws = AwsLab::new("vipaws");
    let since = Instant::now();
    for i in 0..3 {
        aws.lab.start(i);
    }
    let first = aws.wait_for_holder(ELECT);
    eprintln!(
        "holder {} ({})",
        aws.lab.hosts[first].name(),
        aws.instance_ids[first]
    );

    // Crash: the agent vanishes and the machine drops off the network; EC2
    // still lists the VIP on its interface until the next holder takes it.
    aws.lab.kill(first);
    aws.lab.hosts[first].link_down();
    let killed = Instant::now();
    let second = aws.wait_for_holder(ELECT);
    assert_ne!(second, first);
    eprintln!(
        "crash of {}: VIP on {}'s interface alone after {:?}",
        aws.lab.hosts[first].name(),
        aws.lab.hosts[second].name(),
        killed.elapsed()
    );
    // The machine comes back (a reboot clears the address) and campaigns.
    aws.lab.wipe_vip(first);
    aws.lab.hosts[first].link_up();
    aws.lab.start(first);

    aws.lab.stop(second);
    let stopped = Instant::now();
    let third = aws.wait_for_holder(ELECT);
    assert_ne!(third, second);
    eprintln!("clean stop: VIP moved in EC2 after {:?}", stopped.elapsed());
    assert_eq!(aws.lab.holders_now(), vec![third]);
    aws.lab.assert_one_mac_at_a_time(since);
}
