//! Tenant isolation on shared nodes: one tenant's station cannot stall a node's configuration
//! (the API refuses what an edge would refuse, by one shared rule; a node applies everything its
//! edge takes and reports the rest), and the control plane trusts a node only with what it
//! carries (usage, media, track reports); joins check the token before anything else and failed
//! ones cannot flood the log.

use onda_shared::cluster::proto::{
    ControlMessage, Heartbeat, HostMetrics, MountUsage, NodeMessage, RefusalCode, Rejected,
};
use onda_shared::cluster::token::JoinToken;
use onda_tests::cluster::{Agent, ControlPlane, agent_toml, audio_bytes};
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::process::free_port;
use onda_tests::rogue::{RogueNode, raw_join};
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A control plane with node leases of 1 s and the agents `nodes`.
async fn cluster(nodes: &[&str]) -> ClusterFixture {
    ClusterFixture::start_with(ClusterSpec {
        admin_token: "isolation-test-admin-token-0123",
        node_ttl_ms: 1000,
        nodes,
        ..ClusterSpec::default()
    })
    .await
}

fn quic(cp: &ControlPlane) -> SocketAddr {
    cp.quic.parse().expect("quic address")
}

/// An agent whose node carries the labels `labels` (TOML inline table body).
async fn agent_with_labels(cp: &ControlPlane, name: &str, labels: &str) -> Agent {
    let dir = tempfile::tempdir().expect("dir");
    let toml = agent_toml(name, std::slice::from_ref(&cp.quic), free_port()).replace(
        "region = \"test\"\n",
        &format!("region = \"test\"\nlabels = {{ {labels} }}\n"),
    );
    std::fs::write(dir.path().join("agent.toml"), toml).expect("agent.toml");
    let token = cp.join_token(600).await;
    Agent::start_in(name, dir, Some(&token)).await
}

fn mp3(path: &str) -> Value {
    json!({"path": path, "format": "mp3", "bitrate_kbps": 64})
}

async fn create_station(cp: &ControlPlane, key: &str, body: Value) -> (u16, Value) {
    cp.tenant_call(key, Method::POST, "/v1/stations", Some(body))
        .await
}

/// A listener gets audio of `slug`'s `/radio.mp3` through the redirector.
async fn on_the_air(cp: &ControlPlane, slug: &str) {
    wait_for(&format!("{slug} on the air"), WAIT, || async {
        let url = cp.redirect(slug).await?;
        audio_bytes(&url, 4096).await
    })
    .await;
}

/// Uploads a 3-second MP3 tone to a station's library; returns its SHA-256.
async fn upload_track(cp: &ControlPlane, key: &str, station_id: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let track = onda_tests::media::make_track(
        dir.path(),
        "song",
        onda_tests::media::Kind::Mp3,
        3.0,
        330,
        &onda_tests::media::Tags {
            artist: "A",
            title: "T",
            album: "L",
        },
    )
    .await;
    let uploaded: Value = cp
        .http
        .post(format!(
            "{}/v1/stations/{station_id}/media?filename=song.mp3",
            cp.api
        ))
        .bearer_auth(key)
        .body(std::fs::read(&track).expect("track"))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("media json");
    uploaded["sha256"].as_str().expect("sha256").to_string()
}

/// The value of a counter line (`name{labels} value`) in a /metrics text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn metrics(cp: &ControlPlane) -> String {
    onda_shared::http::get(format!("{}/metrics", cp.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The three reproductions, and a station the edge refuses injected below the API: the
/// API refuses what an edge refuses with a sentence naming the rule; reserved prefixes are whole
/// segments; the leader gives DJs a free mount; and a node given a station its edge cannot take
/// applies everything else (a station created afterwards, a rotated stream key) and reports the
/// refused one, which the station's placement shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_the_edge_refuses_costs_only_that_station() {
    let fx = cluster(&["iso-1"]).await;
    let (cp, node) = (&fx.cp, &fx.agents[0]);
    let key = cp.tenant_key("Tenant A").await;

    // Slug `hls`: the edge serves live streams' HLS under /hls/, so the API refuses it.
    let (status, problem) = create_station(
        cp,
        &key,
        json!({"name": "HLS", "slug": "hls", "mounts": [mp3("/radio.mp3")]}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("reserved") && detail.contains("/admin") && detail.contains("/hls"),
        "the problem names the rule: {problem}"
    );
    // A name that would give a reserved slug gets another one.
    let (status, derived) = create_station(
        cp,
        &key,
        json!({"name": "HLS", "mounts": [mp3("/radio.mp3")]}),
    )
    .await;
    assert_eq!(status, 201, "{derived}");
    assert_ne!(derived["slug"], "hls");

    // "Administration Radio": `/administration-radio/…` is not under `/admin`.
    let (status, admin_radio) = create_station(
        cp,
        &key,
        json!({"name": "Administration Radio", "mounts": [mp3("/radio.mp3")]}),
    )
    .await;
    assert_eq!(status, 201, "{admin_radio}");
    assert_eq!(admin_radio["slug"], "administration-radio");
    // …but `admin` itself is reserved, also when a station is renamed to it.
    let (status, problem) = cp
        .tenant_call(
            &key,
            Method::PATCH,
            &format!("/v1/stations/{}", admin_radio["id"].as_str().expect("id")),
            Some(json!({"slug": "admin"})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");

    // An AutoDJ station with mounts /live and /live-dj: its DJs get a free mount.
    let (status, djs) = create_station(
        cp,
        &key,
        json!({"name": "Two Lives", "autodj_enabled": true,
               "mounts": [mp3("/live"), mp3("/live-dj"), mp3("/radio.mp3")]}),
    )
    .await;
    assert_eq!(status, 201, "{djs}");
    let djs_id = djs["id"].as_str().expect("id");
    let (status, live) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("/v1/stations/{djs_id}/live"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(
        live["mount"],
        format!("/{}/live-dj-2", djs["slug"].as_str().expect("slug"))
    );
    // With a library the leader gives its origin the AutoDJ and that DJ mount.
    upload_track(cp, &key, djs_id).await;

    // A live stream on the same node.
    let (status, stream) = cp
        .tenant_call(
            &key,
            Method::POST,
            "/v1/streams",
            Some(json!({"name": "Demo Live", "slug": "demo-live"})),
        )
        .await;
    assert_eq!(status, 201, "{stream}");
    let stream_id = stream["id"].as_str().expect("id").to_string();

    // Another tenant's station becomes one the edge refuses, below the API (defence in depth).
    let bad = cp.station("Bad Neighbour").await;
    let bad_id = bad["id"].as_str().expect("id").to_string();
    on_the_air(cp, bad["slug"].as_str().expect("slug")).await;
    {
        let db = onda_control_plane::db::Db::connect(&fx.db.url, 1)
            .await
            .expect("db");
        let mut c = db.conn().await.expect("conn");
        sqlx::query("UPDATE stations SET slug = 'hls' WHERE id = $1")
            .bind(&bad_id)
            .execute(&mut *c)
            .await
            .expect("update");
    }
    let placement = wait_for("the refused station reported failed", WAIT, || async {
        let p = cp.placement(&bad_id).await;
        (p["status"] == "failed").then_some(p)
    })
    .await;
    let reason = placement["failures"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("reserved"), "{placement}");

    // Everything else on the node applies: stations from before and after, and a new key.
    on_the_air(cp, "administration-radio").await;
    on_the_air(cp, djs["slug"].as_str().expect("slug")).await;
    let p = cp.placement(djs_id).await;
    assert_eq!(
        (&p["status"], &p["failures"]),
        (&json!("placed"), &json!([])),
        "{p}"
    );
    let later = cp.station("Later Station").await;
    on_the_air(cp, later["slug"].as_str().expect("slug")).await;
    let ok = cp.placement(later["id"].as_str().expect("id")).await;
    assert_eq!(ok["status"], "placed", "{ok}");
    assert_eq!(ok["failures"], json!([]), "{ok}");

    let (status, rotated) = cp
        .tenant_call(
            &key,
            Method::POST,
            &format!("/v1/streams/{stream_id}/stream-key"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let ingest = cp.placed_ingest(&key, &stream_id).await;
    let publish = ingest["publish_url"].as_str().expect("url");
    assert!(
        publish.ends_with(rotated["stream_key"].as_str().expect("key")),
        "{ingest}"
    );
    let watch = format!("{}/watch/demo-live.m3u8", cp.api);
    let playing = || async {
        let r = cp.http.get(&watch).send().await.ok()?;
        let url = r.headers().get("location")?.to_str().ok()?.to_string();
        let text = onda_shared::http::get(url).await.ok()?.text().await.ok()?;
        text.contains("#EXTINF").then_some(())
    };
    // The API shows the new key before the node has applied it: a publish that gets there
    // first is refused and ffmpeg exits, so it is started again until the node takes it.
    let mut publisher = small_rtmp_publisher(publish);
    let deadline = std::time::Instant::now() + WAIT;
    while playing().await.is_none() {
        if publisher.try_exit().is_some() {
            publisher = small_rtmp_publisher(publish);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for the rotated key publishing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old key no longer publishes. The new key's publisher leaves first, so a refusal can
    // only be for the key, not for a stream that is already live.
    drop(publisher);
    let viewers = format!("/v1/streams/{stream_id}/viewers");
    wait_for("the new key's publisher gone", WAIT, || async {
        let (_, v) = cp.tenant_call(&key, Method::GET, &viewers, None).await;
        (v["publishing"] == false).then_some(())
    })
    .await;
    let old_key = stream["stream_key"].as_str().expect("old key");
    assert_ne!(old_key, rotated["stream_key"].as_str().expect("key"));
    let old_url = format!(
        "{}{old_key}",
        publish.trim_end_matches(rotated["stream_key"].as_str().expect("key"))
    );
    let edge_metrics = format!("{}/metrics", node.edge_url.trim_end_matches('/'));
    let refusals = async || {
        let text = onda_shared::http::get(&edge_metrics)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(metric(&text, "onda_edge_rtmp_publish_refusals_total"))
    };
    let before = refusals().await.expect("edge metrics");
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("ffmpeg")
            .args(rtmp_publish_args(&old_url, Some(5)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("ffmpeg with the old key ends")
    .expect("ffmpeg runs");
    assert!(!status.success(), "ffmpeg published with the old key");
    wait_for("the old key's refusal counted", WAIT, || async {
        (refusals().await? > before).then_some(())
    })
    .await;
    let (_, v) = cp.tenant_call(&key, Method::GET, &viewers, None).await;
    assert_eq!(v["publishing"], false, "{v}");
}

/// ffmpeg's arguments to publish a small test picture and a tone over RTMP to `url`, for
/// `seconds` (None: until killed).
fn rtmp_publish_args(url: &str, seconds: Option<u32>) -> Vec<String> {
    let input = |src: &str| {
        let mut a: Vec<String> = vec!["-re".into(), "-f".into(), "lavfi".into()];
        if let Some(s) = seconds {
            a.extend(["-t".into(), s.to_string()]);
        }
        a.extend(["-i".into(), src.into()]);
        a
    };
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin"]
        .map(String::from)
        .into();
    args.extend(input("testsrc=size=160x120:rate=10"));
    args.extend(input("sine=frequency=440:sample_rate=44100"));
    args.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "10",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-f",
            "flv",
            url,
        ]
        .map(String::from),
    );
    args
}

/// ffmpeg publishing a small test picture and a tone over RTMP (killed on drop).
fn small_rtmp_publisher(url: &str) -> onda_tests::process::Proc {
    let args = rtmp_publish_args(url, None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    onda_tests::process::Proc::external("ffmpeg-rtmp", "ffmpeg", &args)
}

/// A joined node that carries nothing reports usage for another tenant's station, fetches its
/// media by hash and reports its track: usage is acknowledged but not stored, the fetch answers
/// not found, the refusals are counted; the node that carries the station gets its media and its
/// listeners' usage is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_usage_media_and_tracks_only_of_what_it_carries() {
    let fx = cluster(&[]).await;
    let cp = &fx.cp;
    let key = cp.tenant_key("Victim").await;
    // The station goes only to nodes labelled gold: never to the rogue node.
    let (status, victim) = create_station(
        cp,
        &key,
        json!({"name": "Victim FM", "autodj_enabled": true, "mounts": [mp3("/radio.mp3")],
               "node_labels": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(status, 201, "{victim}");
    let vid = victim["id"].as_str().expect("id").to_string();
    let slug = victim["slug"].as_str().expect("slug").to_string();
    let sha = upload_track(cp, &key, &vid).await;

    // The rogue node carries one station of its own tenant (labelled for it alone).
    let own_key = cp.tenant_key("Rogue Tenant").await;
    let (status, own) = create_station(
        cp,
        &own_key,
        json!({"name": "Own FM", "mounts": [mp3("/radio.mp3")], "node_labels": {"tier": "rogue"}}),
    )
    .await;
    assert_eq!(status, 201, "{own}");
    let own_id = own["id"].as_str().expect("id").to_string();
    let mut ad = onda_tests::rogue::advert("rogue");
    ad.labels.insert("tier".to_string(), "rogue".to_string());
    let mut rogue = RogueNode::join_as(quic(cp), &cp.join_token(600).await, ad).await;
    rogue.wait_carrying(&own_id).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let usage_of = |station: &str, listener_ms: u64| MountUsage {
        station_id: station.to_string(),
        mount: "/radio.mp3".to_string(),
        listener_ms,
        peak_listeners: 100_000,
        sessions: 100_000,
        bytes_sent: 1 << 40,
    };
    let report_in = |seq: u64, period: (u64, u64), mounts: Vec<MountUsage>| {
        NodeMessage::Usage(onda_shared::cluster::proto::UsageReport {
            seq,
            period_start_ms: period.0,
            period_end_ms: period.1,
            mounts,
            turn: Vec::new(),
        })
    };
    let (first_half, second_half) = ((now - 60_000, now - 30_000), (now - 30_000, now));
    let report = |seq: u64, mounts: Vec<MountUsage>| report_in(seq, first_half, mounts);
    // Acknowledged (the node's spool drains), the session goes on; only the usage of what the
    // node carries is stored.
    let normal = MountUsage {
        station_id: own_id.clone(),
        mount: "/radio.mp3".to_string(),
        listener_ms: 5_000,
        peak_listeners: 2,
        sessions: 2,
        bytes_sent: 80_000,
    };
    rogue
        .send(&report(
            1,
            vec![usage_of(&vid, 360_000_000_000), normal.clone()],
        ))
        .await;
    assert_eq!(
        rogue.next().await,
        Some(ControlMessage::UsageAck { seq: 1 })
    );
    rogue
        .send(&report(2, vec![usage_of(&vid, 360_000_000_000)]))
        .await;
    assert_eq!(
        rogue.next().await,
        Some(ControlMessage::UsageAck { seq: 2 })
    );
    let total = async |key: &str, id: &str| {
        let (_, usage) = cp
            .tenant_call(
                key,
                Method::GET,
                &format!("/v1/stations/{id}/usage?granularity=day"),
                None,
            )
            .await;
        usage["total"]["listener_ms"].as_u64().expect("listener_ms")
    };
    assert_eq!(total(&key, &vid).await, 0, "the victim's usage");
    assert_eq!(
        total(&own_key, &own_id).await,
        5_000,
        "the node's own usage"
    );

    // Usage of the station the node does carry, inflated: a period of all time is refused
    // whole; amounts beyond what the node could serve (the station's listener limit over the
    // period, a second of metering jitter per listener) are cut; a mount the station does not
    // have is refused. Each report is still acknowledged.
    let max = own["max_listeners"]
        .as_u64()
        .expect("max_listeners")
        .min(100_000);
    let inflated = |mount: &str| MountUsage {
        station_id: own_id.clone(),
        mount: mount.to_string(),
        ..usage_of(&own_id, 360_000_000_000)
    };
    rogue
        .send(&NodeMessage::Usage(
            onda_shared::cluster::proto::UsageReport {
                seq: 3,
                period_start_ms: 0,
                period_end_ms: u64::MAX,
                mounts: vec![inflated("/radio.mp3")],
                turn: Vec::new(),
            },
        ))
        .await;
    assert_eq!(
        rogue.next().await,
        Some(ControlMessage::UsageAck { seq: 3 })
    );
    rogue
        .send(&report_in(
            4,
            second_half,
            vec![inflated("/radio.mp3"), inflated("/nope.mp3")],
        ))
        .await;
    assert_eq!(
        rogue.next().await,
        Some(ControlMessage::UsageAck { seq: 4 })
    );
    // The same minute again under a new sequence number: already reported, refused.
    rogue
        .send(&report_in(5, (now - 60_000, now), vec![normal.clone()]))
        .await;
    assert_eq!(
        rogue.next().await,
        Some(ControlMessage::UsageAck { seq: 5 })
    );
    assert_eq!(
        total(&own_key, &own_id).await,
        5_000 + max * 31_000,
        "the normal report as sent, the inflated one cut to {max} listeners over 31 s, the \
         repeated minute not at all"
    );

    // Heartbeats: a refusal of another tenant's station is dropped; one of the node's own is
    // kept with its reason cut. Heartbeats go on meanwhile, so the node stays alive.
    let heartbeat = NodeMessage::Heartbeat(Heartbeat {
        host: HostMetrics::default(),
        mounts: Vec::new(),
        rejected: vec![
            Rejected {
                id: vid.clone(),
                reason: "forged by another tenant's node".to_string(),
            },
            Rejected {
                id: own_id.clone(),
                reason: format!("edge says\n{}", "x".repeat(100_000)),
            },
        ],
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    let failed = loop {
        rogue.send(&heartbeat).await;
        let p = cp.placement(&own_id).await;
        if p["status"] == "failed" {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "never failed: {p}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let reason = failed["failures"][0]["reason"].as_str().expect("reason");
    assert!(reason.len() <= 512, "{} bytes", reason.len());
    assert!(reason.starts_with("edge saysxxx"), "{reason}");
    rogue.send(&heartbeat).await;
    let p = cp.placement(&vid).await;
    assert_eq!(p["failures"], json!([]), "{p}");
    assert_ne!(p["status"], "failed", "{p}");
    // The media by its hash: refused like a missing file.
    let fetched = rogue.fetch(&sha).await;
    assert!(fetched.is_err(), "the rogue node got the victim's media");
    // A track report for the station is not taken either.
    rogue
        .send(&NodeMessage::Event(
            onda_shared::cluster::proto::NodeEvent::TrackChanged(
                onda_shared::cluster::proto::TrackPlaying {
                    station_id: vid.clone(),
                    started_at_ms: now,
                    title: "Hijacked - Title".to_string(),
                    artist: "Hijacked".to_string(),
                    track_title: "Title".to_string(),
                    media_sha256: None,
                    duration_ms: None,
                    live: false,
                    streamer: String::new(),
                    next_title: None,
                    request_id: None,
                    next_request_id: None,
                },
            ),
        ))
        .await;
    let text = wait_for("the refusals counted", WAIT, || async {
        let text = metrics(cp).await;
        (metric(&text, "onda_node_refusals_total{kind=\"track\"}") >= 1).then_some(text)
    })
    .await;
    assert_eq!(
        metric(&text, "onda_node_refusals_total{kind=\"usage\"}"),
        5,
        "{text}"
    );
    assert_eq!(
        metric(&text, "onda_node_refusals_total{kind=\"usage_clamped\"}"),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "onda_node_refusals_total{kind=\"media\"}"),
        1,
        "{text}"
    );

    // The node carrying the station: its media arrives, its listeners' usage is stored.
    let gold = agent_with_labels(cp, "gold-1", "tier = \"gold\"").await;
    let cached = gold.proc.path().join("state/media").join(&sha);
    wait_for("the carrier fetched the media", WAIT, || async {
        cached.is_file().then_some(())
    })
    .await;
    on_the_air(cp, &slug).await;
    wait_for("the carrier's usage stored", WAIT, || async {
        let url = cp.redirect(&slug).await?;
        audio_bytes(&url, 8192).await?;
        let (_, usage) = cp
            .tenant_call(
                &key,
                Method::GET,
                &format!("/v1/stations/{vid}/usage?granularity=day"),
                None,
            )
            .await;
        let ms = usage["total"]["listener_ms"].as_u64()?;
        (ms > 0 && ms < 3_600_000).then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &metrics(cp).await,
            "onda_node_refusals_total{kind=\"media\"}"
        ),
        1,
        "the carrier's fetch was not refused"
    );
}

/// A join with a wrong token and a garbage CSR is refused for its token (the CA never looks at
/// the CSR); a garbage CSR with a good token does not use the token up; a burst of failed joins
/// is counted one by one but logged once per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_check_the_token_first_and_failed_joins_are_logged_once_per_interval() {
    let fx = cluster(&[]).await;
    let cp = &fx.cp;
    let token_text = cp.join_token(600).await;
    let good: JoinToken = token_text.parse().expect("token");
    let bad = JoinToken {
        secret: "not-the-secret-of-this-token".to_string(),
        ..good.clone()
    };
    let t0 = std::time::Instant::now();
    match raw_join(quic(cp), &bad, "not a certificate request").await {
        ControlMessage::Refused { code, .. } => assert_eq!(code, RefusalCode::TokenUnknown),
        other => panic!("{other:?}"),
    }
    match raw_join(quic(cp), &good, "not a certificate request").await {
        ControlMessage::Refused { code, .. } => assert_eq!(code, RefusalCode::BadRequest),
        other => panic!("{other:?}"),
    }
    // The token was not spent on the refused CSR.
    let node = RogueNode::join(quic(cp), &token_text, "after-bad-csr").await;
    assert!(node.node_id.starts_with("node"), "{}", node.node_id);
    for _ in 0..20 {
        raw_join(quic(cp), &bad, "x").await;
    }
    let text = metrics(cp).await;
    assert_eq!(
        metric(&text, "onda_node_refusals_total{kind=\"join\"}"),
        22,
        "{text}"
    );
    let lines = cp
        .proc
        .stderr()
        .lines()
        .filter(|l| l.contains("refused: a join from"))
        .count() as u64;
    // One line per 10 s interval at most, however many joins failed.
    let intervals = t0.elapsed().as_secs() / 10 + 1;
    assert!(
        (1..=intervals).contains(&lines),
        "{lines} log lines for 22 failed joins in {:?}\n{}",
        t0.elapsed(),
        cp.proc.stderr()
    );
}
