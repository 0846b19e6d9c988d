//! From texts to a validated [`Config`]: parse each layer, merge, decode
//! with error recovery, then run the semantic checks. Pure: no disk.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::decode::decode;
use super::error::{ConfigError, ConfigErrors};
use super::locate::Seg;
use super::merge::merge;
use super::overrides::cmdline_layer;
use super::secret::is_secret_key;
use super::tree::{Entry, Loc, Node, Origin, Value, parse_stream};
use super::types::Config;
use super::userdata;
use super::validate::validate;
use crate::cmdline::KernelCmdline;

/// Where the image keeps its built-in defaults layer.
pub const DEFAULTS_PATH: &str = "/usr/lib/muster/defaults.yaml";

/// Stop collecting after this many errors: the rest are noise.
pub(crate) const MAX_ERRORS: usize = 100;

/// One layer of config text and where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Layer {
    /// Shown in errors: a path, or a phrase like `user data (aws)`.
    pub origin: String,
    pub text: String,
}

impl Layer {
    pub fn new(origin: impl Into<String>, text: impl Into<String>) -> Self {
        Layer {
            origin: origin.into(),
            text: text.into(),
        }
    }

    /// Reads a layer from a file, named by its path.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Layer::new(
            path.display().to_string(),
            std::fs::read_to_string(path)?,
        ))
    }

    /// Like [`Layer::read`], but a missing file is no layer (an image
    /// without a defaults file).
    pub fn read_optional(path: &Path) -> std::io::Result<Option<Self>> {
        match Layer::read(path) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// The text may hold the cluster secret.
impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("origin", &self.origin)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

/// Merges the layers (image defaults < user data < kernel command line)
/// and validates the result. All problems are reported together.
pub fn load(
    defaults: Option<Layer>,
    user_data: Option<Layer>,
    cmdline: &KernelCmdline,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut trees = Vec::new();
    if let Some(layer) = defaults {
        match parse_layer(&layer, 0) {
            Ok(tree) => trees.push(tree),
            Err(e) => errors.push(e),
        }
    }
    if let Some(layer) = user_data {
        match parse_user_data(&layer) {
            Ok(mut parts) => trees.append(&mut parts),
            Err(mut e) => errors.append(&mut e),
        }
    }
    match cmdline_layer(cmdline) {
        Ok(Some(tree)) => trees.push(tree),
        Ok(None) => {}
        Err(mut e) => errors.append(&mut e),
    }
    let mut secrets = Vec::new();
    trees
        .iter()
        .for_each(|t| collect_secret_values(t, false, &mut secrets));
    if !errors.is_empty() {
        return Err(finish(errors, &secrets));
    }

    let merged = trees.into_iter().reduce(merge).unwrap_or_else(empty_root);
    let decoded = decode(merged.clone());
    let mut errors = decoded.errors;
    if let Some(config) = decoded.config {
        errors.extend(validate(&config, &merged, &decoded.pruned));
        if errors.is_empty() {
            return Ok(config);
        }
    }
    Err(finish(errors, &secrets))
}

/// Validates one config document (`muster config validate FILE`).
pub fn validate_text(origin: &str, text: &str) -> Result<Config, ConfigErrors> {
    load(
        None,
        Some(Layer::new(origin, text)),
        &KernelCmdline::default(),
    )
}

fn empty_root() -> Node {
    Node::null(Loc {
        origin: Arc::new(Origin {
            name: "(no config given)".into(),
            rank: 0,
            has_positions: false,
        }),
        line: 1,
        col: 1,
        bytes: 0..0,
    })
}

/// Sorts errors into source order, drops repeats, scrubs secrets and keeps
/// the first [`MAX_ERRORS`].
fn finish(mut errors: Vec<(usize, ConfigError)>, secrets: &[String]) -> ConfigErrors {
    errors.sort_by(|(ra, a), (rb, b)| (ra, a.line, a.col).cmp(&(rb, b.line, b.col)));
    let mut seen = HashSet::new();
    let mut out: Vec<ConfigError> = Vec::new();
    let mut dropped = 0usize;
    for (_, mut e) in errors {
        if !seen.insert(e.clone()) {
            continue;
        }
        if out.len() == MAX_ERRORS {
            dropped += 1;
            continue;
        }
        e.scrub(secrets);
        out.push(e);
    }
    if let (true, Some(last)) = (dropped > 0, out.last()) {
        out.push(ConfigError {
            origin: last.origin.clone(),
            line: None,
            col: None,
            path: String::new(),
            message: format!("{dropped} more errors not shown"),
        });
    }
    ConfigErrors::new(out)
}

pub(crate) fn located(loc: &Loc, segs: &[Seg], message: impl Into<String>) -> (usize, ConfigError) {
    (loc.origin.rank, ConfigError::at(loc, segs, message))
}

/// The kernel command line's rank: after the defaults (0) and every user
/// data part (1, 2, ...), for the order errors are listed in.
pub(crate) const CMDLINE_RANK: usize = 1000;

/// User data: one layer, or the cloud-config parts of a MIME multi-part
/// message (gzip already undone by the metadata provider), each parsed on
/// its own so errors point into the part. Returned in merge order: the
/// last part first, since cloud-init's default merge lets an earlier part
/// keep its values and a later one only add missing keys.
fn parse_user_data(layer: &Layer) -> Result<Vec<Node>, Vec<(usize, ConfigError)>> {
    let start = |rank| Loc {
        origin: Arc::new(Origin {
            name: layer.origin.clone(),
            rank,
            has_positions: true,
        }),
        line: 1,
        col: 1,
        bytes: 0..0,
    };
    let unpacked = userdata::unpack(&layer.origin, &layer.text)
        .map_err(|e| vec![located(&start(1), &[], format!("user data {e}"))])?;
    if !unpacked.multipart {
        return parse_layer(layer, 1).map(|n| vec![n]).map_err(|e| vec![e]);
    }
    for note in &unpacked.ignored {
        tracing::info!(origin = %layer.origin, "user data {note}");
    }
    let mut trees = Vec::new();
    let mut errors = Vec::new();
    for (i, part) in unpacked.parts.iter().enumerate() {
        match parse_text(&part.origin, &part.text, 1 + i, part.cloud_config, true) {
            Ok(Some(tree)) => trees.push(tree),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if trees.is_empty() {
        let found: Vec<&str> = unpacked.parts.iter().map(|p| p.origin.as_str()).collect();
        return Err(vec![located(
            &start(1),
            &[],
            format!(
                "the MIME user data has no text/cloud-config part with a `muster:` key (cloud-config parts: {}; {} other part(s) ignored)",
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join("; ")
                },
                unpacked.ignored.len()
            ),
        )]);
    }
    trees.reverse();
    Ok(trees)
}

/// Parses one layer: plain Muster YAML/JSON, or `#cloud-config` with a
/// `muster:` key. Returns the config mapping (or null).
fn parse_layer(layer: &Layer, rank: usize) -> Result<Node, (usize, ConfigError)> {
    let cloud_config = layer
        .text
        .trim_start_matches('\u{feff}')
        .starts_with("#cloud-config");
    parse_text(&layer.origin, &layer.text, rank, cloud_config, false)
        .map(|n| n.unwrap_or_else(|| unreachable!("a required `muster:` key is never None")))
}

/// Parses one document. `optional_muster`: a cloud-config part of a
/// multi-part message may hold no `muster:` key (`Ok(None)`).
fn parse_text(
    name: &str,
    text: &str,
    rank: usize,
    cloud_config: bool,
    optional_muster: bool,
) -> Result<Option<Node>, (usize, ConfigError)> {
    let origin = Arc::new(Origin {
        name: name.to_string(),
        rank,
        has_positions: true,
    });
    let start = Loc {
        origin: origin.clone(),
        line: 1,
        col: 1,
        bytes: 0..0,
    };
    let head = text.trim_start_matches('\u{feff}');
    let refuse = |what: &str| {
        located(
            &start,
            &[],
            format!(
                "user data is {what}; Muster reads YAML (or JSON) settings, or a #cloud-config with a `muster:` key"
            ),
        )
    };
    if head.starts_with("#!") {
        return Err(refuse("a script (`#!`)"));
    }
    let mut docs = parse_stream(text, &origin).map_err(|e| located(&e.loc, &[], e.message))?;
    if docs.len() > 1 {
        let second = &docs[1].loc;
        return Err(located(
            second,
            &[],
            "more than one YAML document; Muster reads exactly one",
        ));
    }
    let root = docs.pop().unwrap_or_else(|| Node::null(start.clone()));
    let root = if cloud_config {
        match muster_key(root, &start, optional_muster)? {
            Some(r) => r,
            None => return Ok(None),
        }
    } else {
        root
    };
    match &root.value {
        Value::Map(_) => Ok(Some(root)),
        _ if root.is_null() => Ok(Some(root)),
        other => Err(located(
            &root.loc,
            &[],
            format!("expected a mapping of settings, found {}", kind(other)),
        )),
    }
}

/// The value of `muster:` in a cloud-config; other keys belong to
/// cloud-init, which the image does not run, so they are only noted.
fn muster_key(
    root: Node,
    start: &Loc,
    optional: bool,
) -> Result<Option<Node>, (usize, ConfigError)> {
    let Value::Map(entries) = root.value else {
        return Err(located(
            &root.loc,
            &[],
            "a #cloud-config must be a mapping with a `muster:` key",
        ));
    };
    let (ours, others): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.key == "muster");
    if !others.is_empty() {
        let names: Vec<&str> = others.iter().map(|e| e.key.as_str()).collect();
        tracing::info!(
            origin = %start.origin.name,
            keys = %names.join(", "),
            "ignoring cloud-init keys in #cloud-config: the image has no cloud-init; Muster reads only `muster:`"
        );
    }
    match ours.into_iter().next() {
        Some(e) => Ok(Some(e.value)),
        None if optional => Ok(None),
        None => Err(located(
            start,
            &[],
            "#cloud-config has no `muster:` key holding the cluster config",
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Scalar(_) => "a single value",
        Value::Seq(_) => "a sequence",
        Value::Map(_) => "a mapping",
    }
}

/// Values under secret-like keys, to scrub from any message.
fn collect_secret_values(node: &Node, secret: bool, out: &mut Vec<String>) {
    match &node.value {
        Value::Scalar(s) if secret && !s.text.is_empty() => out.push(s.text.clone()),
        Value::Scalar(_) => {}
        Value::Seq(items) => items
            .iter()
            .for_each(|i| collect_secret_values(&i.node, secret, out)),
        Value::Map(entries) => entries
            .iter()
            .for_each(|e| collect_secret_values(&e.value, secret || is_secret_key(&e.key), out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{EtcdPlacement, VipMode};

    const SECRET: &str = "fake-cluster-secret-do-not-use-0123456789";

    fn user(text: &str) -> Option<Layer> {
        Some(Layer::new("user.yaml", text))
    }

    fn errs(r: Result<Config, ConfigErrors>) -> Vec<String> {
        r.expect_err("should fail")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = validate_text(
            "u",
            &format!("cluster:\n  name: demo\n  secret: {SECRET}\n"),
        )
        .expect("valid");
        assert_eq!(c.topology.control_plane.count, 3);
        assert_eq!(c.topology.etcd.placement, EtcdPlacement::ControlPlane);
        assert_eq!(c.kubernetes.pod_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(c.api_endpoint.resolved_mode(VipMode::Arp), VipMode::None);
        assert_eq!(c.api_endpoint.port, 6443);
    }

    #[test]
    fn json_is_yaml_too() {
        let text = format!(
            "{{\"cluster\": {{\"name\": \"demo\", \"secret\": \"{SECRET}\"}}, \"addons\": [\"argocd\"]}}"
        );
        let c = validate_text("u.json", &text).expect("valid");
        assert_eq!(c.addons[0].name, "argocd");
    }

    #[test]
    fn collects_unknown_keys_type_errors_and_semantic_errors_together() {
        let text = format!(
            "cluster:\n  name: demo\n  secret: {SECRET}\napiEndpoint:\n  vpi: 10.0.0.1\n  port: high\ntopology:\n  etcd:\n    placement: dedicated\n    count: 2\n"
        );
        let e = errs(validate_text("user.yaml", &text));
        assert_eq!(
            e,
            [
                "user.yaml:5:3: apiEndpoint.vpi: unknown key `vpi`; did you mean `vip`?",
                "user.yaml:6:9: apiEndpoint.port: invalid type: string \"high\", expected a whole number from 0 to 65535",
                "user.yaml:10:12: topology.etcd.count: must be 1, 3, 5 or 7: a 2-member etcd loses quorum when either member fails, worse than one member; use 3",
            ]
        );
    }

    #[test]
    fn missing_name_and_secret_are_reported_at_the_cluster_key() {
        let e = errs(validate_text(
            "u",
            "cluster: {}\ntopology:\n  controlPlane:\n    count: 4\n",
        ));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("u:1:1: cluster.name: missing required key `name`"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("u:4:12: topology.controlPlane.count: must be 1, 3 or 5"),
            "{e:?}"
        );
    }

    #[test]
    fn cloud_config_muster_key() {
        let text = format!(
            "#cloud-config\npackages: [vim]\nmuster:\n  cluster:\n    name: demo\n    secret: {SECRET}\n  bogus: 1\n"
        );
        let e = errs(validate_text("ud", &text));
        assert_eq!(
            e,
            [
                "ud:7:3: bogus: unknown key `bogus`; expected `cluster`, `topology`, `discovery`, `apiEndpoint`, `kubernetes`, `mesh`, `dns`, `addons`, `metadata` or `cloud`"
            ]
        );
        let e = errs(validate_text("ud", "#cloud-config\npackages: [vim]\n"));
        assert!(e[0].contains("no `muster:` key"), "{e:?}");
    }

    #[test]
    fn layers_merge_and_errors_name_their_layer() {
        let defaults = Layer::new(
            "defaults.yaml",
            "kubernetes:\n  cni: calico\n  podCidr: 10.96.0.0/16\napiEndpoint:\n  port: 6443\n",
        );
        let user = user(&format!(
            "cluster:\n  name: demo\n  secret: {SECRET}\napiEndpoint:\n  vip: 10.0.0.5\n"
        ));
        let cmd = KernelCmdline::parse(
            "muster.platform=metal muster.apiEndpoint.mode=arp muster.topology.controlPlane.count=5",
        );
        let e = errs(load(Some(defaults.clone()), user.clone(), &cmd));
        assert_eq!(
            e,
            [
                "defaults.yaml:3:12: kubernetes.podCidr: kubernetes.podCidr `10.96.0.0/16` and kubernetes.serviceCidr `10.96.0.0/12` overlap"
            ]
        );

        let cmd = KernelCmdline::parse(
            "muster.apiEndpoint.mode=arp muster.kubernetes.podCidr=10.244.0.0/16 muster.topology.controlPlane.count=5",
        );
        let c = load(Some(defaults), user, &cmd).expect("valid");
        assert_eq!(c.topology.control_plane.count, 5);
        assert_eq!(c.api_endpoint.mode, Some(VipMode::Arp));
        assert_eq!(
            c.api_endpoint.vip.map(|v| v.to_string()).as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(c.kubernetes.cni, crate::config::types::Cni::Calico);
    }

    #[test]
    fn cmdline_errors_name_the_parameter_and_hide_secrets() {
        let cmd = KernelCmdline::parse(&format!(
            "muster.clustr.name=x muster.cluster.secret={SECRET} muster.topology.controlPlane.count=two"
        ));
        let e = errs(load(None, user("cluster: {name: demo}\n"), &cmd));
        assert_eq!(
            e,
            [
                "kernel command line: muster.clustr.name=x: clustr: unknown key `clustr`; did you mean `cluster`?",
                "kernel command line: muster.topology.controlPlane.count=two: topology.controlPlane.count: invalid type: string \"two\", expected a whole number from 0 to 255",
            ]
        );
        let cmd = KernelCmdline::parse(
            "muster.cluster.secret=short muster.config=http://x/ muster.platform=qemu",
        );
        let e = errs(load(None, user("cluster: {name: demo}\n"), &cmd));
        assert_eq!(
            e,
            [
                "kernel command line: muster.cluster.secret=<redacted>: cluster.secret: too short: the cluster secret needs at least 32 characters (e.g. `openssl rand -base64 32`)"
            ]
        );
    }

    #[test]
    fn secret_never_in_errors() {
        for text in [
            format!("cluster:\n  name: demo\n  secret: [{SECRET}]\n"),
            format!("cluster:\n  name: demo\n  secret: {{a: {SECRET}}}\n"),
            "cluster:\n  name: demo\n  secret: tooshort-but-secret\n".to_string(),
            format!("cluster:\n  name: demo\n  secret: {SECRET}\n  secret2: {SECRET}\n"),
            format!("cluster:\n  name: {SECRET}_X\n  secret: {SECRET}\n"),
        ] {
            let e = validate_text("u", &text).expect_err("invalid");
            let all = format!("{e}\n{e:?}");
            assert!(
                !all.contains(SECRET) && !all.contains("tooshort-but-secret"),
                "{all}"
            );
        }
    }

    #[test]
    fn syntax_errors_and_odd_documents() {
        let e = errs(validate_text("u", "a: [1, 2\nb: 1\n"));
        assert!(e[0].starts_with("u:2:2: "), "{e:?}");
        let e = errs(validate_text("u", "a: 1\n---\nb: 2\n"));
        assert!(e[0].contains("more than one YAML document"), "{e:?}");
        let e = errs(validate_text("u", "- a\n"));
        assert!(e[0].contains("expected a mapping"), "{e:?}");
        let e = errs(validate_text("u", "#!/bin/sh\necho hi\n"));
        assert!(e[0].contains("script"), "{e:?}");
        let e = errs(validate_text("u", "cluster: &a {name: x, secret: *a}\n"));
        assert!(e[0].contains("alias"), "{e:?}");
        let e = errs(validate_text("u", "a: 1\na: 2\n"));
        assert!(
            e[0].contains("duplicate key `a` (first given on line 1)"),
            "{e:?}"
        );
        let e = errs(load(None, None, &KernelCmdline::default()));
        assert!(e[0].contains("missing required key `name`"), "{e:?}");
    }

    #[test]
    fn error_count_is_capped() {
        let peers: Vec<String> = (0..500).map(|i| format!("bad_peer_{i}")).collect();
        let text = format!(
            "cluster: {{name: demo, secret: {SECRET}}}\ndiscovery:\n  static:\n    peers: [{}]\n",
            peers.join(", ")
        );
        let e = validate_text("u", &text).expect_err("invalid peers");
        assert_eq!(e.len(), MAX_ERRORS + 1);
        assert_eq!(
            e.errors()[MAX_ERRORS].to_string(),
            "u: 400 more errors not shown"
        );
    }

    #[test]
    fn cmdline_values_are_yaml_including_flow_collections() {
        let cmd = KernelCmdline::parse(
            r#"muster.addons=[argocd,metallb] muster.topology.workers.labels="{node.example.com/rack: r12}" muster.metadata.allowImdsv1"#,
        );
        let c = load(
            None,
            user(&format!("cluster: {{name: demo, secret: {SECRET}}}\n")),
            &cmd,
        )
        .expect("valid");
        let names: Vec<&str> = c.addons.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["argocd", "metallb"]);
        assert_eq!(
            c.topology
                .workers
                .labels
                .get("node.example.com/rack")
                .map(String::as_str),
            Some("r12")
        );
        assert!(c.metadata.allow_imdsv1, "a bare `muster.KEY` means true");
        let cmd = KernelCmdline::parse("muster.addons=[unclosed muster..x=1");
        let e = errs(load(
            None,
            user(&format!("cluster: {{name: demo, secret: {SECRET}}}\n")),
            &cmd,
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with(
                "kernel command line: muster.addons=[unclosed: the value is not a valid YAML value"
            ),
            "{e:?}"
        );
    }
}
