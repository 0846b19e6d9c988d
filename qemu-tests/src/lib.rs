//! Tier-2 (QEMU) end-to-end tests: the real node image booted in VMs by
//! `muster lab`. The tests are in `tests/tier2/`; this crate has no code of
//! its own (a package needs one library or binary target).
