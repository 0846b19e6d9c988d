//! Where the tests find the etcd the image ships (Debian 13's etcd-server
//! 3.5, unpacked by `ci/install-deps.sh`); `MUSTER_ETCD_BIN` overrides.

use std::path::PathBuf;

pub fn etcd_bin() -> PathBuf {
    let path = std::env::var("MUSTER_ETCD_BIN")
        .unwrap_or_else(|_| "/opt/muster-test/etcd/usr/bin/etcd".into());
    let path = PathBuf::from(path);
    assert!(
        path.is_file() && path.with_file_name("etcdctl").is_file(),
        "etcd/etcdctl not found at {} (set MUSTER_ETCD_BIN): run `bash ci/install-deps.sh`",
        path.display()
    );
    path
}

pub fn etcdctl_bin() -> PathBuf {
    etcd_bin().with_file_name("etcdctl")
}
