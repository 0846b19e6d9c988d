//! Tier 2: the real node image booted in QEMU VMs by `muster lab`, on a
//! private bridge in a network namespace, with the lab's fake cloud (AWS
//! IMDSv2 + Auto Scaling group API) on the host side. Needs root, QEMU,
//! OVMF and dnsmasq (ci/install-deps.sh) and the image (image/build.sh).
//! Under TCG (no vmx/svm) a VM boots in about a minute; nextest runs these
//! one at a time (.config/nextest.toml).

mod support;

mod image_boot;
mod lab;
mod nodes;
mod workload;
