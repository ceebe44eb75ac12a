//! The web app (`web/`, served at `/app/`) in a real browser: Debian's chromium driven by
//! playwright-core (tests/browser/app.mjs). A fan and a creator, each in a browser context of
//! their own, sign in by link and chat: the typing indicator comes and goes, a message arrives,
//! the read mark shows, the fan attaches an image that both pages show loaded, the unread badge
//! appears and clears, the notification bell counts, and a message sent while the creator's tab
//! had lost its connection shows once it reconnects.
//! The live pages (tests/browser/watch.mjs) on a cluster with ffmpeg publishing: the watch
//! page's paywall, subscribing and playing, the stream chat between fan and creator with a tip
//! and a deletion, selling the stream per view and buying it, the wallet pages and the go-live
//! page. Both run on SQLite and on PostgreSQL.
//! A paid video call (tests/browser/call.mjs) between two chromium browsers with fake cameras,
//! relay-only through the coturn of a one-node cluster: the creator goes available with a
//! price, the fan calls from the creator's page, the creator answers in one of two tabs, media
//! flows both ways over relayed candidates, the fan's mute and camera-off reach the creator,
//! and the fan is charged exactly what the call's record says.
//! Screenshots of each page are kept in the node process's directory (its path is printed).

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::edge::ffmpeg_rtmp;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::on_both_backends;
use onda_tests::process::Proc;
use onda_tests::turn::{TurnPorts, agent_env, require_coturn};
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

on_both_backends!(
    a_fan_and_a_creator_chat_in_the_browser,
    a_fan_subscribes_and_watches_live_in_the_browser,
    a_fan_calls_a_creator_in_the_browser_and_pays_what_the_record_says,
);

async fn a_fan_and_a_creator_chat_in_the_browser(b: Backend) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/install-deps.sh test"
    );
    assert!(
        onda_tests::web_app_dir().join("index.html").is_file(),
        "the web app is not built: run scripts/build-web.sh (make test does)"
    );
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    // The app and its assets: the page revalidated, the hashed assets cached for good.
    let page = cp.call(Method::GET, "/app/", None, None).await.expect(200);
    assert!(page.text.contains("<script"), "{}", page.text);
    let app = onda_shared::http::get(format!("{}/app/", cp.url))
        .await
        .expect("app");
    assert_eq!(app.headers()["cache-control"], "no-cache");
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;

    let pictures = tempfile::tempdir().expect("temp dir");
    let photo = onda_tests::media::make_png(pictures.path(), "photo", 120, 80).await;

    let app_url = format!("{}/app/", cp.url);
    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[
            &dir.join("app.mjs").display().to_string(),
            &app_url,
            &fan,
            &creator,
            ".",
            &photo.display().to_string(),
        ],
    );
    let exit = node.wait_exit(Duration::from_secs(120)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browser ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshots in {})", node.path().display());
    let steps = &out["steps"];
    assert_eq!(steps["signed_in"]["fan"], "Fan One", "{report}");
    assert_eq!(steps["signed_in"]["creator"], "Cleo", "{report}");
    assert_eq!(
        steps["signed_in"]["address_has_token"], false,
        "the sign-in link's token leaves the address bar: {report}"
    );
    assert_eq!(steps["open"], true, "{report}");
    assert_eq!(steps["typing_shows"], "fan-1 is typing…", "{report}");
    assert_eq!(steps["message_arrives"], "Hi Cleo 🎧", "{report}");
    assert_eq!(steps["typing_goes"], true, "{report}");
    assert_eq!(steps["read_mark"], "Seen", "{report}");
    // The attached picture, uploaded and sent: loaded in both pages at its own width.
    assert_eq!(steps["image_attached"]["creator"], 120, "{report}");
    assert_eq!(steps["image_attached"]["fan"], 120, "{report}");
    assert_eq!(steps["unread_badge"], "1", "{report}");
    assert_eq!(steps["badge_clears"], true, "{report}");
    // The creator's reply made one notification for the fan: the bell counts it, opening the
    // panel lists it and marks it read.
    assert_eq!(steps["bell"]["before"], "1", "{report}");
    assert_eq!(steps["bell"]["items"], 1, "{report}");
    // The creator's tab lost its connection while the fan wrote: when socket.io-client
    // reconnected, the message was replayed into the open conversation, once.
    let replay = &steps["reconnect_replays"];
    assert_eq!(replay["text"], "While you were away 📡", "{report}");
    assert_eq!(replay["shown"], 1, "{report}");
    assert_eq!(replay["recovered"], 1, "{report}");
    let errors: Vec<&Value> = out["console"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.as_str().is_some_and(|l| l.contains("pageerror")))
        .collect();
    assert!(errors.is_empty(), "{report}");
    eprintln!("web app: {out}\n(screenshots in {})", node.path().display());
    cp.stop().await;
}

/// The live pages (tests/browser/watch.mjs) on a cluster of one node: ffmpeg publishes RTMP to
/// a stream for the subscribers of creator Cleo; the fan opens its watch page and sees the
/// paywall (the chat closed), subscribes from their wallet and the video plays (hls.js's
/// `currentTime` advances); Cleo's go-live page shows the RTMP server, the key, "live" and the
/// fan watching; on the watch page they chat both ways, the fan's tip shows highlighted in both
/// chats, and Cleo deletes a message of the fan's, which goes from the fan's chat; Cleo sells
/// the stream per view from the go-live page, and the fan buys it and it plays again; the fan's
/// wallet page shows the balance less the subscription and the tip, and the history; Cleo's
/// wallet shows the earnings of the day and takes a payout request.
async fn a_fan_subscribes_and_watches_live_in_the_browser(b: Backend) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/install-deps.sh test"
    );
    let app_dir = onda_tests::web_app_dir();
    assert!(
        app_dir.join("index.html").is_file(),
        "the web app is not built: run scripts/build-web.sh (make test does)"
    );
    let app_dir = app_dir.display().to_string();
    let Some(fx) = ClusterFixture::start_on(ClusterSpec {
        admin_token: "web-live-test-admin-token-012345",
        backend: b,
        node_ttl_ms: 1000,
        nodes: &["web-1"],
        env: &[("ONDA_HTTP_APP_DIR", &app_dir)],
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let cp = &fx.cp;
    let key = cp.tenant_key("Live Creators").await;
    let mut tokens = Vec::new();
    for (id, body) in [
        (
            "cleo",
            json!({"display_name": "Cleo", "creator": true, "subscription_price": 499}),
        ),
        ("fan-1", json!({"display_name": "Fan One"})),
    ] {
        let (s, u) = cp
            .tenant_call(&key, Method::PUT, &format!("/v1/users/{id}"), Some(body))
            .await;
        assert_eq!(s, 201, "{u}");
        let (s, t) = cp
            .tenant_call(
                &key,
                Method::POST,
                &format!("/v1/users/{id}/tokens"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        tokens.push(t["token"].as_str().expect("token").to_string());
    }
    cp.credit(&key, "fan-1", 2000).await;
    let (stream, ingest) = cp
        .placed_stream(
            &key,
            json!({"name": "Cleo Live", "slug": "cleo-live", "access": "subscribers", "creator_id": "cleo"}),
        )
        .await;
    let id = stream["id"].as_str().expect("id").to_string();
    let publish = ingest["publish_url"].as_str().expect("publish url");
    let _publisher = ffmpeg_rtmp(publish, 25);
    wait_for("the stream publishing", Duration::from_secs(20), || async {
        let (_, v) = cp
            .tenant_call(
                &key,
                Method::GET,
                &format!("/v1/streams/{id}/viewers"),
                None,
            )
            .await;
        (v["publishing"] == true).then_some(())
    })
    .await;

    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[
            &dir.join("watch.mjs").display().to_string(),
            &format!("{}/app/", cp.api),
            "cleo-live",
            &tokens[1],
            &tokens[0],
            ".",
        ],
    );
    let exit = node.wait_exit(Duration::from_secs(120)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browser ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshots in {})", node.path().display());
    let steps = &out["steps"];
    // Not subscribed: the paywall offers the subscription at Cleo's price, and no video.
    let paywall = &steps["paywall"];
    assert_eq!(paywall["name"], "Cleo Live", "{report}");
    assert_eq!(
        paywall["subscribe"], "Subscribe for $4.99/month",
        "{report}"
    );
    assert_eq!(paywall["balance"], 2000, "{report}");
    assert_eq!(paywall["video"], 0, "{report}");
    assert_eq!(paywall["address_has_token"], false, "{report}");
    assert!(
        paywall["chat_note"]
            .as_str()
            .is_some_and(|n| n == "Subscribe to Cleo to watch and chat."),
        "the chat is closed and says what opens it: {report}"
    );
    // Subscribed from the wallet: the video plays and goes on playing.
    let play = &steps["subscribe_and_play"];
    assert!(play["first"].as_f64().is_some_and(|t| t > 0.0), "{report}");
    assert!(
        play["later"].as_f64() > play["first"].as_f64().map(|t| t + 1.0),
        "currentTime advances: {report}"
    );
    assert_eq!(play["paywall_gone"], true, "{report}");
    assert_eq!(play["live"], "LIVE", "{report}");
    // The go-live page: OBS's server and key (the ones the API gave), live and watched.
    let live = &steps["go_live"];
    let rtmp = ingest["rtmp_url"].as_str().expect("rtmp_url");
    assert_eq!(live["rtmp_url"], rtmp, "{report}");
    assert_eq!(live["stream_key"], stream["stream_key"], "{report}");
    assert_eq!(live["key_shown_as"], "text", "{report}");
    assert_eq!(live["status"], "live", "{report}");
    assert!(live["viewers"].as_u64() >= Some(1), "{report}");
    assert_eq!(live["access"], "subscribers", "{report}");
    assert_eq!(live["nav_live"], true, "{report}");
    // Stream chat on the watch page: both joined (the fan once subscribed), a round trip with
    // an emoji from the palette, moderation controls for the creator only.
    assert_eq!(
        steps["creator_joins"]["fan_chat_note_hidden"], true,
        "{report}"
    );
    let chat = &steps["chat_round_trip"];
    assert_eq!(chat["creator_saw"], "Hello Cleo 😀", "{report}");
    assert_eq!(chat["fan_saw"], "Welcome! 🎉", "{report}");
    assert_eq!(chat["creator_ban_controls"], 1, "{report}");
    assert_eq!(chat["fan_ban_controls"], 0, "{report}");
    // The tip, highlighted in both chats with its amount and message.
    let tip = &steps["tip"];
    assert!(
        tip["status"].as_str().is_some_and(|t| t.contains("$2.00")),
        "{report}"
    );
    for side in ["fan_chat", "creator_chat"] {
        let text = tip[side].as_str().unwrap_or_default();
        assert!(
            text.contains("Fan One")
                && text.contains("tipped $2.00")
                && text.contains("Great show 🎉"),
            "{side}: {report}"
        );
    }
    // The creator deleted the fan's spoiler: gone from the fan's chat, the other three stay.
    let deleted = &steps["moderation_delete"];
    assert_eq!(deleted["fan_lines"], 3, "{report}");
    assert!(deleted["viewers"].as_u64() >= Some(1), "{report}");
    // Sold per view from the go-live page: the subscriber is offered the stream at its price,
    // buys it, and it plays again.
    let ppv = &steps["pay_per_view"];
    assert_eq!(ppv["offer"], "Buy for $3.00", "{report}");
    assert_eq!(ppv["video_before"], 0, "{report}");
    assert!(ppv["first"].as_f64().is_some_and(|t| t > 0.0), "{report}");
    assert!(
        ppv["later"].as_f64() > ppv["first"].as_f64().map(|t| t + 1.0),
        "currentTime advances after the purchase: {report}"
    );
    assert_eq!(ppv["paywall_gone"], true, "{report}");
    // The fan's wallet: 2000 − 499 − 200 − 300, the four movements, the subscription.
    let wallet = &steps["fan_wallet"];
    assert_eq!(wallet["balance"], 1001, "{report}");
    assert_eq!(
        wallet["sources"],
        json!([
            ["purchase", -300],
            ["tip", -200],
            ["subscription", -499],
            ["credit", 2000]
        ]),
        "{report}"
    );
    assert_eq!(wallet["subscriptions"], 1, "{report}");
    assert_eq!(wallet["nav_live"], false, "{report}");
    // Cleo's earnings at the 20 % fee: 400 of the subscription, 160 of the tip and 240 of the
    // purchase, today; a payout of 100 leaves 700 and is listed as requested.
    let earned = &steps["creator_wallet"];
    assert_eq!(earned["earnings_before"], 800, "{report}");
    assert_eq!(earned["days"], json!([800]), "{report}");
    assert_eq!(earned["earnings_after"], 700, "{report}");
    assert_eq!(earned["payouts"], json!(["requested"]), "{report}");
    let errors: Vec<&Value> = out["console"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.as_str().is_some_and(|l| l.contains("pageerror")))
        .collect();
    assert!(errors.is_empty(), "{report}");
    eprintln!(
        "web app live: {out}\n(screenshots in {})",
        node.path().display()
    );
}

/// What the call test's fan holds before calling.
const CALL_CREDIT: i64 = 650;

/// A tenant's API as the call test drives it: over any control plane (a `TestControlPlane`
/// or a cluster's), with the tenant's key.
struct TenantApi<'a> {
    http: &'a reqwest::Client,
    api: &'a str,
    key: String,
}

impl TenantApi<'_> {
    /// A request with the tenant's key: the status and the JSON body.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if path.ends_with("/credits") {
            req = req.header("idempotency-key", format!("web-call-{path}"));
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.send(Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Creator Cleo (billed by the second, not taking calls yet) and fan-1 with 650 in the
    /// wallet (a call at 600 a minute rings, and is warned 5 s in): their user tokens (fan,
    /// creator).
    async fn call_users(&self) -> (String, String) {
        let mut tokens = Vec::new();
        for (id, body) in [
            ("fan-1", json!({"display_name": "Fan One"})),
            (
                "cleo",
                json!({"display_name": "Cleo", "creator": true, "call_billing": "second"}),
            ),
        ] {
            let path = format!("/v1/users/{id}");
            let (s, u) = self.send(Method::PUT, &path, Some(body)).await;
            assert_eq!(s, 201, "{u}");
            let (s, t) = self
                .send(Method::POST, &format!("{path}/tokens"), Some(json!({})))
                .await;
            assert_eq!(s, 201, "{t}");
            tokens.push(t["token"].as_str().expect("token").to_string());
        }
        let credit = json!({"amount": CALL_CREDIT, "reference": "psp_web_call"});
        let (s, c) = self
            .send(Method::POST, "/v1/users/fan-1/wallet/credits", Some(credit))
            .await;
        assert_eq!(s, 201, "{c}");
        let creator = tokens.pop().expect("creator");
        (tokens.pop().expect("fan"), creator)
    }
}

/// Runs tests/browser/call.mjs against the app at `app_url` with `ice` ("relay" or "all"):
/// the finished process (hold it while judging: a panic keeps its directory, screenshots and
/// all), its JSON and a report of it (with where the screenshots are).
async fn run_call_browsers(
    app_url: &str,
    (fan, creator): (&str, &str),
    ice: &str,
) -> (Proc, Value, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/install-deps.sh test"
    );
    assert!(
        onda_tests::web_app_dir().join("index.html").is_file(),
        "the web app is not built: run scripts/build-web.sh (make test does)"
    );
    let script = dir.join("call.mjs").display().to_string();
    let mut node = Proc::external(
        "chromium (playwright-core)",
        "node",
        &[&script, app_url, fan, creator, "cleo", ".", ice],
    );
    // The calls take about a minute and a half, the missed one 30 s of ringing of it.
    let exit = node.wait_exit(Duration::from_secs(210)).await;
    let out: Value = serde_json::from_str(node.stdout().trim())
        .unwrap_or_else(|e| panic!("no JSON from the browsers ({exit}): {e}\n{}", node.logs()));
    let report = format!("{out:#}\n(screenshots in {})", node.path().display());
    let errors: Vec<&Value> = out["console"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.as_str().is_some_and(|l| l.contains("pageerror")))
        .collect();
    assert!(errors.is_empty(), "{report}");
    eprintln!(
        "web app call: {out}\n(screenshots in {})",
        node.path().display()
    );
    (node, out, report)
}

/// What the two browsers saw from Cleo's settings to the hang-up (the media's `policy` and
/// candidates are the caller's to judge).
fn assert_call_seen(steps: &Value, report: &str) {
    // Online but not taking calls: no button, and the gateway's sentence for `unavailable`.
    let before = &steps["not_available"];
    assert_eq!(before["name"], "Cleo", "{report}");
    assert_eq!(before["button_hidden"], true, "{report}");
    assert_eq!(
        before["reason"], "Cleo does not take calls now.",
        "{report}"
    );
    let button = &steps["call_button"];
    assert_eq!(button["text"], "📞 Call · $6.00/min", "{report}");
    assert_eq!(button["price"], 600, "{report}");
    // Cancelled while it rang, then rejected in Cleo's second tab: both tabs stopped ringing.
    let cancelled = &steps["cancelled"];
    assert_eq!(
        cancelled["fan_status"], "Call ended: You cancelled the call.",
        "{report}"
    );
    assert_eq!(cancelled["reason"], "cancelled", "{report}");
    let rejected = &steps["rejected"];
    assert_eq!(
        rejected["fan_status"], "Call ended: Cleo declined the call.",
        "{report}"
    );
    assert_eq!(rejected["reason"], "rejected", "{report}");
    // Then nobody answered: the server ended it as missed after its ringing time, both tabs
    // stopped ringing, and Cleo's notifications have the missed call.
    let missed = &steps["missed"];
    assert_eq!(
        missed["fan_status"], "Call ended: Cleo did not answer.",
        "{report}"
    );
    assert_eq!(missed["reason"], "missed", "{report}");
    assert!(
        missed["notification"]
            .as_str()
            .is_some_and(|n| n.starts_with("Missed call from fan-1")),
        "{report}"
    );
    // Both of Cleo's tabs rang with the price; the one that did not answer stopped ringing
    // and stayed out of the call.
    let ringing = &steps["ringing"];
    assert_eq!(ringing["fan_status"], "Ringing Cleo…", "{report}");
    let tabs = ringing["tabs"].as_array().cloned().unwrap_or_default();
    assert_eq!(tabs.len(), 2, "{report}");
    for tab in tabs {
        assert_eq!(tab["caller"], "Fan One", "the caller's name: {report}");
        assert_eq!(
            tab["price"], "$6.00 a minute, billed by the second",
            "{report}"
        );
    }
    let accepted = &steps["accepted"];
    assert_eq!(accepted["fan_status"], "In call", "{report}");
    assert_eq!(accepted["tab2_in_call"], 0, "{report}");
    assert_eq!(
        accepted["tab2_elsewhere"], "📞 In a call with fan-1 in another tab or device. Hang up",
        "{report}"
    );
    assert_eq!(accepted["tab2_peers"], 0, "{report}");
    // Media both ways: video frames decoded and audio packets received rising on each side.
    let flows = &steps["media_flows"];
    for side in ["fan", "creator"] {
        let s = &flows[side];
        assert!(
            s["frames"].as_i64() >= Some(30),
            "{side} decodes video: {report}"
        );
        assert!(
            s["audio_packets"].as_i64() >= Some(50),
            "{side} receives audio: {report}"
        );
        assert!(
            s["audio_energy"].as_f64() > Some(0.0),
            "{side} hears sound: {report}"
        );
    }
    // The fan's microphone muted and camera off: Cleo's side hears silence (no audio energy;
    // packets of silence still come) and sees black (Chromium goes on sending black frames, so
    // the frame count rises: the picture is what shows it), while the fan still sees and hears
    // Cleo.
    let muted = &steps["fan_mutes"];
    assert_eq!(
        (&muted["mic"], &muted["camera"]),
        (&json!("true"), &json!("true")),
        "{report}"
    );
    assert_eq!(
        muted["creator"]["audio_energy"].as_f64(),
        Some(0.0),
        "{report}"
    );
    assert!(
        flows["creator"]["brightness"].as_i64() > Some(20),
        "{report}"
    );
    assert!(
        muted["creator"]["brightness"].as_i64() <= Some(5),
        "{report}"
    );
    assert!(muted["fan"]["frames"].as_i64() >= Some(30), "{report}");
    assert!(
        muted["fan"]["audio_energy"].as_f64() > Some(0.0),
        "{report}"
    );
    // 650 pays 65 s at 10 a second: both are warned when less than a minute is left.
    let warning = &steps["warning"];
    let (fan_warned, creator_warned) = (
        warning["fan"].as_str().unwrap_or_default(),
        warning["creator"].as_str().unwrap_or_default(),
    );
    assert!(fan_warned.starts_with("Your balance pays for "), "{report}");
    assert!(
        creator_warned.starts_with("The caller's balance pays for "),
        "{report}"
    );
    // Hung up by the fan: both told, with the reason in words.
    let hung = &steps["hang_up"];
    assert_eq!(hung["fan_status"], "Call ended: You hung up.", "{report}");
    assert_eq!(
        hung["creator_status"], "Call ended: fan-1 hung up.",
        "{report}"
    );
    assert_eq!(hung["reason"], "hung_up", "{report}");
}

/// The server's record of the call, and what the pages and the ledger say it cost: the fan
/// paid its amount, Cleo earned it less the tenant's 20 % fee.
async fn assert_call_charged(t: &TenantApi<'_>, steps: &Value, report: &str) {
    // Cleo's settings, made in her page, are her profile's.
    let cleo = t.get("/v1/users/cleo").await;
    assert_eq!(
        (&cleo["available_for_calls"], &cleo["call_price_per_minute"]),
        (&json!(true), &json!(600)),
        "{report}"
    );
    // Newest first: the answered call, then the missed, the rejected and the cancelled ones,
    // which cost nothing.
    let calls = t.get("/v1/calls").await;
    let items = calls["items"].as_array().cloned().unwrap_or_default();
    let ends: Vec<(&Value, &Value)> = items.iter().map(|c| (&c["reason"], &c["amount"])).collect();
    assert_eq!(
        ends,
        [
            (&json!("hung_up"), &items[0]["amount"]),
            (&json!("missed"), &json!(0)),
            (&json!("rejected"), &json!(0)),
            (&json!("cancelled"), &json!(0))
        ],
        "{calls}"
    );
    let call = &items[0];
    let hung = &steps["hang_up"];
    assert_eq!(call["id"], hung["call_id"], "{call}\n{report}");
    assert_eq!(
        (&call["state"], &call["reason"], &call["billing"]),
        (&json!("ended"), &json!("hung_up"), &json!("second")),
        "{call}"
    );
    // By the second at 600 a minute: 10 for each second started, and media was measured for
    // more than 10 s.
    let amount = call["amount"].as_i64().expect("amount");
    assert_eq!(
        amount,
        call["unitsCharged"].as_i64().expect("units") * 10,
        "{call}"
    );
    assert!(amount >= 100, "{call}");
    assert!(
        call["setupMs"].as_i64().is_some(),
        "call-connected was reported: {call}"
    );
    assert_eq!(hung["fan_cost"], amount, "{call}\n{report}");
    assert_eq!(hung["creator_cost"], amount, "{call}\n{report}");
    let fee = amount * 20 / 100;
    let fan_wallet = t.get("/v1/users/fan-1/wallet").await;
    assert_eq!(fan_wallet["balance"], CALL_CREDIT - amount, "{fan_wallet}");
    let cleo_wallet = t.get("/v1/users/cleo/wallet").await;
    assert_eq!(cleo_wallet["earnings"], amount - fee, "{cleo_wallet}");
    let fan_after = &steps["fan_after"];
    assert_eq!(fan_after["balance"], CALL_CREDIT - amount, "{report}");
    assert_eq!(fan_after["charged"], -amount, "{report}");
    assert_eq!(fan_after["history_amount"], amount, "{report}");
    assert_eq!(fan_after["history_reason"], "hung_up", "{report}");
    assert_eq!(fan_after["history_rows"], 4, "{report}");
    let creator_after = &steps["creator_after"];
    assert_eq!(creator_after["earnings"], amount - fee, "{report}");
    assert_eq!(creator_after["history_amount"], amount, "{report}");
    assert_eq!(creator_after["history_with"], "← fan-1", "{report}");
    assert_eq!(creator_after["available_checked"], true, "{report}");
}

/// A paid call between two browsers (tests/browser/call.mjs) on a cluster whose node runs
/// TURN (the agent's coturn on loopback ports), with `iceTransportPolicy: "relay"`: every
/// media packet crosses coturn. Creator Cleo (billed by the second) is online but not taking
/// calls, and the fan's view of her page says so; she turns calls on at 600 a minute from the
/// calls page; the fan's call button turns on with the price; the fan cancels a call while it
/// rings, Cleo rejects the next and lets the one after ring out (missed, and her notifications
/// say so); then both of Cleo's tabs ring and she answers in one (the
/// other's screen goes); both sides decode video frames and receive audio over a relayed
/// candidate pair, with the node's TURN URLs as the call's ICE servers; the fan is warned that
/// the balance pays less than a minute more; the fan mutes the microphone and turns the camera
/// off and Cleo's side hears silence and sees black; the fan hangs up; the fan's wallet, Cleo's
/// earnings and both call histories, in the pages and over REST, are what `GET /v1/calls` says
/// the call cost (the tenant's fee is 20 %).
async fn a_fan_calls_a_creator_in_the_browser_and_pays_what_the_record_says(b: Backend) {
    require_coturn();
    let app_dir = onda_tests::web_app_dir().display().to_string();
    let Some(mut fx) = ClusterFixture::start_on(ClusterSpec {
        admin_token: "web-call-test-admin-token-0123456",
        backend: b,
        env: &[("ONDA_HTTP_APP_DIR", &app_dir)],
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    fx.join_with_env("edge-turn", agent_env(&TurnPorts::free()))
        .await;
    fx.wait_ready(1, Duration::from_secs(30)).await;
    let urls = onda_tests::turn::advertised(&fx.cp).await;
    let cp = &fx.cp;
    let tenant = TenantApi {
        http: &cp.http,
        api: &cp.api,
        key: cp.tenant_key("Call Creators").await,
    };
    let (fan, creator) = tenant.call_users().await;
    let app = format!("{}/app/", cp.api);
    let (_browsers, out, report) = run_call_browsers(&app, (&fan, &creator), "relay").await;
    let steps = &out["steps"];
    assert_call_seen(steps, &report);
    // Relayed both ways: each side's peer connection was made relay-only with the node's
    // TURN URLs, and its selected candidate pair is a relay on its side.
    for side in ["fan", "creator"] {
        let s = &steps["media_flows"][side];
        assert_eq!(s["policy"], "relay", "{side}: {report}");
        assert_eq!(s["ice_urls"], json!(urls), "{side}: {report}");
        assert_eq!(s["local_candidate"], "relay", "{side}: {report}");
        assert_eq!(s["remote_candidate"], "relay", "{side}: {report}");
    }
    assert_call_charged(&tenant, steps, &report).await;
}
