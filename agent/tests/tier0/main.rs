//! Tier 0: pure decisions and clients against in-process fakes (parsing,
//! planning, rendering, PKI, metadata and cloud clients on loopback). One
//! test binary for the whole tier: every binary links the full dependency
//! tree, so one instead of seventeen saves gigabytes of disk and minutes of
//! link time on CI.

#[path = "../support/mod.rs"]
mod support;

mod backup_gcs;
mod bootstrap_simulation;
mod config_errors;
mod config_examples;
mod config_proptest;
mod config_schema;
mod discovery_aws_fake;
mod discovery_gce_fake;
mod dns_cloudflare;
mod dns_google;
mod image_facts;
mod lab_cloud;
mod lab_spec;
mod metadata_aws;
mod metadata_clouds;
mod metadata_detect;
mod metadata_fixtures;
mod metadata_local;
mod metadata_metal;
mod metadata_props;
mod pki_ca;
mod pki_leaf;
mod pki_store;
mod pki_tls;
mod status_endpoint;
mod userdata;
mod vip_gce_fake;
