//! Tier 1, a rolling replacement through an Auto Scaling group with a
//! termination lifecycle hook: three real agents, a writer doing quorum
//! writes without pause, and every member replaced one at a time by
//! TerminateInstanceInAutoScalingGroup. Each leaving agent hands off (moves
//! leadership, removes its own member) and completes the hook; the group
//! then launches the replacement, which joins. moto lacks the hook's wait
//! state, so it runs with `support/moto_lifecycle.py` (AWS's documented
//! Terminating:Wait -> CompleteLifecycleAction; everything else is moto).
//!
//! The agents also hold the API VIP (ARP mode on the test bridge), sampled
//! every 100 ms from their interfaces.
//!
//! Checks: no acknowledged write lost, one cluster id throughout, the
//! member was out of etcd before its machine died, a leaving VIP holder
//! handed the VIP on before it removed its member, and never two holders
//! in one sample. Prints each step's longest write gap and the longest time
//! no machine held the VIP (the unavailability a client saw).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::support::asg_lab::{self, Moto, add_instance, aws, in_cloud};
use crate::support::etcd_direct::ClientTls;
use crate::support::moto;
use crate::support::netns::wait_until;
use muster::cloud::aws::AUTOSCALING;

const GROUP: &str = "muster-roll";

/// What the writer saw.
#[derive(Default)]
struct Writes {
    /// Keys whose put was acknowledged.
    acked: Vec<String>,
    /// When each acknowledged put returned.
    at: Vec<Instant>,
    failed: usize,
    /// When and why attempts failed (the first ones of each gap explain it).
    errors: Vec<(Instant, String)>,
}

impl Writes {
    /// The longest time without an acknowledged write between `from` and `to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in self.at.iter().copied().filter(|t| *t > from && *t <= to) {
            gap = gap.max(t - last);
            last = t;
        }
        gap.max(to.saturating_duration_since(last))
    }
}

/// Puts `w/NNNNNN` one after another until `stop`. Like etcd's own
/// clients, it sticks to the endpoint that answers and moves to the next one
/// when a put fails, so a gap is the cluster's, not one dead endpoint's.
/// A failed put is retried under a new key.
async fn write_until(
    tls: &ClientTls,
    endpoints: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    writes: &Mutex<Writes>,
) {
    let mut n = 0u64;
    let mut at = 0usize;
    let mut client: Option<(String, Client)> = None;
    while !stop.load(Ordering::Relaxed) {
        let eps = endpoints.lock().expect("endpoints").clone();
        if client.as_ref().is_none_or(|(ep, _)| !eps.contains(ep)) {
            let ep = eps[at % eps.len()].clone();
            match Client::connect([ep.as_str()], Some(tls.options())).await {
                Ok(c) => client = Some((ep, c)),
                Err(e) => {
                    let mut w = writes.lock().expect("writes");
                    w.failed += 1;
                    w.errors
                        .push((Instant::now(), format!("connect {ep}: {e}")));
                    at += 1;
                    continue;
                }
            }
        }
        let Some((ep, c)) = client.as_mut() else {
            continue;
        };
        let key = format!("w/{n:06}");
        n += 1;
        match tokio::time::timeout(Duration::from_secs(3), c.put(key.as_str(), "v", None)).await {
            Ok(Ok(_)) => {
                let mut w = writes.lock().expect("writes");
                w.acked.push(key);
                w.at.push(Instant::now());
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in 3 s".to_string(),
                };
                let mut w = writes.lock().expect("writes");
                w.failed += 1;
                w.errors
                    .push((Instant::now(), format!("put via {ep}: {why}")));
                drop(w);
                client = None;
                at += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every key under `w/`, read (linearizably) from the final members.
async fn read_keys(tls: &ClientTls, endpoints: Vec<String>) -> BTreeSet<String> {
    let mut client = Client::connect(endpoints, Some(tls.options()))
        .await
        .expect("connect to the final cluster");
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let answer = client.get("w/", Some(options)).await.expect("read w/");
    answer
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// The names of the cluster's members, as etcd lists them.
async fn member_names(tls: &ClientTls, endpoints: Vec<String>) -> Vec<String> {
    let mut client = Client::connect(endpoints, Some(tls.options()))
        .await
        .expect("connect to the survivors");
    let list = client.member_list().await.expect("member list");
    list.members()
        .iter()
        .map(|m| m.name().to_string())
        .collect()
}

/// Who held the VIP, sampled from the members' interfaces.
#[derive(Default)]
struct VipSamples {
    /// When, and the names of the hosts that had the address.
    seen: Vec<(Instant, Vec<String>)>,
}

impl VipSamples {
    fn within(&self, from: Instant, to: Instant) -> impl Iterator<Item = &(Instant, Vec<String>)> {
        self.seen
            .iter()
            .filter(move |(t, _)| *t >= from && *t <= to)
    }

    /// The longest run of samples with no holder, from its first empty
    /// sample to the next sample with a holder (or `to`).
    fn longest_without_holder(&self, from: Instant, to: Instant) -> Duration {
        let mut empty_since: Option<Instant> = None;
        let mut longest = Duration::ZERO;
        for (t, holders) in self.within(from, to) {
            match (holders.is_empty(), empty_since) {
                (true, None) => empty_since = Some(*t),
                (false, Some(since)) => {
                    longest = longest.max(*t - since);
                    empty_since = None;
                }
                _ => {}
            }
        }
        empty_since.map_or(longest, |since| longest.max(to - since))
    }

    fn holder_at(&self, at: Instant) -> Option<String> {
        self.seen
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .and_then(|(_, h)| h.first().cloned())
    }

    fn doubles(&self) -> Vec<&(Instant, Vec<String>)> {
        self.seen.iter().filter(|(_, h)| h.len() > 1).collect()
    }
}

/// Samples `hosts` every 100 ms until `stop`. The test removes a host
/// from the list (under its lock) before it destroys it.
fn sample_vip(
    vip: std::net::Ipv4Addr,
    hosts: &Mutex<Vec<crate::support::netns::Host>>,
    stop: &AtomicBool,
    samples: &Mutex<VipSamples>,
) {
    while !stop.load(Ordering::Relaxed) {
        let holders: Vec<String> = hosts
            .lock()
            .expect("hosts")
            .iter()
            .filter(|h| crate::support::cluster::carries_vip(h, vip))
            .map(|h| h.name().to_string())
            .collect();
        samples
            .lock()
            .expect("samples")
            .seen
            .push((Instant::now(), holders));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn endpoint_of(peer: &muster::discovery::Peer) -> String {
    format!("https://{}:2379", peer.address)
}

#[test]
fn a_rolling_replacement_through_a_lifecycle_hook_loses_no_write() {
    let mut vip = std::net::Ipv4Addr::UNSPECIFIED;
    let (mut c, cloud, api) =
        asg_lab::start_with("roll", GROUP, 3, Moto::WithLifecycleHooks, |net| {
            vip = net.spare_ip(0);
            format!("apiEndpoint:\n  vip: {vip}\n  mode: arp\n  interface: eth0\n")
        });
    let endpoint = api.endpoint.clone();
    in_cloud(&cloud, async || {
        let aws = aws(&endpoint);
        aws.query(
            &AUTOSCALING,
            "PutLifecycleHook",
            &moto::params(&[
                ("AutoScalingGroupName", GROUP),
                ("LifecycleHookName", "muster-hand-off"),
                (
                    "LifecycleTransition",
                    "autoscaling:EC2_INSTANCE_TERMINATING",
                ),
                ("HeartbeatTimeout", "600"),
                ("DefaultResult", "CONTINUE"),
            ]),
        )
        .await
        .expect("PutLifecycleHook");
    });
    let mut members: Vec<(usize, muster::discovery::Peer)> = Vec::new();
    for peer in asg_lab::in_service(&cloud, &endpoint, GROUP) {
        let i = add_instance(&mut c, &peer, GROUP);
        c.start_agent(i);
        members.push((i, peer));
    }
    let nodes: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
    let cluster_id = c.wait_for_cluster(&nodes, 3, Duration::from_secs(90));

    // The writer runs in the cloud host's namespace for the whole test.
    let tls = Arc::new(ClientTls::read(&c.nodes[nodes[0]].host));
    let endpoints = Arc::new(Mutex::new(
        members
            .iter()
            .map(|(_, p)| endpoint_of(p))
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let writer = {
        let (cloud, tls, endpoints, stop, writes) = (
            cloud.clone(),
            Arc::clone(&tls),
            Arc::clone(&endpoints),
            Arc::clone(&stop),
            Arc::clone(&writes),
        );
        std::thread::spawn(move || {
            in_cloud(&cloud, async || {
                write_until(&tls, &endpoints, &stop, &writes).await
            })
        })
    };
    let vip_hosts = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|&i| c.nodes[i].host.clone())
            .collect::<Vec<_>>(),
    ));
    let vip_samples = Arc::new(Mutex::new(VipSamples::default()));
    let sampler = {
        let (hosts, stop, samples) = (
            Arc::clone(&vip_hosts),
            Arc::clone(&stop),
            Arc::clone(&vip_samples),
        );
        std::thread::spawn(move || sample_vip(vip, &hosts, &stop, &samples))
    };
    wait_until(
        "one agent holds the VIP",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || c.vip_holders(vip, &nodes).len() == 1,
    )
    .unwrap_or_else(|e| panic!("{e}: holders {:?}", c.vip_holders(vip, &nodes)));
    std::thread::sleep(Duration::from_secs(2));

    let mut holder_left = 0;
    let original: Vec<(usize, muster::discovery::Peer)> = members.clone();
    let mut steps = Vec::new();
    for (victim, peer) in &original {
        let step_start = Instant::now();
        asg_lab::terminate(&cloud, &endpoint, &peer.id);
        // The agent hands off and completes the hook; only then does the
        // group terminate the instance and launch a replacement.
        let mut replacement = None;
        wait_until(
            "the leaving agent completes the hook and the group launches a replacement",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let listed = asg_lab::listed(&cloud, &endpoint, GROUP);
                replacement = listed
                    .iter()
                    .find(|p| {
                        p.lifecycle == muster::discovery::Lifecycle::InService
                            && members.iter().all(|(_, m)| m.id != p.id)
                    })
                    .cloned();
                replacement.is_some() && listed.iter().all(|p| p.id != peer.id)
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {:#?}", c.status(*victim)));
        let let_go = Instant::now();
        // The member left etcd before its machine died, and its agent says so.
        wait_until(
            "the leaving agent reports its hand-off",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                c.status(*victim).is_some_and(|s| {
                    s["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("left the etcd cluster"))
                })
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {:#?}", c.status(*victim)));
        // Asked of etcd itself: the removal came before the hook completed.
        let survivors: Vec<String> = members
            .iter()
            .filter(|(i, _)| i != victim)
            .map(|(_, p)| endpoint_of(p))
            .collect();
        let listed_names = in_cloud(&cloud, async || member_names(&tls, survivors).await);
        assert!(
            !listed_names.contains(&peer.id),
            "{} still a member after it completed the hook: {listed_names:?}",
            peer.id
        );
        let log = std::fs::read_to_string(c.nodes[*victim].host.dir().join("agent.log"))
            .unwrap_or_default();
        let moved = log.contains("handing etcd leadership over first");
        let victim_name = c.nodes[*victim].host.name().to_string();
        let held = vip_samples.lock().expect("samples").holder_at(step_start);
        if held.as_deref() == Some(victim_name.as_str()) {
            // In its agent's own order: the VIP went before the member did
            // (it used to go only once the health check failed after). The
            // removal is the first "leaving: remove" line: a member that
            // removed itself may answer the call with "server stopped".
            let handed = log.find("leaving on purpose: handing the VIP on");
            let removed = log.find("leaving: remove");
            assert!(
                matches!((handed, removed), (Some(h), Some(r)) if h < r),
                "{victim_name} held the VIP: it must hand it on before it removes its member \
                 (handed at {handed:?}, removed at {removed:?} in its log)"
            );
            holder_left += 1;
        }
        vip_hosts
            .lock()
            .expect("hosts")
            .retain(|h| h.name() != victim_name);
        c.destroy(*victim);
        members.retain(|(i, _)| i != victim);

        let replacement = replacement.expect("replacement");
        let new = add_instance(&mut c, &replacement, GROUP);
        vip_hosts
            .lock()
            .expect("hosts")
            .push(c.nodes[new].host.clone());
        c.start_agent(new);
        members.push((new, replacement.clone()));
        endpoints
            .lock()
            .expect("endpoints")
            .clone_from(&members.iter().map(|(_, p)| endpoint_of(p)).collect());
        let nodes: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
        let id = c.wait_for_cluster(&nodes, 3, Duration::from_secs(90));
        assert_eq!(id, cluster_id, "one cluster throughout");
        let step_end = Instant::now();
        let gap = writes
            .lock()
            .expect("writes")
            .longest_gap(step_start, step_end);
        for (t, why) in writes
            .lock()
            .expect("writes")
            .errors
            .iter()
            .filter(|(t, _)| *t > step_start && *t <= step_end)
            .take(6)
        {
            eprintln!(
                "  +{:.2}s write failed: {why}",
                (*t - step_start).as_secs_f64()
            );
        }
        let no_vip = vip_samples
            .lock()
            .expect("samples")
            .longest_without_holder(step_start, step_end);
        eprintln!(
            "replaced {} -> {}{}{}: hand-off {:.1}s, step {:.1}s, longest write gap {} ms, longest without a VIP holder {} ms",
            peer.id,
            replacement.id,
            if moved {
                " (it led: leadership handed over first)"
            } else {
                ""
            },
            if held.as_deref() == Some(victim_name.as_str()) {
                " (it held the VIP)"
            } else {
                ""
            },
            (let_go - step_start).as_secs_f64(),
            (step_end - step_start).as_secs_f64(),
            gap.as_millis(),
            no_vip.as_millis()
        );
        steps.push(gap);
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    sampler.join().expect("VIP sampler thread");
    let samples = vip_samples.lock().expect("samples");
    assert!(
        samples.doubles().is_empty(),
        "S4: two VIP holders in one sample: {:?}",
        samples.doubles().first().map(|(_, h)| h)
    );
    assert!(
        holder_left > 0,
        "no step replaced the VIP holder ({} samples)",
        samples.seen.len()
    );
    drop(samples);

    let w = writes.lock().expect("writes");
    let eps = endpoints.lock().expect("endpoints").clone();
    let present: BTreeSet<String> = in_cloud(&cloud, async || read_keys(&tls, eps).await);
    let lost: Vec<&String> = w.acked.iter().filter(|k| !present.contains(*k)).collect();
    eprintln!(
        "{} writes acknowledged, {} failed attempts, {} lost; longest gap per step (ms): {:?}",
        w.acked.len(),
        w.failed,
        lost.len(),
        steps.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(
        w.acked.len() > 100,
        "the writer kept writing: {}",
        w.acked.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
