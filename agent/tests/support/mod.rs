//! Helpers shared by the integration tests. Each test binary uses some of
//! them, so unused ones are expected.
#![allow(dead_code)]

pub mod fake_http;
pub mod moto;
