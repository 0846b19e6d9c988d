//! An ARP observer for S4: from one host, "who-has VIP" every 10 ms on a
//! raw socket, collecting every MAC that answers each round. Two MACs in
//! one round is a double holder. Shared by the VIP lab and the fault
//! campaign.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use muster::vip::arp::{self, Arp, ArpSocket};

use super::netns::Host;

/// One who-has round: when it was sent and which MACs answered it.
#[derive(Debug, Clone)]
pub struct ArpRound {
    pub at: Instant,
    pub macs: BTreeSet<[u8; 6]>,
}

/// Probes from `obs`'s eth0 until `stop`; rounds go to `rounds`.
pub fn spawn(
    obs: Host,
    vip: Ipv4Addr,
    stop: Arc<AtomicBool>,
    rounds: Arc<Mutex<Vec<ArpRound>>>,
) -> JoinHandle<()> {
    let (mac, ip) = (mac_of(&obs), obs.ip());
    std::thread::spawn(move || {
        obs.in_netns(move || {
            // SAFETY: a NUL-terminated name; the call only reads it.
            let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            assert!(index != 0, "observer eth0");
            let sock = ArpSocket::open(index).expect("observer arp socket");
            let request = Arp::who_has(mac, ip, vip).frame(arp::BROADCAST);
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let _ = sock.send(&request);
                let mut macs = BTreeSet::new();
                while let Some(left) = Duration::from_millis(10).checked_sub(at.elapsed()) {
                    match sock.recv(left) {
                        // Answers to this round's question only. A new
                        // holder's unsolicited announcement (a reply
                        // addressed to the VIP itself) can follow the
                        // old holder's answer within one 10 ms round
                        // after a clean hand-over, although the old
                        // address was gone before the new one came
                        // (the tests check that order from netlink).
                        Ok(Some(a))
                            if a.op == arp::Op::Reply
                                && a.sender_ip == vip
                                && a.target_ip == ip
                                && a.target_mac == mac =>
                        {
                            macs.insert(a.sender_mac);
                        }
                        Ok(_) => {}
                        Err(e) => panic!("observer arp recv: {e}"),
                    }
                }
                rounds
                    .lock()
                    .expect("arp rounds")
                    .push(ArpRound { at, macs });
            }
        })
    })
}

/// The longest run of consecutive rounds with two or more MACs, as time
/// from the first such round's start to the last's end; and how many.
pub fn double_answers(rounds: &[ArpRound]) -> (usize, Duration) {
    let (mut count, mut longest, mut run_start) = (0, Duration::ZERO, None::<Instant>);
    for r in rounds {
        if r.macs.len() > 1 {
            count += 1;
            let start = *run_start.get_or_insert(r.at);
            longest = longest.max(r.at + Duration::from_millis(10) - start);
        } else {
            run_start = None;
        }
    }
    (count, longest)
}

/// The MAC of `h`'s eth0.
pub fn mac_of(h: &Host) -> [u8; 6] {
    let out = h.ip_cmd(&["-o", "link", "show", "dev", "eth0"]);
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("eth0 MAC");
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("6-byte MAC")
}
