//! DHCP for the lab's VMs: dnsmasq on the bridge, one fixed lease per VM
//! (MAC → IP), as a VPC's DHCP hands each instance its private address.
//! DNS is off: the VMs resolve nothing in a lab. dnsmasq stays root: the
//! lab directory is private (0700), and it only listens in the lab namespace.

use super::spec::{BootMode, LabPaths, LabState, node_name};
use crate::lab::net::BRIDGE;

/// dnsmasq's main config: static leases only, from the hosts file, which
/// `lab add` extends and dnsmasq rereads on SIGHUP.
pub fn dnsmasq_conf(lab: &LabState, paths: &LabPaths) -> String {
    let gw = lab.gateway();
    let [a, b, c, _] = gw.octets();
    // Network boot: the NIC's iPXE ROM takes an HTTP URL as its boot file.
    let pxe = match lab.boot {
        BootMode::Disk => String::new(),
        BootMode::Pxe => format!("dhcp-boot=http://{gw}/pxe/boot.ipxe\n"),
    };
    format!(
        "# Written by `muster lab` for lab {name}.\n\
         port=0\n\
         user=root\n\
         interface={BRIDGE}\n\
         bind-interfaces\n\
         dhcp-range={net}.0,static,255.255.255.0,12h\n\
         dhcp-option=option:router,{gw}\n\
         dhcp-hostsfile={hosts}\n\
         dhcp-leasefile={leases}\n\
         dhcp-authoritative\n\
         log-dhcp\n\
         {pxe}",
        name = lab.name,
        net = format_args!("{a}.{b}.{c}"),
        hosts = paths.dnsmasq_hosts().display(),
        leases = paths.dir.join("dnsmasq.leases").display(),
    )
}

/// The site's iPXE script, as a boot server would have: where the PXE set
/// is served, then the image's own `muster.ipxe`.
pub fn ipxe_site_script(lab: &LabState) -> String {
    format!(
        "#!ipxe\n\
         # Written by `muster lab` for lab {name}: the boot server's part.\n\
         set base http://{gw}/pxe/\n\
         chain ${{base}}muster.ipxe\n",
        name = lab.name,
        gw = lab.gateway(),
    )
}

/// One `MAC,IP,hostname` line per node (gone nodes keep theirs: their
/// address is never reused within a lab).
pub fn dnsmasq_hosts(lab: &LabState) -> String {
    lab.nodes
        .iter()
        .map(|n| {
            format!(
                "{},{},{}\n",
                lab.node_mac(n.index),
                lab.node_ip(n.index),
                node_name(n.index)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::spec::{Accel, LabState};

    fn lab() -> LabState {
        let mut lab = LabState {
            name: "t".into(),
            subnet: 3,
            image: "/x".into(),
            accel: Accel::Tcg,
            memory_mb: 1024,
            cpus: 1,
            control_plane: 3,
            workers: 0,
            secret: "s".repeat(40),
            created_at: 1_700_000_000,
            boot: Default::default(),
            kernel_args: Vec::new(),
            nodes: vec![],
        };
        lab.add_node(0).expect("node 1");
        lab.add_node(1).expect("node 2");
        lab
    }

    #[test]
    fn every_node_has_a_fixed_lease_in_the_lab_subnet() {
        let hosts = dnsmasq_hosts(&lab());
        assert_eq!(
            hosts,
            "52:54:00:77:03:01,10.77.3.11,node-1\n52:54:00:77:03:02,10.77.3.12,node-2\n"
        );
    }

    #[test]
    fn the_config_serves_only_the_bridge_and_routes_via_the_gateway() {
        let lab = lab();
        let conf = dnsmasq_conf(&lab, &LabPaths::new(std::path::Path::new("/labs"), "t"));
        assert!(conf.contains("interface=br0\n"), "{conf}");
        assert!(conf.contains("dhcp-range=10.77.3.0,static"), "{conf}");
        assert!(
            conf.contains("dhcp-option=option:router,10.77.3.1\n"),
            "{conf}"
        );
        assert!(
            conf.contains("dhcp-hostsfile=/labs/t/dnsmasq.hosts\n"),
            "{conf}"
        );
        assert!(conf.contains("port=0\n"), "{conf}");
    }
}
