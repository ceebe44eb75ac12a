//! `grafana/`: the Prometheus config and alert rules pass `promtool check`, the dashboards are
//! well-formed, and every `onda_` metric a dashboard or rule names is one the code exports: the
//! names are checked against what a running control plane and agent (with a station on the air,
//! a listener and an API request) and a standalone edge with a live stream serve on `/metrics`,
//! not against a hand-kept list.

use onda_tests::cluster::audio_bytes;
use onda_tests::edge::EdgeNode;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::wait_for;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn grafana() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana")
}

fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(grafana().join("prometheus"))
        .output()
        .expect("promtool (Debian prometheus) is installed by scripts/install-deps.sh test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn promtool_accepts_the_config_and_the_rules() {
    let text = promtool(&["check", "config", "prometheus.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    let text = promtool(&["check", "rules", "alerts.yml"]);
    assert!(text.contains("rules found"), "{text}");
}

/// Every `onda_…` name in `text`.
fn onda_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("onda_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if before_ok {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The expressions of every dashboard panel (and template variable), by dashboard file.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = grafana().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("grafana/dashboards")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "dashboards: {files:?}");
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("JSON");
        assert!(
            v["uid"].is_string() && v["title"].is_string(),
            "{name}: uid and title"
        );
        let panels = v["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name} has no panels");
        for p in panels {
            // A row only groups the panels below it: it has no query.
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().expect("targets");
            assert!(
                !targets.is_empty(),
                "{name}: panel {} has no query",
                p["title"]
            );
            for t in targets {
                out.push((name.clone(), t["expr"].as_str().expect("expr").to_string()));
            }
        }
        for var in v["templating"]["list"].as_array().into_iter().flatten() {
            out.push((
                name.clone(),
                var["definition"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_dashboards_and_rules_is_exported() {
    let fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: "monitoring-test-admin-token-0123",
        node_ttl_ms: 1000,
        nodes: &["mon-1"],
        ..ClusterSpec::default()
    })
    .await;
    let (cp, agent) = (&fx.cp, &fx.agents[0]);
    let st = cp.station("Watched FM").await;
    let url = format!(
        "{}/{}/radio.mp3",
        agent.edge_url,
        st["slug"].as_str().expect("slug")
    );
    wait_for("on the air", Duration::from_secs(30), || {
        audio_bytes(&url, 4096)
    })
    .await;
    // A listener that stays while the metrics are read.
    let mut listener = onda_shared::http::get(&url).await.expect("listen");
    listener.chunk().await.expect("audio");
    // Live video runs on edges too: a standalone one with a live stream exports those series
    // (nodes of a cluster do not get live streams from the control plane yet).
    let (live_edge, _) =
        EdgeNode::start_live("[[live_streams]]\nname = \"show\"\nkey = \"monitoring-key-0123\"\n")
            .await;

    // Until both pages carry the series that need activity (a usage report stored, the
    // station's listeners seen by the view).
    let scraped = wait_for("every exported series", Duration::from_secs(20), || async {
        let mut text = String::new();
        for u in [
            format!("{}/metrics", cp.api),
            format!("{}/metrics", agent.edge_url),
            live_edge.url("/metrics"),
        ] {
            text.push_str(&onda_shared::http::get(&u).await.ok()?.text().await.ok()?);
        }
        let ready = text.contains("onda_usage_reports_total{result=\"stored\"} 1")
            || text.lines().any(|l| {
                l.starts_with("onda_usage_reports_total{result=\"stored\"}") && !l.ends_with(" 0")
            });
        (ready && text.contains("onda_station_listeners{")).then_some(text)
    })
    .await;
    let exported: BTreeSet<String> = scraped
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();

    let rules = std::fs::read_to_string(grafana().join("prometheus/alerts.yml")).expect("rules");
    let mut uses: Vec<(String, String)> = dashboard_queries();
    uses.push(("alerts.yml".to_string(), rules));
    let mut missing = Vec::new();
    let mut checked = 0;
    for (file, expr) in &uses {
        for name in onda_names(expr) {
            checked += 1;
            if !exported.contains(&name) {
                missing.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(checked > 20, "only {checked} metric uses found");
    assert!(
        missing.is_empty(),
        "metrics named in grafana/ but not exported: {missing:?}\nexported: {exported:?}"
    );
    drop(listener);
}
