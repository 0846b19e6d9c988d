//! The BGP-4 messages of a speaker that announces one /32 and learns
//! nothing (RFC 4271, 4-octet AS numbers per RFC 6793). Pure: building
//! OPEN and UPDATE, checking the peer's OPEN, framing a byte stream. The
//! session task (`session.rs`) does the I/O around these.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustbgpd_wire::{
    Afi, AsPath, AsPathSegment, Capability, Ipv4NlriEntry, Ipv4Prefix, Ipv4UnicastMode,
    MAX_MESSAGE_LEN, Message, NotificationCode, NotificationMessage, OpenMessage, Origin,
    PathAttribute, Safi, UpdateMessage, decode_message, encode_message,
};

/// RFC 6793: the 2-octet stand-in for an AS number above 65535.
const AS_TRANS: u16 = 23456;
/// BGP header: 16-byte marker, 2-byte length, 1-byte type.
const HEADER_LEN: usize = 19;
/// OPEN error subcodes (RFC 4271 §6.2).
const BAD_PEER_AS: u8 = 2;
const UNACCEPTABLE_HOLD_TIME: u8 = 6;
/// iBGP LOCAL_PREF: the usual default, so the VIP route is not special.
const LOCAL_PREF: u32 = 100;

/// This node as a BGP speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker {
    pub asn: u32,
    /// BGP identifier and NEXT_HOP: the node's own address.
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds (0, or at least 3).
    pub hold_time: u16,
}

/// What both sides agreed on in their OPENs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Zero: no keepalives and no hold timer (RFC 4271 §4.2).
    pub hold_time: Duration,
    pub four_octet_as: bool,
    /// Same AS on both ends.
    pub internal: bool,
}

impl Negotiated {
    /// RFC 4271 suggests a third of the hold time.
    pub fn keepalive_every(&self) -> Option<Duration> {
        (!self.hold_time.is_zero()).then(|| self.hold_time / 3)
    }
}

/// Why a peer's OPEN is refused, with the NOTIFICATION to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenRefused {
    #[error("the peer speaks BGP version {0}, not 4")]
    Version(u8),
    #[error("the peer says it is AS {got}, the config says AS {want}")]
    PeerAs { got: u32, want: u32 },
    #[error("the peer proposes a hold time of {0} s (must be 0 or at least 3)")]
    HoldTime(u16),
    #[error(
        "this node's AS {0} needs 4-octet AS numbers (RFC 6793) and the peer does not support them"
    )]
    NoFourOctetAs(u32),
}

impl OpenRefused {
    pub fn notification(&self) -> Message {
        let subcode = match self {
            OpenRefused::Version(_) => 1,
            OpenRefused::PeerAs { .. } => BAD_PEER_AS,
            OpenRefused::HoldTime(_) => UNACCEPTABLE_HOLD_TIME,
            // "Unsupported capability" would name it; the generic
            // subcode is what routers log readably.
            OpenRefused::NoFourOctetAs(_) => 0,
        };
        Message::Notification(NotificationMessage::new(
            NotificationCode::OpenMessage,
            subcode,
            Bytes::new(),
        ))
    }
}

/// Our OPEN: IPv4 unicast and 4-octet AS numbers.
pub fn open(me: &Speaker) -> Message {
    Message::Open(OpenMessage {
        version: 4,
        my_as: u16::try_from(me.asn).unwrap_or(AS_TRANS),
        hold_time: me.hold_time,
        bgp_identifier: me.router_id,
        capabilities: vec![
            Capability::MultiProtocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            },
            Capability::FourOctetAs { asn: me.asn },
        ],
    })
}

/// Checks the peer's OPEN against the config and agrees the session's terms.
pub fn accept_open(
    me: &Speaker,
    peer_asn: u32,
    theirs: &OpenMessage,
) -> Result<Negotiated, OpenRefused> {
    if theirs.version != 4 {
        return Err(OpenRefused::Version(theirs.version));
    }
    let four_octet_as = theirs
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::FourOctetAs { .. }));
    let got = theirs.four_byte_as();
    if got != peer_asn {
        return Err(OpenRefused::PeerAs {
            got,
            want: peer_asn,
        });
    }
    if theirs.hold_time == 1 || theirs.hold_time == 2 {
        return Err(OpenRefused::HoldTime(theirs.hold_time));
    }
    if !four_octet_as && me.asn > u32::from(u16::MAX) {
        return Err(OpenRefused::NoFourOctetAs(me.asn));
    }
    Ok(Negotiated {
        hold_time: Duration::from_secs(me.hold_time.min(theirs.hold_time).into()),
        four_octet_as,
        internal: peer_asn == me.asn,
    })
}

/// The route for `vip`/32 via this node. `med` lets the router prefer the
/// newest holder while an older holder's route may still linger (see
/// `med_for_claim`).
pub fn announce(me: &Speaker, neg: &Negotiated, vip: Ipv4Addr, med: u32) -> Message {
    let mut attributes = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath {
            segments: if neg.internal {
                vec![]
            } else {
                vec![AsPathSegment::AsSequence(vec![me.asn])]
            },
        }),
        PathAttribute::NextHop(me.router_id),
        PathAttribute::Med(med),
    ];
    if neg.internal {
        attributes.push(PathAttribute::LocalPref(LOCAL_PREF));
    }
    update(&[host_route(vip)], &[], &attributes, neg)
}

/// Withdraws `vip`/32.
pub fn withdraw(neg: &Negotiated, vip: Ipv4Addr) -> Message {
    update(&[], &[host_route(vip)], &[], neg)
}

fn host_route(vip: Ipv4Addr) -> Ipv4NlriEntry {
    Ipv4NlriEntry {
        path_id: 0,
        prefix: Ipv4Prefix::new(vip, 32),
    }
}

fn update(
    announced: &[Ipv4NlriEntry],
    withdrawn: &[Ipv4NlriEntry],
    attributes: &[PathAttribute],
    neg: &Negotiated,
) -> Message {
    // The attributes above are fixed and always encodable.
    let msg = UpdateMessage::build(
        announced,
        withdrawn,
        attributes,
        neg.four_octet_as,
        false,
        Ipv4UnicastMode::Body,
    );
    Message::Update(msg)
}

/// The MED of a holder whose claim was won at etcd `revision`: later claims
/// get lower (better) values. Routers compare MED between routes from the
/// same neighbouring AS — every node of a cluster shares `localAsn` — so a
/// crashed holder's route, which stays until the router's hold timer fires,
/// loses to its successor's at once.
pub fn med_for_claim(revision: i64) -> u32 {
    let rev = u32::try_from(revision.max(0)).unwrap_or(u32::MAX);
    u32::MAX - rev
}

pub fn keepalive() -> Message {
    Message::Keepalive
}

pub fn hold_timer_expired() -> Message {
    Message::Notification(NotificationMessage::new(
        NotificationCode::HoldTimerExpired,
        0,
        Bytes::new(),
    ))
}

/// A message that cannot be framed or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed BGP message: {0}")]
pub struct Malformed(pub String);

/// Encodes a message for the wire.
pub fn encode(msg: &Message) -> Result<BytesMut, Malformed> {
    encode_message(msg).map_err(|e| Malformed(e.to_string()))
}

/// Takes one whole message off the front of `buf`, if it holds one.
pub fn next_message(buf: &mut BytesMut) -> Result<Option<Message>, Malformed> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER_LEN..=usize::from(MAX_MESSAGE_LEN)).contains(&len) {
        return Err(Malformed(format!("length {len} in the header")));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut frame = buf.split_to(len).freeze();
    decode_message(&mut frame, MAX_MESSAGE_LEN)
        .map(Some)
        .map_err(|e| Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Speaker = Speaker {
        asn: 65001,
        router_id: Ipv4Addr::new(10, 0, 0, 11),
        hold_time: 9,
    };
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    fn roundtrip(msg: &Message) -> Message {
        let mut buf = encode(msg).expect("encodes");
        let back = next_message(&mut buf).expect("decodes").expect("whole");
        assert!(buf.is_empty());
        back
    }

    fn their_open(asn: u32, hold: u16, caps: Vec<Capability>) -> OpenMessage {
        OpenMessage {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time: hold,
            bgp_identifier: Ipv4Addr::new(10, 0, 0, 1),
            capabilities: caps,
        }
    }

    #[test]
    fn our_open_round_trips_with_both_capabilities() {
        let Message::Open(o) = roundtrip(&open(&ME)) else {
            panic!("not an OPEN")
        };
        assert_eq!((o.version, o.my_as, o.hold_time), (4, 65001, 9));
        assert_eq!(o.bgp_identifier, ME.router_id);
        assert!(
            o.capabilities
                .contains(&Capability::FourOctetAs { asn: 65001 })
        );
    }

    #[test]
    fn a_large_asn_goes_as_as_trans_plus_capability() {
        let me = Speaker {
            asn: 4_200_000_001,
            ..ME
        };
        let Message::Open(o) = roundtrip(&open(&me)) else {
            panic!("not an OPEN")
        };
        assert_eq!(o.my_as, AS_TRANS);
        assert_eq!(o.four_byte_as(), 4_200_000_001);
    }

    #[test]
    fn the_hold_time_is_the_smaller_and_ibgp_is_recognised() {
        let caps = vec![Capability::FourOctetAs { asn: 64512 }];
        let n = accept_open(&ME, 64512, &their_open(64512, 240, caps)).expect("accepted");
        assert_eq!(n.hold_time, Duration::from_secs(9));
        assert_eq!(n.keepalive_every(), Some(Duration::from_secs(3)));
        assert!(!n.internal && n.four_octet_as);
        let caps = vec![Capability::FourOctetAs { asn: 65001 }];
        let n = accept_open(&ME, 65001, &their_open(65001, 0, caps)).expect("accepted");
        assert!(n.internal);
        assert_eq!(n.keepalive_every(), None, "hold time 0: no keepalives");
    }

    #[test]
    fn wrong_peers_are_refused_with_the_right_notification() {
        let caps = || vec![Capability::FourOctetAs { asn: 64999 }];
        let e = accept_open(&ME, 64512, &their_open(64999, 90, caps())).unwrap_err();
        assert_eq!(
            e,
            OpenRefused::PeerAs {
                got: 64999,
                want: 64512
            }
        );
        let Message::Notification(n) = e.notification() else {
            panic!()
        };
        assert_eq!((n.code, n.subcode), (NotificationCode::OpenMessage, 2));
        let e = accept_open(&ME, 64999, &their_open(64999, 2, caps())).unwrap_err();
        assert_eq!(e, OpenRefused::HoldTime(2));
        let mut old = their_open(64999, 90, vec![]);
        old.version = 3;
        assert_eq!(
            accept_open(&ME, 64999, &old).unwrap_err(),
            OpenRefused::Version(3)
        );
        let big = Speaker {
            asn: 4_200_000_001,
            ..ME
        };
        assert_eq!(
            accept_open(&big, 64999, &their_open(64999, 90, vec![])).unwrap_err(),
            OpenRefused::NoFourOctetAs(4_200_000_001)
        );
    }

    fn parsed(msg: &Message, neg: &Negotiated) -> rustbgpd_wire::ParsedUpdate {
        let Message::Update(u) = roundtrip(msg) else {
            panic!("not an UPDATE")
        };
        u.parse(neg.four_octet_as, false, &[]).expect("parses")
    }

    #[test]
    fn announcement_carries_the_host_route_next_hop_and_med() {
        let neg = Negotiated {
            hold_time: Duration::from_secs(9),
            four_octet_as: true,
            internal: false,
        };
        let p = parsed(&announce(&ME, &neg, VIP, 7), &neg);
        assert_eq!(p.announced, vec![host_route(VIP)]);
        assert!(p.withdrawn.is_empty());
        assert!(p.attributes.contains(&PathAttribute::NextHop(ME.router_id)));
        assert!(p.attributes.contains(&PathAttribute::Med(7)));
        assert!(p.attributes.contains(&PathAttribute::AsPath(AsPath {
            segments: vec![AsPathSegment::AsSequence(vec![65001])]
        })));
        let ibgp = Negotiated {
            internal: true,
            ..neg
        };
        let p = parsed(&announce(&ME, &ibgp, VIP, 7), &ibgp);
        assert!(p.attributes.contains(&PathAttribute::LocalPref(100)));
        assert!(
            p.attributes
                .contains(&PathAttribute::AsPath(AsPath { segments: vec![] }))
        );
    }

    #[test]
    fn withdrawal_names_only_the_host_route() {
        let neg = Negotiated {
            hold_time: Duration::ZERO,
            four_octet_as: false,
            internal: false,
        };
        let p = parsed(&withdraw(&neg, VIP), &neg);
        assert_eq!(p.withdrawn, vec![host_route(VIP)]);
        assert!(p.announced.is_empty() && p.attributes.is_empty());
    }

    #[test]
    fn later_claims_get_better_meds() {
        assert!(med_for_claim(101) < med_for_claim(100));
        assert_eq!(med_for_claim(-5), u32::MAX);
        assert_eq!(med_for_claim(i64::MAX), 0);
    }

    #[test]
    fn framing_waits_for_whole_messages_and_rejects_bad_lengths() {
        let ka = encode(&keepalive()).expect("encodes");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&ka[..10]);
        assert_eq!(next_message(&mut buf), Ok(None));
        buf.extend_from_slice(&ka[10..]);
        buf.extend_from_slice(&ka);
        assert_eq!(next_message(&mut buf), Ok(Some(Message::Keepalive)));
        assert_eq!(next_message(&mut buf), Ok(Some(Message::Keepalive)));
        assert_eq!(next_message(&mut buf), Ok(None));
        let mut bad = BytesMut::from(&ka[..]);
        bad[16] = 0xff;
        assert!(next_message(&mut bad).is_err());
        let mut junk = BytesMut::from(&[0u8; 19][..]);
        junk[17] = 19;
        assert!(next_message(&mut junk).is_err(), "no marker");
    }
}
