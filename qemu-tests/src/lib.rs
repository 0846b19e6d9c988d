//! Tier-2 (QEMU) end-to-end tests live here.
//!
//! Nothing is here yet: the node image (issue "immutable node image") and the
//! `muster lab` harness do not exist, so this crate has no tests. It is in the
//! workspace so the layout of `DESIGN.md` holds; see `README.md` beside it.
