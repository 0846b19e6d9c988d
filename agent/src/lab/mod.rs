//! The local QEMU lab (`muster lab`).

pub mod cloud;
