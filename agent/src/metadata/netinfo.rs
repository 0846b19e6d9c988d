//! The node's own IPv4 address as the network stack sees it: the address of
//! the interface that holds the default IPv4 route. Used by providers whose
//! metadata does not say it (bare metal booted over PXE with DHCP).
//!
//! Reading is kept apart from choosing. [`default_route`] and [`choose_ipv4`]
//! are pure and tested on recorded text; [`Network`] is the reading side
//! (the route table and one interface's addresses), which tests replace with
//! a fake. [`HostNetwork`] is the real one: `<host_root>/proc/net/route` for
//! the route table and rtnetlink for the addresses.
//!
//! Why rtnetlink for the addresses: it is the only source that says which
//! address is *primary* (`IFA_F_SECONDARY` clear), along with the prefix
//! length and the scope; `getifaddrs(3)` drops the secondary flag, and no
//! file under /proc lists IPv4 addresses per interface.
//!
//! Only the main routing table is seen (that is what /proc/net/route shows);
//! a machine whose default route lives in another table (policy routing)
//! should say its address with `muster.ip=`.

use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use tokio::io::AsyncReadExt;

use crate::retry::{Backoff, retry};

/// Longest we wait for a default route to appear (see [`default_route_ipv4`]).
pub const ROUTE_WAIT: Duration = Duration::from_secs(5);

/// Largest route table we read: about 30 000 routes. Identify runs early in
/// boot, long before anything installs many routes; a bigger file is not
/// the route table we expect.
const MAX_ROUTE_TABLE: usize = 4 << 20;

// Route flags as /proc/net/route prints them (linux/route.h).
const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// The default IPv4 route the kernel uses: its interface and metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub iface: String,
    pub metric: u32,
}

/// One IPv4 address of an interface, with what the choice needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4OnInterface {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// `IFA_F_SECONDARY`: an extra address in the subnet of a primary one
    /// (`ip addr` prints `secondary`).
    pub secondary: bool,
    /// Scope global (`RT_SCOPE_UNIVERSE`); link and host scoped addresses
    /// (`scope link`, `scope host` in `ip addr`) are not.
    pub global: bool,
}

/// /proc/net/route could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteTableError {
    #[error("the route table has no header line")]
    NoHeader,
    #[error("the route table header has no {0} column")]
    MissingColumn(&'static str),
    #[error("route table line {line}: {why}")]
    BadRow { line: usize, why: String },
}

/// Why the address could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    #[error("cannot read {}: {cause}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{}: larger than {MAX_ROUTE_TABLE} bytes", .path.display())]
    TooLarge { path: PathBuf },
    #[error("/proc/net/route: {0}")]
    RouteTable(#[source] RouteTableError),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("no interface named {0}")]
    NoSuchInterface(String),
    #[error(
        "the route table was read under {}, not /; this machine's interface addresses would not match it",
        .0.display()
    )]
    NotThisMachine(PathBuf),
}

/// The row of a /proc/net/route text that is the default route: Destination
/// and Mask `00000000`, up, not a reject route (`unreachable`/`prohibit`),
/// on a real interface (blackhole routes show `*`), lowest Metric; the
/// first such row on a tie, as the kernel lists them in the order it tries
/// them. `Ok(None)` when there is none. Pure.
pub fn default_route(text: &str) -> Result<Option<DefaultRoute>, RouteTableError> {
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l,
            None => return Err(RouteTableError::NoHeader),
        }
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &'static str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or(RouteTableError::MissingColumn(name))
    };
    let (iface, dest, flags, metric, mask) = (
        column("Iface")?,
        column("Destination")?,
        column("Flags")?,
        column("Metric")?,
        column("Mask")?,
    );
    let mut best: Option<DefaultRoute> = None;
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = |why: String| RouteTableError::BadRow {
            line: index + 1,
            why,
        };
        let field = |i: usize, name: &str| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| bad(format!("no {name} field")))
        };
        let hex = |i: usize, name: &str| {
            let v = field(i, name)?;
            u32::from_str_radix(v, 16).map_err(|_| bad(format!("{name} {v:?} is not hexadecimal")))
        };
        let row_metric = {
            let v = field(metric, "Metric")?;
            v.parse::<u32>()
                .map_err(|_| bad(format!("Metric {v:?} is not a number")))?
        };
        let row_flags = hex(flags, "Flags")?;
        let is_default = hex(dest, "Destination")? == 0 && hex(mask, "Mask")? == 0;
        let name = field(iface, "Iface")?;
        let usable = row_flags & RTF_UP != 0 && row_flags & RTF_REJECT == 0 && name != "*";
        if is_default && usable && best.as_ref().is_none_or(|b| row_metric < b.metric) {
            best = Some(DefaultRoute {
                iface: name.to_string(),
                metric: row_metric,
            });
        }
    }
    Ok(best)
}

/// Whether an address may be the node's own: global scope, and never
/// loopback (127/8), link-local (169.254/16), unspecified, broadcast or
/// multicast, whatever scope it was given.
pub fn usable(a: &Ipv4OnInterface) -> bool {
    let ip = a.address;
    a.global
        && !ip.is_loopback()
        && !ip.is_link_local()
        && !ip.is_unspecified()
        && !ip.is_broadcast()
        && !ip.is_multicast()
}

/// The node's address among one interface's IPv4 addresses, listed in the
/// kernel's order. Pure.
///
/// The first usable primary address wins, with one exception: any address
/// whose prefix is not /32 beats a /32. The agent itself adds the API VIP
/// to this same interface as an extra /32 (`vip::netlink`), and a /32 never
/// falls inside another address's subnet, so the kernel marks it *primary*
/// too. When the agent restarts on the node holding the VIP, or a DHCP
/// lease expired and the address came back behind the VIP, "first primary"
/// alone could pick the VIP, and the node would then announce the floating
/// address as its own (etcd peer URL, node IP). A DHCP lease is normally a
/// real subnet; a node whose only address is a /32 still gets it.
pub fn choose_ipv4(addrs: &[Ipv4OnInterface]) -> Option<Ipv4OnInterface> {
    addrs
        .iter()
        .filter(|a| usable(a))
        // min_by_key keeps the first of equals: kernel order decides ties.
        .min_by_key(|a| (a.prefix_len == 32, a.secondary))
        .copied()
}

/// Reads what the choice needs. [`HostNetwork`] reads this machine; tests
/// give recorded answers.
pub trait Network {
    /// The text of /proc/net/route; `Ok(None)` when there is no such file.
    fn route_table(&self) -> impl Future<Output = Result<Option<String>, NetInfoError>> + Send;
    /// The IPv4 addresses of interface `iface`, in the kernel's order.
    fn ipv4_addresses(
        &self,
        iface: &str,
    ) -> impl Future<Output = Result<Vec<Ipv4OnInterface>, NetInfoError>> + Send;
}

/// This machine: `<host_root>/proc/net/route`, and the addresses over
/// rtnetlink in the calling thread's network namespace.
#[derive(Debug, Clone)]
pub struct HostNetwork {
    host_root: PathBuf,
}

impl HostNetwork {
    /// Reads the route table under `host_root` (`/` on a node; a temporary
    /// directory in tests).
    pub fn new(host_root: &Path) -> Self {
        HostNetwork {
            host_root: host_root.to_path_buf(),
        }
    }

    fn route_path(&self) -> PathBuf {
        self.host_root.join("proc/net/route")
    }
}

impl Network for HostNetwork {
    async fn route_table(&self) -> Result<Option<String>, NetInfoError> {
        let path = self.route_path();
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(cause) => return Err(NetInfoError::Read { path, cause }),
        };
        // /proc files report size 0: read to the end, with a cap.
        let mut body = Vec::new();
        if let Err(cause) = file
            .take(MAX_ROUTE_TABLE as u64 + 1)
            .read_to_end(&mut body)
            .await
        {
            return Err(NetInfoError::Read { path, cause });
        }
        if body.len() > MAX_ROUTE_TABLE {
            return Err(NetInfoError::TooLarge { path });
        }
        Ok(Some(String::from_utf8_lossy(&body).into_owned()))
    }

    async fn ipv4_addresses(&self, iface: &str) -> Result<Vec<Ipv4OnInterface>, NetInfoError> {
        // The route table came from under host_root; netlink answers for the
        // kernel we run on. Mixing the two only makes sense when host_root is
        // this machine's root, and refusing otherwise keeps tests that point
        // host_root at a fixture from ever reading the real interfaces.
        if self.host_root != Path::new("/") {
            return Err(NetInfoError::NotThisMachine(self.host_root.clone()));
        }
        netlink_ipv4_addresses(iface).await
    }
}

/// Aborts the netlink connection task when the lookup ends, early or not.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The IPv4 addresses of `iface` over rtnetlink, in the kernel's order.
pub async fn netlink_ipv4_addresses(iface: &str) -> Result<Vec<Ipv4OnInterface>, NetInfoError> {
    let failed = |op: &str, e: &dyn std::fmt::Display| NetInfoError::Netlink(format!("{op}: {e}"));
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| failed("cannot open a socket", &e))?;
    let _task = AbortOnDrop(tokio::spawn(conn));
    let mut links = handle.link().get().match_name(iface.to_string()).execute();
    let index = match links.try_next().await {
        Ok(Some(link)) => link.header.index,
        Ok(None) => return Err(NetInfoError::NoSuchInterface(iface.to_string())),
        Err(rtnetlink::Error::NetlinkError(m))
            if m.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
        {
            return Err(NetInfoError::NoSuchInterface(iface.to_string()));
        }
        Err(e) => return Err(failed(&format!("get link {iface}"), &e)),
    };
    let mut request = handle.address().get().set_link_index_filter(index);
    request.message_mut().header.family = AddressFamily::Inet;
    let messages: Vec<AddressMessage> = request
        .execute()
        .try_collect()
        .await
        .map_err(|e| failed(&format!("list addresses of {iface}"), &e))?;
    Ok(messages.iter().filter_map(from_message).collect())
}

/// One RTM_NEWADDR message as an [`Ipv4OnInterface`]; `None` for other
/// families. The address is `IFA_LOCAL` (on point-to-point links
/// `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`. Pure.
pub fn from_message(msg: &AddressMessage) -> Option<Ipv4OnInterface> {
    let v4 = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    };
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => v4(ip),
        _ => None,
    });
    let address = local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => v4(ip),
            _ => None,
        })
    })?;
    // The header carries the low 8 flag bits; IFA_FLAGS, when present, all 32.
    let secondary = msg.header.flags.contains(AddressHeaderFlags::Secondary)
        || msg.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Secondary)),
        );
    Some(Ipv4OnInterface {
        address,
        prefix_len: msg.header.prefix_len,
        secondary,
        global: msg.header.scope == AddressScope::Universe,
    })
}

/// What the default-route lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The address of the default route's interface.
    Found {
        route: DefaultRoute,
        address: Ipv4OnInterface,
    },
    /// No route table to read (no `<host_root>/proc/net/route`).
    NoRouteTable,
    /// No default IPv4 route, even after waiting [`ROUTE_WAIT`].
    NoDefaultRoute,
    /// The default route's interface has no usable IPv4 address.
    NoUsableAddress {
        route: DefaultRoute,
        /// Everything the interface had, for the log.
        seen: Vec<Ipv4OnInterface>,
    },
}

/// The retry policy for the wait: the caller's, cut to [`ROUTE_WAIT`] in all.
pub fn route_wait(backoff: Backoff) -> Backoff {
    Backoff {
        total: backoff.total.min(ROUTE_WAIT),
        ..backoff
    }
}

enum RouteMiss {
    NoTable,
    NoDefault,
    Failed(NetInfoError),
}

/// The IPv4 address of the interface that holds the default route: reads
/// the route table until it has a default route or `route_wait(backoff)`
/// is spent, then reads that interface's addresses and [`choose_ipv4`]s one.
///
/// Why wait at all: the agent unit runs after network-online.target, but
/// that target only means what the image's wait-online service decided
/// (with none enabled it is reached at once, and a DHCP client may install
/// the route a moment after it reports the link configured). Why only
/// briefly ([`ROUTE_WAIT`]): a machine on a network with no default route
/// will never get one, and should fail fast with a message pointing at
/// `muster.ip=` rather than hold up boot. A missing or unreadable table is
/// not retried: waiting cannot fix it.
pub async fn default_route_ipv4<N: Network>(
    net: &N,
    backoff: Backoff,
) -> Result<Lookup, NetInfoError> {
    let found = retry(
        route_wait(backoff),
        |m: &RouteMiss| matches!(m, RouteMiss::NoDefault),
        |_| async {
            let Some(text) = net.route_table().await.map_err(RouteMiss::Failed)? else {
                return Err(RouteMiss::NoTable);
            };
            match default_route(&text) {
                Ok(Some(route)) => Ok(route),
                Ok(None) => Err(RouteMiss::NoDefault),
                Err(e) => Err(RouteMiss::Failed(NetInfoError::RouteTable(e))),
            }
        },
    )
    .await;
    let route = match found {
        Ok(route) => route,
        Err(gave_up) => {
            return match gave_up.last {
                RouteMiss::NoTable => Ok(Lookup::NoRouteTable),
                RouteMiss::NoDefault => Ok(Lookup::NoDefaultRoute),
                RouteMiss::Failed(e) => Err(e),
            };
        }
    };
    let seen = net.ipv4_addresses(&route.iface).await?;
    Ok(match choose_ipv4(&seen) {
        Some(address) => Lookup::Found { route, address },
        None => Lookup::NoUsableAddress { route, seen },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str, secondary: bool, global: bool) -> Ipv4OnInterface {
        let (ip, len) = s.split_once('/').expect("a/len");
        Ipv4OnInterface {
            address: ip.parse().expect("ip"),
            prefix_len: len.parse().expect("len"),
            secondary,
            global,
        }
    }

    #[test]
    fn default_route_ignores_reject_blackhole_and_down_rows() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            *\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0\n\
            *\t00000000\t00000000\t0001\t0\t0\t1\t00000000\t0\t0\t0\n\
            eth9\t00000000\t0100000A\t0002\t0\t0\t2\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth1\t00000000\t0100000A\t0003\t0\t0\t600\t000000FF\t0\t0\t0\n";
        assert_eq!(
            default_route(text),
            Ok(Some(DefaultRoute {
                iface: "eth0".into(),
                metric: 600
            }))
        );
    }

    #[test]
    fn malformed_tables_say_where() {
        assert_eq!(default_route(""), Err(RouteTableError::NoHeader));
        assert_eq!(
            default_route("Iface Destination Flags Mask\n"),
            Err(RouteTableError::MissingColumn("Metric"))
        );
        let e = default_route("Iface Destination Flags Metric Mask\neth0 zz 0003 0 00000000\n")
            .expect_err("bad hex");
        assert_eq!(
            e.to_string(),
            "route table line 2: Destination \"zz\" is not hexadecimal"
        );
        let e = default_route("Iface Destination Flags Metric Mask\neth0 00000000\n")
            .expect_err("short row");
        assert_eq!(e.to_string(), "route table line 2: no Metric field");
    }

    #[test]
    fn slash_32_loses_to_a_subnet_whatever_the_order() {
        let vip_first = [
            addr("10.0.0.100/32", false, true),
            addr("10.0.0.7/24", false, true),
        ];
        assert_eq!(
            choose_ipv4(&vip_first).map(|a| a.address),
            Some(Ipv4Addr::new(10, 0, 0, 7))
        );
        let only_32 = [addr("203.0.113.9/32", false, true)];
        assert_eq!(
            choose_ipv4(&only_32).map(|a| a.address),
            Some(Ipv4Addr::new(203, 0, 113, 9))
        );
        let primary_then_secondary = [
            addr("10.0.0.7/24", false, true),
            addr("10.0.0.8/24", true, true),
        ];
        assert_eq!(
            choose_ipv4(&primary_then_secondary).map(|a| a.address),
            Some(Ipv4Addr::new(10, 0, 0, 7))
        );
        let secondary_listed_first = [
            addr("10.0.0.8/24", true, true),
            addr("10.1.0.7/16", false, true),
        ];
        assert_eq!(
            choose_ipv4(&secondary_listed_first).map(|a| a.address),
            Some(Ipv4Addr::new(10, 1, 0, 7))
        );
    }

    #[test]
    fn loopback_link_local_and_non_global_never_win() {
        let none = [
            addr("127.0.0.1/8", false, true),
            addr("169.254.10.20/16", false, true),
            addr("10.0.0.7/24", false, false),
            addr("0.0.0.0/0", false, true),
        ];
        assert_eq!(choose_ipv4(&none), None);
        assert_eq!(choose_ipv4(&[]), None);
    }

    #[test]
    fn netlink_messages_become_addresses() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 24;
        msg.header.scope = AddressScope::Universe;
        msg.attributes = vec![
            AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
        ];
        assert_eq!(from_message(&msg), Some(addr("10.0.0.7/24", false, true)));
        msg.attributes.push(AddressAttribute::Flags(
            AddressFlags::Secondary | AddressFlags::Permanent,
        ));
        assert_eq!(from_message(&msg), Some(addr("10.0.0.7/24", true, true)));
        msg.attributes = vec![AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(
            169, 254, 1, 1,
        )))];
        msg.header.flags = AddressHeaderFlags::Secondary;
        msg.header.scope = AddressScope::Link;
        msg.header.prefix_len = 16;
        assert_eq!(
            from_message(&msg),
            Some(addr("169.254.1.1/16", true, false))
        );
        msg.attributes = vec![AddressAttribute::Local("fe80::1".parse().expect("v6"))];
        assert_eq!(from_message(&msg), None);
    }

    /// Deliberately reads this machine: the loopback interface, present in
    /// every network namespace, checks the rtnetlink plumbing end to end.
    #[tokio::test]
    async fn netlink_lists_loopback_as_host_scoped() {
        let addrs = netlink_ipv4_addresses("lo").await.expect("netlink answers");
        let lo = addrs
            .iter()
            .find(|a| a.address == Ipv4Addr::LOCALHOST)
            .expect("lo has 127.0.0.1");
        assert_eq!((lo.prefix_len, lo.secondary, lo.global), (8, false, false));
        assert_eq!(choose_ipv4(&addrs), None);
        assert!(matches!(
            netlink_ipv4_addresses("muster-nosuch0").await,
            Err(NetInfoError::NoSuchInterface(_))
        ));
    }

    #[tokio::test]
    async fn host_network_refuses_netlink_under_another_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = HostNetwork::new(dir.path());
        assert_eq!(net.route_table().await.expect("missing is fine"), None);
        assert!(matches!(
            net.ipv4_addresses("lo").await,
            Err(NetInfoError::NotThisMachine(_))
        ));
    }
}
