//! The cluster with real processes: `onda control-plane` (one or two replicas, etcd or the
//! in-process coordinator), real etcd, `onda agent` nodes joined with tokens, ffmpeg tones as the
//! stations' sources, and ffprobe and raw HTTP as listeners through the redirector.

use onda_tests::cluster::{Agent, audio_bytes, failed_join, kill_carrier_and_time_failover};
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::wait_for;
use reqwest::Method;
use std::time::{Duration, Instant};

const ADMIN: &str = "cluster-test-admin-token-0123456789";

/// ffprobe through the redirector: the codec it finds.
async fn probe(url: &str) -> String {
    onda_tests::cluster::ffprobe_codec(url).await
}

#[tokio::test]
async fn joins_need_a_valid_token_and_revoked_nodes_are_refused() {
    let fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: ADMIN,
        node_ttl_ms: 2000,
        ..ClusterSpec::default()
    })
    .await;
    let cp = &fx.cp;
    let cps = vec![cp.quic.clone()];

    // Tokens that cannot work, each with the reason in the agent's error.
    let good = cp.join_token(600).await;
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[3] = "ab".repeat(32);
    let wrong_pin = parts.join(".");
    let err = failed_join(&cps, &wrong_pin).await;
    assert!(err.contains("CA fingerprint is"), "{err}");
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[2] = "WrongSecret".to_string();
    let err = failed_join(&cps, &parts.join(".")).await;
    assert!(err.contains("not known to this cluster"), "{err}");
    let err = failed_join(&cps, "not-a-token").await;
    assert!(err.contains("not an Onda join token"), "{err}");

    let short = cp.join_token(1).await;
    let (_, tokens) = cp.call(Method::GET, "/v1/join-tokens", None).await;
    let expires = tokens
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| short.contains(t["id"].as_str().unwrap_or("-")))
        })
        .and_then(|t| t["expires_at"].as_str())
        .map(str::to_string)
        .expect("short token listed");
    wait_for("the short token to expire", Duration::from_secs(5), || {
        let expires = expires.clone();
        async move {
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .ok()?;
            (now > expires).then_some(())
        }
    })
    .await;
    let err = failed_join(&cps, &short).await;
    assert!(err.contains("expired"), "{err}");

    // The good token works once.
    let node = Agent::start("edge-a", &cps, Some(&good)).await;
    let err = failed_join(&cps, &good).await;
    assert!(err.contains("already used"), "{err}");
    let id = node.node_id();
    let status = wait_for("the node to be ready", Duration::from_secs(10), || async {
        let (_, n) = cp.call(Method::GET, &format!("/v1/nodes/{id}"), None).await;
        (n["status"] == "ready").then_some(n)
    })
    .await;
    assert_eq!(status["name"], "edge-a");
    assert_eq!(status["public_url"], node.edge_url.as_str());

    // Revoked: the connection is cut, the agent stops and says why, and a restart is refused.
    let (s, n) = cp
        .call(Method::POST, &format!("/v1/nodes/{id}/revoke"), None)
        .await;
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["status"], "revoked");
    let mut proc = node.proc;
    let exit = proc.wait_exit(Duration::from_secs(15)).await;
    assert!(!exit.success());
    assert!(proc.stderr().contains("revoked"), "{}", proc.logs());
    let dir = proc.into_dir();
    let mut again = onda_tests::process::Proc::start_in(
        "revoked-again",
        dir,
        &["agent", "--config", "agent.toml"],
        &[],
    );
    let exit = again.wait_exit(Duration::from_secs(15)).await;
    assert!(!exit.success());
    assert!(again.stderr().contains("revoked"), "{}", again.logs());
}

#[tokio::test]
async fn a_station_plays_through_the_redirector_and_fails_over_when_its_node_dies() {
    let mut fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: ADMIN,
        etcd: true,
        replica: "cp-1",
        node_ttl_ms: 1000,
        nodes: &["edge-1", "edge-2", "edge-3"],
        ..ClusterSpec::default()
    })
    .await;
    let (cp, agents) = (&fx.cp, &fx.agents);
    let station = cp.station("Failover FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let sid = station["id"].as_str().expect("id").to_string();
    let listen = format!("{}/listen/{slug}/radio.mp3", cp.api);

    let first = wait_for("the station on the air", Duration::from_secs(30), || {
        cp.redirect(&slug)
    })
    .await;
    assert_eq!(probe(&listen).await, "mp3");
    let placement = cp.placement(&sid).await;
    let origin = placement["origin"].as_str().expect("origin").to_string();
    let carrier = agents
        .iter()
        .position(|a| a.node_id() == origin)
        .expect("origin is one of ours");
    assert!(first.starts_with(&agents[carrier].edge_url), "{first}");

    // Playlists list every edge carrying the mount.
    let m3u = cp
        .http
        .get(format!("{listen}.m3u"))
        .send()
        .await
        .expect("m3u");
    assert_eq!(m3u.status().as_u16(), 200);
    let text = m3u.text().await.expect("m3u text");
    assert!(
        text.starts_with("#EXTM3U") && text.contains(&first),
        "{text}"
    );
    let pls = cp
        .http
        .get(format!("{listen}.pls"))
        .send()
        .await
        .expect("pls")
        .text()
        .await
        .expect("pls text");
    assert!(
        pls.contains("File1=") && pls.contains("NumberOfEntries=1"),
        "{pls}"
    );

    // kill -9 the carrying node; time until audio flows through the redirector again.
    let (failover, _) =
        kill_carrier_and_time_failover(&fx.cp, &mut fx.agents, &slug, Duration::from_secs(15))
            .await;
    let (cp, agents) = (&fx.cp, &fx.agents);
    eprintln!(
        "FAILOVER: kill -9 to audio through the redirector: {} ms (node lease 1000 ms)",
        failover.as_millis()
    );
    assert!(
        failover < Duration::from_secs(6),
        "failover took {failover:?}"
    );
    let moved_to = cp.redirect(&slug).await.expect("redirect after failover");
    assert_eq!(probe(&listen).await, "mp3");
    let placement = cp.placement(&sid).await;
    let new_origin = placement["origin"].as_str().expect("origin").to_string();
    assert_ne!(new_origin, origin);
    assert!(
        moved_to.starts_with(
            &agents
                .iter()
                .find(|a| a.node_id() == new_origin)
                .expect("new origin is a live agent")
                .edge_url
        )
    );

    // A control-plane restart changes no placement, even when the node carrying the station is
    // slow to come back: it is frozen (SIGSTOP) across the restart, and the new leader waits for
    // it instead of moving its station.
    let origin_agent = agents
        .iter()
        .position(|a| a.node_id() == new_origin)
        .expect("new origin is a live agent");
    fx.agents[origin_agent].proc.signal("STOP");
    fx.restart_cp().await;
    fx.cp
        .proc
        .wait_log_word("waiting up to", Duration::from_secs(20))
        .await;
    fx.agents[origin_agent].proc.signal("CONT");
    // Both agents back on the restarted control plane.
    fx.wait_ready(2, Duration::from_secs(20)).await;
    let cp = &mut fx.cp;
    let moved = cp
        .proc
        .wait_log_word("station(s) placed,", Duration::from_secs(25))
        .await;
    assert_eq!(moved, "0", "{}", cp.proc.logs());
    // Every round that writes a move logs it, also one that fails afterwards (whose move the
    // first-round line above would not count).
    assert!(
        !cp.proc.logs().contains("station(s) moved"),
        "the restarted control plane moved a station: {}",
        cp.proc.logs()
    );
    let after = cp.placement(&sid).await;
    assert_eq!(
        after["origin"].as_str(),
        Some(new_origin.as_str()),
        "{after}"
    );
    let url = wait_for(
        "the redirector after the restart",
        Duration::from_secs(10),
        || cp.redirect(&slug),
    )
    .await;
    assert_eq!(url, moved_to);
}

#[tokio::test]
async fn the_leader_role_passes_to_the_other_control_plane() {
    let Some(mut fx) = ClusterFixture::start_on(ClusterSpec {
        admin_token: ADMIN,
        backend: Backend::Postgres,
        etcd: true,
        replica: "cp-a",
        node_ttl_ms: 1500,
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let mut b = fx.start_replica("cp-b").await;
    // The agent knows both control planes; it starts on a (`fx.cp`).
    let cps = vec![fx.cp.quic.clone(), b.quic.clone()];
    fx.join_via("edge-1", &cps).await;
    let station = b.station("Leader FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    wait_for(
        "the station on the air via a",
        Duration::from_secs(30),
        || fx.cp.redirect(&slug),
    )
    .await;
    wait_for("b sees it too", Duration::from_secs(10), || {
        b.redirect(&slug)
    })
    .await;
    fx.cp
        .proc
        .wait_log_word("replica cp-a is the", Duration::from_secs(5))
        .await;
    // kill -9 the leader (which also holds the agent's connection).
    fx.kill_cp();
    let agent = &fx.agents[0];
    b.proc
        .wait_log_word("replica cp-b is the", Duration::from_secs(15))
        .await;
    // The agent moves to b, and the station keeps playing through b's redirector.
    wait_for("the agent on cp-b", Duration::from_secs(15), || async {
        agent
            .proc
            .stderr()
            .contains("connected to control plane cp-b")
            .then_some(())
    })
    .await;
    let url = wait_for("the station through b", Duration::from_secs(15), || {
        b.redirect(&slug)
    })
    .await;
    assert!(url.starts_with(&agent.edge_url));
    assert!(audio_bytes(&url, 4096).await.is_some());
    // A station created now is placed by the new leader.
    let second = b.station("After FM").await;
    let slug2 = second["slug"].as_str().expect("slug").to_string();
    wait_for(
        "the new station on the air",
        Duration::from_secs(20),
        || b.redirect(&slug2),
    )
    .await;
}

#[tokio::test]
async fn draining_moves_without_a_gap_relays_follow_listeners_and_nodes_outlive_the_control_plane()
{
    let mut fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: ADMIN,
        node_ttl_ms: 2000,
        // Two listeners are all one node should carry of a station before relays help.
        relay_threshold: 2,
        nodes: &["edge-1", "edge-2"],
        ..ClusterSpec::default()
    })
    .await;
    let (cp, agents) = (&fx.cp, &fx.agents);
    let station = cp.station("Drain FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let sid = station["id"].as_str().expect("id").to_string();
    let first = wait_for("on the air", Duration::from_secs(30), || cp.redirect(&slug)).await;
    let origin = cp.placement(&sid).await["origin"]
        .as_str()
        .expect("origin")
        .to_string();

    // Relays: three listeners on the origin exceed 2 × 0.8, so the other node relays it.
    let mut listeners = Vec::new();
    for _ in 0..3 {
        let resp = onda_shared::http::get(&first).await.expect("listen");
        assert!(resp.status().is_success());
        listeners.push(resp);
    }
    let relayed = wait_for("a relay placement", Duration::from_secs(20), || async {
        let p = cp.placement(&sid).await;
        let relays = p["relays"].as_array()?.clone();
        if relays.len() != 1 {
            return None;
        }
        relays[0].as_str().map(str::to_string)
    })
    .await;
    assert_ne!(relayed, origin);
    let relay_agent = agents
        .iter()
        .find(|a| a.node_id() == relayed)
        .expect("relay node is ours");
    let m3u = wait_for(
        "both edges in the playlist",
        Duration::from_secs(20),
        || async {
            let text = cp
                .http
                .get(format!("{}/listen/{slug}/radio.mp3.m3u", cp.api))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains(&relay_agent.edge_url) && text.matches("http://").count() == 2)
                .then_some(text)
        },
    )
    .await;
    assert!(m3u.contains(&first), "{m3u}");
    // The relay edge really serves audio it pulls from the origin.
    let relay_url = format!("{}/{slug}/radio.mp3", relay_agent.edge_url);
    assert!(audio_bytes(&relay_url, 4096).await.is_some());
    // Listeners leave: the relay goes.
    listeners.clear();
    wait_for("the relay removed", Duration::from_secs(20), || async {
        let p = cp.placement(&sid).await;
        p["relays"].as_array()?.is_empty().then_some(())
    })
    .await;

    // Drain the origin: at every moment some edge serves the station, and it ends elsewhere.
    let origin_edge = agents
        .iter()
        .find(|a| a.node_id() == origin)
        .expect("origin is ours")
        .edge_url
        .clone();
    let (s, n) = cp
        .call(Method::POST, &format!("/v1/nodes/{origin}/drain"), None)
        .await;
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["status"], "draining");
    let deadline = Instant::now() + Duration::from_secs(20);
    let moved = loop {
        let url = cp.redirect(&slug).await;
        let p = cp.placement(&sid).await;
        let url = url.unwrap_or_else(|| panic!("the redirector had no edge during the drain: {p}"));
        if p["origin"].as_str() != Some(origin.as_str())
            && p["leaving"].as_array().is_some_and(Vec::is_empty)
            && !url.starts_with(&origin_edge)
        {
            break url;
        }
        assert!(Instant::now() < deadline, "the drain did not finish: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = onda_shared::http::get(&moved)
        .await
        .expect("get the new edge");
    assert!(r.status().is_success(), "{moved}: {}", r.status());
    assert!(audio_bytes(&moved, 4096).await.is_some());

    // The control plane goes away: the node keeps serving what it was told.
    fx.kill_cp();
    let still = audio_bytes(&moved, 16384).await;
    assert!(
        still.is_some(),
        "the edge kept serving without a control plane"
    );
}

/// A placement in etcd that does not decode (written by a newer version, or edited by hand)
/// moves nothing: the leader skips its rounds, counts and logs the corrupt key, and leaves the
/// value for an operator instead of placing every station again from nothing; the station stays
/// where it was and its node's desired state is not rewritten.
#[tokio::test]
async fn a_corrupt_placement_in_etcd_moves_nothing() {
    use onda_control_plane::coordinator::Coordinator as _;
    let mut fx = ClusterFixture::start_with(ClusterSpec {
        admin_token: ADMIN,
        etcd: true,
        node_ttl_ms: 1500,
        nodes: &["edge-1", "edge-2"],
        ..ClusterSpec::default()
    })
    .await;
    let etcd_endpoint = fx.etcd_endpoint().to_string();
    let cp = &mut fx.cp;
    let station = cp.station("Steady FM").await;
    let id = station["id"].as_str().expect("id").to_string();
    let origin = wait_for("the station placed", Duration::from_secs(30), || async {
        let p = cp.placement(&id).await;
        p["origin"].as_str().map(str::to_string)
    })
    .await;
    let coord = onda_control_plane::coordinator::etcd::EtcdCoordinator::connect(
        std::slice::from_ref(&etcd_endpoint),
        "/onda",
    )
    .await
    .expect("etcd");
    let desired_key = format!("/nodes/desired/{origin}");
    let desired = wait_for(
        "the origin's desired state",
        Duration::from_secs(10),
        || {
            let coord = &coord;
            let key = &desired_key;
            async move { coord.get(key).await.ok().flatten() }
        },
    )
    .await;

    let corrupt = br#"{"stations": "written by a version this one does not know"}"#;
    let series = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let metrics = || async {
        cp.http
            .get(format!("{}/metrics", cp.api))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let failed = "onda_scheduler_runs_total{result=\"error\"}";
    let before = series(&metrics().await.expect("metrics"), failed);
    coord
        .put("/placement", corrupt, None)
        .await
        .expect("write the corrupt placement");
    // The leader's rounds (not the views', which read it too) fail, three of them.
    let text = wait_for("three rounds skipped", Duration::from_secs(20), || async {
        let text = metrics().await?;
        (series(&text, failed) >= before + 3).then_some(text)
    })
    .await;
    assert!(
        series(
            &text,
            "onda_cluster_store_corrupt_total{kind=\"placement\"}"
        ) >= 3
    );
    cp.proc
        .wait_log_word(
            "value at /placement does not decode",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        coord.get("/placement").await.expect("read").as_deref(),
        Some(&corrupt[..]),
        "the leader replaced the corrupt placement"
    );
    assert_eq!(
        coord.get(&desired_key).await.expect("read"),
        Some(desired),
        "the origin's desired state was rewritten"
    );
    assert_eq!(
        cp.placement(&id).await["origin"].as_str(),
        Some(origin.as_str())
    );
}
