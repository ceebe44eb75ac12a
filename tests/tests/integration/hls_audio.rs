//! Mounts as HLS (packed audio): the AutoDJ's MP3 and AAC mounts through the redirector's
//! `.m3u8` URL, played by real ffmpeg and ffprobe (audio decoded, the live playlist growing, the
//! titles as date ranges), HLS listeners counted, limited by the station's limit with a
//! sentence and metered; a failover (the carrier killed) after which the `.m3u8` leads to the
//! new carrier's own HLS; and on standalone edges, a relay's own HLS of the relayed mount, a
//! fallback heard through the HLS of the mount that falls back, and an Ogg mount's 404 sentence.

use onda_tests::cluster::ControlPlane;
use onda_tests::db::Backend;
use onda_tests::edge::{EdgeNode, ffmpeg_source};
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::process::Proc;
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Where `GET /listen/{slug}/{mount}.m3u8` sends a listener: (status, Location or body).
async fn hls_redirect(api: &str, slug: &str, mount: &str) -> (u16, String) {
    let client = onda_shared::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = client
        .get(format!("{api}/listen/{slug}/{mount}.m3u8"))
        .send()
        .await
        .expect("redirector");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    match location {
        Some(l) => (status, l),
        None => (status, resp.text().await.unwrap_or_default()),
    }
}

/// GET `url`: status and body.
async fn get(url: &str) -> (u16, String) {
    let resp = onda_shared::http::get(url).await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The number of a playlist's newest segment.
fn last_segment(playlist: &str) -> u64 {
    let first: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no media sequence in {playlist}"));
    let listed = playlist.matches("#EXTINF:").count() as u64;
    assert!(listed > 0, "no segment in {playlist}");
    first + listed - 1
}

/// Decodes `secs` of audio from `url` with ffmpeg (44.1 kHz stereo 16-bit out); answers the
/// bytes of PCM it produced.
async fn decoded_pcm_bytes(url: &str, secs: u32) -> usize {
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
        ])
        .args(["-i", url, "-t", &secs.to_string()])
        .args(["-f", "s16le", "-ac", "2", "-ar", "44100", "-"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(u64::from(secs) + 30), out)
        .await
        .expect("ffmpeg finished in time")
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len()
}

/// ffprobe's codec of `url`'s first stream (an HLS input lists it under its program too).
async fn probe(url: &str) -> String {
    let codecs = onda_tests::cluster::ffprobe_codec(url).await;
    codecs.lines().next().unwrap_or_default().to_string()
}

/// The public now-playing JSON, when it answers.
async fn now_playing(url: &str) -> Option<Value> {
    onda_shared::http::get(url).await.ok()?.json().await.ok()
}

/// A premium tenant's AutoDJ station limited to 2 listeners, with MP3, AAC and Opus mounts and
/// a rotation of two 3 s tones: (tenant key, station id, slug).
async fn hls_station(cp: &ControlPlane) -> (String, String, String) {
    let key = cp.tenant_key("Hls Radio").await;
    let body = json!({"name": "Hls FM", "autodj_enabled": true, "max_listeners": 2, "mounts": [
        {"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64},
        {"path": "/radio.aac", "format": "aac", "bitrate_kbps": 64},
        {"path": "/radio.ogg", "format": "opus", "bitrate_kbps": 64},
    ]});
    let (s, st) = cp
        .tenant_call(&key, Method::POST, "/v1/stations", Some(body))
        .await;
    assert_eq!(s, 201, "{st}");
    let (sid, slug) = (
        st["id"].as_str().expect("id").to_string(),
        st["slug"].as_str().expect("slug").to_string(),
    );
    let media = tempfile::tempdir().expect("dir");
    let tones = [
        ("one.mp3", 440, 3, "Hls", "Song One"),
        ("two.mp3", 660, 3, "Hls", "Song Two"),
    ];
    cp.upload_rotation(&key, &sid, media.path(), "Loop", &tones)
        .await;
    (key, sid, slug)
}

/// The now-playing JSON names each MP3 and AAC mount's HLS URL, through the redirector; the
/// Ogg mount has none and its `.m3u8` says why.
async fn hls_urls_are_announced(cp: &ControlPlane, slug: &str, np: &Value) {
    let mounts = np["station"]["mounts"].as_array().expect("mounts");
    let hls_of = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["hls_url"].clone())
            .expect("mount listed")
    };
    for mount in ["radio.mp3", "radio.aac"] {
        assert_eq!(
            hls_of(&format!("/{mount}")),
            json!(format!("{}/listen/{slug}/{mount}.m3u8", cp.api))
        );
    }
    assert_eq!(hls_of("/radio.ogg"), Value::Null, "no HLS of an Ogg mount");
    let (status, problem) = hls_redirect(&cp.api, slug, "radio.ogg").await;
    assert_eq!(status, 404, "{problem}");
    assert!(
        problem.contains("HLS is made only of MP3 and AAC mounts"),
        "{problem}"
    );
}

/// ffmpeg plays the live playlist at `url`: 16 s of audio is more than the playlist holds at
/// first, so it has to follow the playlist as it grows; the titles are date ranges.
async fn ffmpeg_follows_the_live_playlist(url: &str) {
    let (status, first_list) = get(url).await;
    assert_eq!(status, 200, "{first_list}");
    assert!(
        first_list.contains("#EXT-X-PROGRAM-DATE-TIME:"),
        "{first_list}"
    );
    assert!(first_list.contains(".mp3\n"), "{first_list}");
    let pcm = decoded_pcm_bytes(url, 16).await;
    // The decoder may drop a frame where one 3 s track joins the next (the bit reservoir of
    // MP3 does not survive a join); the Icecast stream has the same bytes.
    let seconds = pcm as f64 / (44_100.0 * 4.0);
    assert!((15.0..=16.0).contains(&seconds), "{seconds} s decoded");
    let (_, later_list) = get(url).await;
    assert!(
        last_segment(&later_list) >= last_segment(&first_list) + 2,
        "the live playlist grew:\n{first_list}\n{later_list}"
    );
    // The rotation's titles are timed metadata: a date range where each starts.
    let titled = wait_for("a title in the playlist's date ranges", WAIT, || async {
        let (_, list) = get(url).await;
        (list.contains("X-TITLE=\"Hls - Song One\"") || list.contains("X-TITLE=\"Hls - Song Two\""))
            .then_some(list)
    })
    .await;
    assert!(titled.contains("CLASS=\"com.onda.title\""), "{titled}");
}

/// The station's listener time and bytes in its usage: at least two sessions.
async fn metered(cp: &ControlPlane, sid: &str) -> Value {
    wait_for("the HLS listeners metered", WAIT, || async {
        let (s, u) = cp
            .call(
                Method::GET,
                &format!("/v1/stations/{sid}/usage?granularity=day"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{u}");
        let t = &u["total"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        (n("sessions") >= 2 && n("listener_ms") >= 10_000 && n("bytes_sent") >= 16 * 8_000)
            .then_some(u["total"].clone())
    })
    .await
}

async fn an_autodj_station_plays_over_hls_counted_limited_and_metered(backend: Backend) {
    let Some(fx) = ClusterFixture::start_on(ClusterSpec {
        backend,
        nodes: &["hls-1"],
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let cp = &fx.cp;
    let (key, sid, slug) = hls_station(cp).await;
    let public = format!("{}/api/nowplaying/{slug}", cp.api);
    let np: Value = wait_for("a track playing", WAIT, || async {
        let np = now_playing(&public).await?;
        let text = np["now_playing"]["song"]["text"].as_str()?;
        (!text.is_empty()).then_some(np)
    })
    .await;
    hls_urls_are_announced(cp, &slug, &np).await;

    // Each redirect hands out a session of its own, on the edge carrying the station.
    let mp3_url = wait_for("the MP3 mount's HLS on the air", WAIT, || async {
        let (status, location) = hls_redirect(&cp.api, &slug, "radio.mp3").await;
        (status == 302).then_some(location)
    })
    .await;
    let edge = &fx.agents[0].edge_url;
    assert!(
        mp3_url.starts_with(&format!("{edge}/hls-audio/{slug}/radio.mp3/index.m3u8?s=")),
        "{mp3_url}"
    );
    let (_, second) = hls_redirect(&cp.api, &slug, "radio.mp3").await;
    assert_ne!(second, mp3_url, "a token per listener");
    ffmpeg_follows_the_live_playlist(&mp3_url).await;

    // The AAC mount, for a second listener: ffprobe through the redirector.
    let aac = format!("{}/listen/{slug}/radio.aac.m3u8", cp.api);
    assert_eq!(probe(&aac).await, "aac");

    // Two HLS listeners hold the station's two places: a third is refused with a sentence.
    let (status, third) = hls_redirect(&cp.api, &slug, "radio.mp3").await;
    assert_eq!(status, 302);
    let (status, refusal) = get(&third).await;
    assert_eq!(status, 403, "{refusal}");
    assert!(refusal.contains("listener limit"), "{refusal}");

    // They are the station's listeners, in the now-playing count, and metered.
    wait_for("two listeners counted", WAIT, || async {
        let np = now_playing(&public).await?;
        (np["listeners"]["total"] == 2).then_some(())
    })
    .await;
    eprintln!("metered: {}", metered(cp, &sid).await);

    // A station may prefer HLS for its web player: the now-playing JSON says so.
    assert_eq!(np["station"]["hls_preferred"], false);
    let (s, patched) = cp
        .tenant_call(
            &key,
            Method::PATCH,
            &format!("/v1/stations/{sid}"),
            Some(json!({"hls_preferred": true})),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["hls_preferred"], true);
    wait_for("hls_preferred in the now-playing JSON", WAIT, || async {
        let np = now_playing(&public).await?;
        (np["station"]["hls_preferred"] == true).then_some(())
    })
    .await;
}

onda_tests::on_both_backends!(an_autodj_station_plays_over_hls_counted_limited_and_metered);

/// ffmpeg sending Opus in Ogg to `url` in real time.
fn ogg_source(url: &str) -> Proc {
    Proc::external(
        "ffmpeg ogg source",
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:sample_rate=48000",
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-content_type",
            "application/ogg",
            "-f",
            "ogg",
            url,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_segments_its_own_copy_and_fallbacks_and_ogg_behave() {
    let origin = EdgeNode::start(
        "[[mounts]]\npath = \"/live\"\nsource_password = \"hack\"\n\n\
         [[mounts]]\npath = \"/main\"\nsource_password = \"hack\"\nfallback = \"/live\"\n\n\
         [[mounts]]\npath = \"/vorbis\"\nsource_password = \"hack\"\n",
    )
    .await;
    let _mp3 = ffmpeg_source(&origin.icecast_url("/live", "hack"), 440, &[]);
    let _ogg = ogg_source(&origin.icecast_url("/vorbis", "hack"));
    origin.wait_source("/live").await;
    let relay = EdgeNode::start(&format!(
        "[[relays]]\npath = \"/relayed\"\nurl = \"{}\"\n",
        origin.url("/live")
    ))
    .await;
    relay.wait_source("/relayed").await;
    let (status, body) = origin
        .admin_get("/admin/metadata?mount=/live&mode=updinfo&song=Relay%20Song")
        .await;
    assert_eq!(status, 200, "{body}");

    // The relay cuts its own copy, titles included (relayed as ICY metadata).
    let list = relay.url("/hls-audio/relayed/index.m3u8");
    wait_for(
        "the relayed title in the relay's playlist",
        WAIT,
        || async {
            let (status, body) = get(&list).await;
            (status == 200 && body.contains("X-TITLE=\"Relay Song\"")).then_some(())
        },
    )
    .await;
    assert_eq!(probe(&list).await, "mp3");
    let pcm = decoded_pcm_bytes(&list, 6).await;
    assert_eq!(pcm, 6 * 44_100 * 4);
    // Players of the same address and User-Agent (ffprobe's and ffmpeg's) are one session.
    let counted = relay
        .metric("onda_edge_listeners{mount=\"/relayed\"}")
        .await;
    assert!(counted >= 1.0, "HLS listeners on the relay: {counted}");

    // A mount without a source is heard through its fallback, over HLS too.
    let main = origin.url("/hls-audio/main/index.m3u8");
    let (status, body) = get(&main).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(probe(&main).await, "mp3");

    // An Ogg mount says why it has no HLS; an unknown mount says so too.
    wait_for("the Ogg source on the air", WAIT, || {
        origin.source_status("/vorbis")
    })
    .await;
    let (status, body) = get(&origin.url("/hls-audio/vorbis/index.m3u8")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("application/ogg") && body.contains("only of MP3 and AAC"),
        "{body}"
    );
    let (status, body) = get(&origin.url("/hls-audio/nothing/index.m3u8")).await;
    assert_eq!(status, 404);
    assert!(body.contains("no mount /nothing"), "{body}");
    let (status, body) = get(&origin.url("/hls-audio/live/index.m3u8?s=a%20b")).await;
    assert_eq!(status, 400);
    assert!(body.contains("session token"), "{body}");
}

/// A failover over HLS: the node carrying a station is killed (SIGKILL); the redirector's
/// `.m3u8` then sends players to the node that carries it now, whose own segmenter serves a
/// playlist ffprobe reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_m3u8_leads_to_the_new_carriers_own_hls() {
    let mut fx = ClusterFixture::start_with(ClusterSpec {
        node_ttl_ms: 1000,
        nodes: &["hls-a", "hls-b"],
        ..ClusterSpec::default()
    })
    .await;
    let station = fx.cp.station("Failover HLS FM").await;
    let slug = station["slug"].as_str().expect("slug").to_string();
    let before = wait_for("the mount's HLS", WAIT, || async {
        let (status, location) = hls_redirect(&fx.cp.api, &slug, "radio.mp3").await;
        (status == 302 && get(&location).await.0 == 200).then_some(location)
    })
    .await;
    let (took, killed) = onda_tests::cluster::kill_carrier_and_time_failover(
        &fx.cp,
        &mut fx.agents,
        &slug,
        Duration::from_secs(20),
    )
    .await;
    eprintln!(
        "failover (Icecast audio back) after {} ms, node {killed} killed",
        took.as_millis()
    );
    let survivor = fx.agents[0].edge_url.clone();
    assert!(
        !before.starts_with(&survivor),
        "{before} was on the killed node"
    );
    let after = wait_for("HLS from the surviving node", WAIT, || async {
        let (status, location) = hls_redirect(&fx.cp.api, &slug, "radio.mp3").await;
        (status == 302 && location.starts_with(&survivor) && get(&location).await.0 == 200)
            .then_some(location)
    })
    .await;
    assert_eq!(probe(&after).await, "mp3");
}

/// Audio HLS is a plan feature (`features.hls`): a station whose plan lacks it has no `hls_url`,
/// the redirector refuses its `.m3u8` with a sentence and its edge serves no HLS of it; moved to
/// a plan with HLS, the station's mount is served as HLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_hls_follows_the_plans_hls_feature() {
    let fx = ClusterFixture::start(1).await;
    let cp = &fx.cp;
    let (s, tenant) = cp
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "Basic Radio", "email": "b@example.com", "plan_id": "plan_basic"})),
        )
        .await;
    assert_eq!(s, 201, "{tenant}");
    let tid = tenant["id"].as_str().expect("id").to_string();
    let (s, key) = cp
        .call(
            Method::POST,
            &format!("/v1/tenants/{tid}/api-keys"),
            Some(json!({"name": "k"})),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let key = key["secret"].as_str().expect("secret");
    let (s, st) = cp
        .tenant_call(
            key,
            Method::POST,
            "/v1/stations",
            Some(json!({"name": "Basic FM", "mounts": [
                {"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]})),
        )
        .await;
    assert_eq!(s, 201, "{st}");
    let slug = st["slug"].as_str().expect("slug").to_string();
    let icecast = wait_for("the station on the air", WAIT, || cp.redirect(&slug)).await;
    let edge_hls = icecast.replace(&format!("/{slug}/"), &format!("/hls-audio/{slug}/"));
    let edge_hls = format!("{edge_hls}/index.m3u8");

    let (status, problem) = hls_redirect(&cp.api, &slug, "radio.mp3").await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem.contains("plan does not include HLS"), "{problem}");
    let (status, body) = get(&edge_hls).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not served as HLS"), "{body}");
    let np = now_playing(&format!("{}/api/nowplaying/{slug}", cp.api))
        .await
        .expect("now playing");
    assert_eq!(np["station"]["mounts"][0]["hls_url"], Value::Null, "{np}");

    let (s, t) = cp
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{tid}"),
            Some(json!({"plan_id": "plan_premium"})),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let url = wait_for("HLS once the plan includes it", WAIT, || async {
        let (status, location) = hls_redirect(&cp.api, &slug, "radio.mp3").await;
        (status == 302 && get(&location).await.0 == 200).then_some(location)
    })
    .await;
    assert_eq!(probe(&url).await, "mp3");
}
