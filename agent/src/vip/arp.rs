//! ARP frames over an AF_PACKET socket: the gratuitous announcements a new
//! VIP holder sends so neighbours repoint their caches at once (without
//! one, a move took 46 s here: docs/machines.md), and the requests/replies a
//! test observer uses. Sent by the agent itself: `arping` can hang.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const FRAME_LEN: usize = 42;
pub const BROADCAST: [u8; 6] = [0xff; 6];
const ETH_P_ARP: u16 = 0x0806;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request = 1,
    Reply = 2,
}

/// The fields of an IPv4-over-Ethernet ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: Op,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Gratuitous ARP request (RFC 5227 "announcement"): "`ip` is at `mac`",
    /// sender and target address both `ip`.
    pub fn announce_request(mac: [u8; 6], ip: Ipv4Addr) -> Arp {
        Arp {
            op: Op::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: [0; 6],
            target_ip: ip,
        }
    }

    /// Unsolicited ARP reply, for neighbours that ignore gratuitous requests.
    pub fn announce_reply(mac: [u8; 6], ip: Ipv4Addr) -> Arp {
        Arp {
            op: Op::Reply,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: BROADCAST,
            target_ip: ip,
        }
    }

    /// "Who has `target`? Tell `ip`".
    pub fn who_has(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Arp {
        Arp {
            op: Op::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: [0; 6],
            target_ip: target,
        }
    }

    /// The Ethernet frame carrying this packet to `eth_dst`.
    pub fn frame(&self, eth_dst: [u8; 6]) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&eth_dst);
        f[6..12].copy_from_slice(&self.sender_mac);
        f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
        f[18] = 6;
        f[19] = 4;
        f[20..22].copy_from_slice(&(self.op as u16).to_be_bytes());
        f[22..28].copy_from_slice(&self.sender_mac);
        f[28..32].copy_from_slice(&self.sender_ip.octets());
        f[32..38].copy_from_slice(&self.target_mac);
        f[38..42].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Parses an Ethernet frame; `None` unless it is IPv4-over-Ethernet ARP.
    pub fn parse(frame: &[u8]) -> Option<Arp> {
        let f = frame.get(..FRAME_LEN)?;
        let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
        if be16(12) != ETH_P_ARP || be16(14) != 1 || be16(16) != 0x0800 || f[18] != 6 || f[19] != 4
        {
            return None;
        }
        let op = match be16(20) {
            1 => Op::Request,
            2 => Op::Reply,
            _ => return None,
        };
        let mac = |i: usize| <[u8; 6]>::try_from(&f[i..i + 6]).ok();
        let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
        Some(Arp {
            op,
            sender_mac: mac(22)?,
            sender_ip: ip(28),
            target_mac: mac(32)?,
            target_ip: ip(38),
        })
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A raw ARP socket bound to one interface. Non-blocking: a send never
/// stalls the agent's loop (a full queue is an error to log, not a wait).
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl ArpSocket {
    /// Opens the socket in the calling thread's network namespace (needs
    /// CAP_NET_RAW).
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        let proto = ETH_P_ARP.to_be() as libc::c_int;
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr(ifindex, [0; 6]);
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ArpSocket { fd, ifindex })
    }

    /// Sends one frame (its first 6 bytes are the destination MAC).
    pub fn send(&self, frame: &[u8; FRAME_LEN]) -> io::Result<()> {
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        let addr = sockaddr(self.ifindex, dst);
        // SAFETY: buffer and address are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Waits up to `timeout` for one ARP packet (blocking the thread: for
    /// observers and tests, not for the agent's async loop).
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<Arp>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if rc == 0 {
            return Ok(None);
        }
        let mut buf = [0u8; 128];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Arp::parse(&buf[..n as usize]))
    }
}

fn sockaddr(ifindex: u32, dst: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst);
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);

    #[test]
    fn gratuitous_request_is_a_broadcast_with_sender_and_target_the_vip() {
        let f = Arp::announce_request(MAC, VIP).frame(BROADCAST);
        let expected: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x11, 0x08,
            0x06, // ethernet
            0, 1, 0x08, 0, 6, 4, 0, 1, // htype, ptype, hlen, plen, op=request
            0x02, 0, 0, 0, 0, 0x11, 10, 0, 0, 200, // sender
            0, 0, 0, 0, 0, 0, 10, 0, 0, 200, // target
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn frames_parse_back_and_garbage_does_not() {
        for arp in [
            Arp::announce_reply(MAC, VIP),
            Arp::who_has(MAC, Ipv4Addr::new(10, 0, 0, 5), VIP),
        ] {
            assert_eq!(Arp::parse(&arp.frame(BROADCAST)), Some(arp));
        }
        let mut f = Arp::announce_reply(MAC, VIP).frame(BROADCAST);
        assert_eq!(Arp::parse(&f[..41]), None);
        f[12] = 0x08;
        f[13] = 0x00; // IPv4, not ARP
        assert_eq!(Arp::parse(&f), None);
        let mut f = Arp::announce_reply(MAC, VIP).frame(BROADCAST);
        f[21] = 3; // RARP request
        assert_eq!(Arp::parse(&f), None);
    }

    #[test]
    fn macs_print_in_the_usual_form() {
        assert_eq!(mac_string(&MAC), "02:00:00:00:00:11");
    }
}
