//! The example configurations the README points to load and validate, so the docs stay true.

use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn edge_example_is_valid_and_complete() {
    let text = read("edge-node/examples/edge.toml");
    let cfg: onda_edge::EdgeConfig =
        onda_shared::config::load_from(&text, "edge.toml", Vec::new()).expect("parses");
    let v = cfg.validate().expect("validates");
    assert_eq!(v.config.mounts.len(), 2);
    assert_eq!(v.config.mounts[0].fallback.as_deref(), Some("/backup"));
    // Every limit has a line in the example.
    let defaults = serde_json::to_value(onda_edge::config::LimitsConfig::default()).expect("json");
    for key in defaults.as_object().expect("object").keys() {
        assert!(
            text.contains(&format!("{key} =")),
            "edge.toml does not document limits.{key}"
        );
    }
}

#[test]
fn control_plane_example_is_valid() {
    let text = read("control-plane/examples/cp.toml");
    let cfg: onda_control_plane::config::ControlPlaneConfig =
        onda_shared::config::load_from(&text, "cp.toml", Vec::new()).expect("parses");
    let v = cfg.validate().expect("validates");
    assert!(v.cluster.is_some(), "the example runs a cluster");
}

#[test]
fn agent_example_is_valid() {
    let text = read("agent/examples/agent.toml");
    let cfg: onda_agent::config::AgentConfig =
        onda_shared::config::load_from(&text, "agent.toml", Vec::new()).expect("parses");
    cfg.validate().expect("validates");
    assert_eq!(cfg.control_plane.addresses.len(), 2);
}
