//! Tier 1, a rolling replacement through an Auto Scaling group with a
//! termination lifecycle hook: three real agents, a writer doing quorum
//! writes without pause, and every member replaced one at a time by
//! TerminateInstanceInAutoScalingGroup. Each leaving agent hands off (moves
//! leadership, removes its own member) and completes the hook; the group
//! then launches the replacement, which joins. moto lacks the hook's wait
//! state, so it runs with `support/moto_lifecycle.py` (AWS's documented
//! Terminating:Wait -> CompleteLifecycleAction; everything else is moto).
//!
//! Checks: no acknowledged write lost, one cluster id throughout, and the
//! member was out of etcd before its machine died. Prints each step's
//! longest write gap (the unavailability a client saw).

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

fn endpoint_of(peer: &muster::discovery::Peer) -> String {
    format!("https://{}:2379", peer.address)
}

#[test]
fn a_rolling_replacement_through_a_lifecycle_hook_loses_no_write() {
    let (mut c, cloud, api) = asg_lab::start("roll", GROUP, 3, Moto::WithLifecycleHooks);
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
    std::thread::sleep(Duration::from_secs(2));

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
        c.destroy(*victim);
        members.retain(|(i, _)| i != victim);

        let replacement = replacement.expect("replacement");
        let new = add_instance(&mut c, &replacement, GROUP);
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
        eprintln!(
            "replaced {} -> {}{}: hand-off {:.1}s, step {:.1}s, longest write gap {} ms",
            peer.id,
            replacement.id,
            if moved {
                " (it led: leadership handed over first)"
            } else {
                ""
            },
            (let_go - step_start).as_secs_f64(),
            (step_end - step_start).as_secs_f64(),
            gap.as_millis()
        );
        steps.push(gap);
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");

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
