//! A GCE managed instance group for tier-1 tests: the stateful Compute fake
//! (`fake_compute.rs`) served from a host of the test network as metadata
//! server and Compute API, and test hosts added as instances of its group.
//! Used by `gce_group.rs` and the fault campaign's GCE runs.

use crate::support::cluster::Cluster;
use crate::support::fake_compute::{self, FakeCompute};
use crate::support::netns::Host;

use std::time::Duration;

/// The fake served in `host`'s namespace until dropped.
pub struct Served {
    pub base: url::Url,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn serve_in(host: &Host, fake: &FakeCompute) -> Served {
    let ns = std::fs::File::open(host.netns_path()).expect("open netns");
    let (ip, fake) = (host.ip(), fake.clone());
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let server = fake.serve_any().await;
            port_tx
                .send(server.base.port().expect("port"))
                .expect("send port");
            let _ = stopped.await;
        });
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("fake compute starts");
    Served {
        base: url::Url::parse(&format!("http://{ip}:{port}/")).expect("url"),
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// A host for a new instance of the group, with the facts GCE would give.
pub fn add_instance(c: &mut Cluster, fake: &FakeCompute, name: &str) -> (usize, u64) {
    let mut id = 0;
    let i = c.add_host_with_facts(|host, _| {
        let instance = fake.with(|s| s.add(name, fake_compute::ZONE, host.ip(), true));
        id = instance.id;
        format!(
            "instance_id: \"{}\"\nhostname: {name}\nprivate_ipv4: {}\nregion: us-central1\n\
             zone: {}\ngroup: {}\n",
            instance.id,
            host.ip(),
            fake_compute::ZONE,
            fake_compute::GROUP
        )
    });
    (i, id)
}

/// Points the cluster's agents at the served fake: Compute API and metadata
/// server.
pub fn attach(c: &mut Cluster, served: &Served) {
    c.append_config(&format!(
        "cloud:\n  endpoint: {}\n",
        served.base.join("compute/v1/").expect("url")
    ));
    c.agent_flags.push(format!("--endpoint={}", served.base));
}
