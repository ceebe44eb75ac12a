//! Song requests through the whole cluster, on SQLite and PostgreSQL: a listener searches a
//! station's requestable library on the public API and requests a track; the origin's AutoDJ
//! announces it as the next song, plays it, and the history marks it as requested. The same
//! track again, or its artist, inside the station's gaps is refused with the reason, a listener
//! over its limit gets 429 with Retry-After, and a station without requests (off, or a plan
//! without the feature) says so. The tenant lists the requests and clears pending ones.

use onda_tests::cluster::ControlPlane;
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::on_both_backends;
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_request_plays_next_and_is_kept_in_the_history,
    stations_without_requests_say_why,
);

/// Uploads a generated track of `secs` seconds to the station's library (no playlist).
async fn upload(
    cp: &ControlPlane,
    key: &str,
    sid: &str,
    dir: &std::path::Path,
    (file, freq, artist, title): (&str, u32, &str, &str),
) -> Value {
    let path = onda_tests::edge::make_track(dir, file, freq, 4, artist, title).await;
    let resp = cp
        .http
        .post(format!(
            "{}/v1/stations/{sid}/media?filename={file}",
            cp.api
        ))
        .bearer_auth(key)
        .body(std::fs::read(&path).expect("read"))
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 201, "{file}");
    resp.json().await.expect("json")
}

/// A public call (no token): status, Retry-After, JSON body.
async fn public(cp: &ControlPlane, method: Method, path: &str) -> (u16, Option<String>, Value) {
    let resp = cp
        .http
        .request(method, format!("{}{path}", cp.api))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

async fn now_playing(cp: &ControlPlane, slug: &str) -> Option<Value> {
    onda_shared::http::get(&format!("{}/api/nowplaying/{slug}", cp.api))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn text(v: &Value) -> &str {
    v["song"]["text"].as_str().unwrap_or_default()
}

async fn a_request_plays_next_and_is_kept_in_the_history(b: Backend) {
    let Some(fx) = ClusterFixture::start_on(ClusterSpec {
        backend: b,
        nodes: &["edge-1"],
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let cp = &fx.cp;
    let key = cp.tenant_key("Requests Inc").await;
    let mount = json!([{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]);
    let (sid, slug) = cp.autodj_station(&key, "Request FM", mount).await;
    let media = tempfile::tempdir().expect("dir");
    // The rotation plays only its own two tracks; the rest of the library plays on request.
    let rotation = [
        ("a.mp3", 440, 4, "Rot Artist", "Song A"),
        ("b.mp3", 494, 4, "Rot Artist", "Song B"),
    ];
    cp.upload_rotation(&key, &sid, media.path(), "Daytime", &rotation)
        .await;
    let mut ids = std::collections::BTreeMap::new();
    for (file, freq, artist, title) in [
        ("c.mp3", 523, "Req One", "First"),
        ("d.mp3", 587, "Req One", "Second"),
        ("e.mp3", 659, "Req Two", "Third"),
        ("g.mp3", 698, "Req Three", "Fourth"),
        ("j.mp3", 784, "Station", "Jingle"),
    ] {
        let m = upload(cp, &key, &sid, media.path(), (file, freq, artist, title)).await;
        ids.insert(title, m["id"].as_str().expect("id").to_string());
    }
    // A jingle (only in an interval playlist) is not requestable.
    let (s, pl) = cp
        .tenant_call(
            &key,
            Method::POST,
            &format!("/v1/stations/{sid}/playlists"),
            Some(
                json!({"name": "Jingles", "kind": "interval", "order": "sequential",
                        "every_songs": 1000, "media_ids": [ids["Jingle"]]}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{pl}");

    // Off until the tenant turns requests on.
    let list = format!("/api/station/{slug}/requests");
    let (s, _, off) = public(cp, Method::GET, &list).await;
    assert_eq!(s, 403, "{off}");
    assert!(
        off["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("does not take song requests"),
        "{off}"
    );
    let settings = json!({"requests": {"enabled": true, "track_gap_minutes": 60,
        "artist_gap_minutes": 60, "per_ip_limit": 5, "per_ip_minutes": 10}});
    let (s, station) = cp
        .tenant_call(
            &key,
            Method::PATCH,
            &format!("/v1/stations/{sid}"),
            Some(settings),
        )
        .await;
    assert_eq!(s, 200, "{station}");
    assert_eq!(station["requests"]["artist_gap_minutes"], 60, "{station}");
    let (s, bad) = cp
        .tenant_call(
            &key,
            Method::PATCH,
            &format!("/v1/stations/{sid}"),
            Some(json!({"requests": {"per_ip_limit": 0}})),
        )
        .await;
    assert_eq!(s, 422, "{bad}");
    assert!(
        bad["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("requests.per_ip_limit")
    );

    // The requestable library: everything but the jingle, by artist and title, searchable.
    let (s, _, all) = public(cp, Method::GET, &list).await;
    assert_eq!(s, 200, "{all}");
    let texts: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        texts,
        [
            "Req One - First",
            "Req One - Second",
            "Req Three - Fourth",
            "Req Two - Third",
            "Rot Artist - Song A",
            "Rot Artist - Song B"
        ],
        "{all}"
    );
    assert_eq!(all["total"], 6);
    let (_, _, found) = public(
        cp,
        Method::GET,
        &format!("{list}?q=req+one&per_page=1&page=2"),
    )
    .await;
    assert_eq!(found["total"], 2, "{found}");
    assert_eq!(found["total_pages"], 2, "{found}");
    assert_eq!(text(&found["items"][0]), "Req One - Second", "{found}");
    let first = &all["items"][0];
    assert_eq!(first["request_id"], ids["First"].as_str());
    assert_eq!(
        first["request_url"],
        format!("/api/station/{slug}/request/{}", ids["First"])
    );
    let song_id = first["song"]["id"].as_str().expect("song id").to_string();
    assert_eq!(song_id.len(), 32, "{first}");
    // No embedded picture: the default one, as now-playing shows it.
    assert_eq!(
        first["song"]["art"],
        format!("{}/art/default.svg", cp.api),
        "{first}"
    );

    // The station plays its rotation; a listener requests "First".
    let np = wait_for(
        "the rotation on the air",
        Duration::from_secs(60),
        || async {
            let np = now_playing(cp, &slug).await?;
            text(&np["now_playing"])
                .starts_with("Rot Artist")
                .then_some(np)
        },
    )
    .await;
    assert_eq!(np["now_playing"]["is_request"], false, "{np}");
    let ask = |id: &str| format!("/api/station/{slug}/request/{id}");
    let (s, _, ok) = public(cp, Method::POST, &ask(&ids["First"])).await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(
        ok["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Req One - First")
    );

    // It is announced as the next song once the origin has it prepared, then plays.
    let next = wait_for(
        "the request announced next",
        Duration::from_secs(30),
        || async {
            let np = now_playing(cp, &slug).await?;
            (text(&np["playing_next"]) == "Req One - First").then_some(np)
        },
    )
    .await;
    assert_eq!(next["playing_next"]["is_request"], true, "{next}");
    let playing = wait_for("the request playing", Duration::from_secs(30), || async {
        let np = now_playing(cp, &slug).await?;
        (text(&np["now_playing"]) == "Req One - First").then_some(np)
    })
    .await;
    assert_eq!(playing["now_playing"]["is_request"], true, "{playing}");
    assert_eq!(playing["now_playing"]["song"]["id"], song_id.as_str());
    let after = wait_for(
        "the request in the history",
        Duration::from_secs(30),
        || async {
            let np = now_playing(cp, &slug).await?;
            let played = np["song_history"]
                .as_array()?
                .iter()
                .any(|h| text(h) == "Req One - First");
            played.then_some(np)
        },
    )
    .await;
    for h in after["song_history"].as_array().expect("history") {
        assert_eq!(h["is_request"], text(h) == "Req One - First", "{after}");
    }

    // The same track, or another of its artist, inside the gaps: refused with the reason.
    let (s, _, again) = public(cp, Method::POST, &ask(&ids["First"])).await;
    assert_eq!(s, 409, "{again}");
    assert_eq!(
        again["detail"],
        "This track was played or requested in the last 60 minutes; request another one."
    );
    let (s, _, artist) = public(cp, Method::POST, &ask(&ids["Second"])).await;
    assert_eq!(s, 409, "{artist}");
    assert!(
        artist["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("A track by Req One was played or requested in the last 60 minutes"),
        "{artist}"
    );
    let (s, _, unknown) = public(cp, Method::POST, &ask(&ids["Jingle"])).await;
    assert_eq!(s, 404, "{unknown}");

    // One request per 10 minutes per listener: the next one waits, and is told how long.
    let station_path = format!("/v1/stations/{sid}");
    let patch = |limit: u32| {
        let body = json!({"requests": {"per_ip_limit": limit}});
        cp.tenant_call(&key, Method::PATCH, &station_path, Some(body))
    };
    assert_eq!(patch(1).await.0, 200);
    let (s, retry, limited) = public(cp, Method::POST, &ask(&ids["Third"])).await;
    assert_eq!(s, 429, "{limited}");
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((500..=600).contains(&retry), "{retry}");
    assert!(
        limited["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("You made 1 request(s) in the last 10 minutes"),
        "{limited}"
    );

    // The tenant's view: newest first; one cleared by id, the rest of the pending at once.
    assert_eq!(patch(5).await.0, 200);
    assert_eq!(public(cp, Method::POST, &ask(&ids["Third"])).await.0, 200);
    assert_eq!(public(cp, Method::POST, &ask(&ids["Fourth"])).await.0, 200);
    let requests = format!("/v1/stations/{sid}/requests");
    let (s, page) = cp.tenant_call(&key, Method::GET, &requests, None).await;
    assert_eq!(s, 200, "{page}");
    let titles: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["title"].as_str())
        .collect();
    assert_eq!(titles, ["Fourth", "Third", "First"], "{page}");
    assert_eq!(page["items"][2]["state"], "played", "{page}");
    assert!(page["items"][2]["played_at"].is_string(), "{page}");
    let fourth = page["items"][0]["id"].as_str().expect("id").to_string();
    let (s, _) = cp
        .tenant_call(&key, Method::DELETE, &format!("{requests}/{fourth}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, cleared) = cp.tenant_call(&key, Method::DELETE, &requests, None).await;
    assert_eq!((s, &cleared["cleared"]), (200, &json!(1)), "{cleared}");
    let (s, _) = cp
        .tenant_call(&key, Method::DELETE, &format!("{requests}/{fourth}"), None)
        .await;
    assert_eq!(s, 404, "a cleared request is no longer pending");
    let (_, page) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("{requests}?state=cleared&limit=1"),
            None,
        )
        .await;
    assert_eq!(page["items"][0]["title"], "Fourth", "{page}");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("{requests}?state=cleared&limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(rest["items"][0]["title"], "Third", "{rest}");
    assert!(rest["next_cursor"].is_null(), "{rest}");
    // Every decision is counted by its outcome.
    let text = onda_shared::http::get(&format!("{}/metrics", cp.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for (outcome, n) in [
        ("accepted", 3),
        ("track_gap", 1),
        ("artist_gap", 1),
        ("per_ip", 1),
    ] {
        let line = format!("onda_song_requests_total{{outcome=\"{outcome}\"}} {n}");
        assert!(text.contains(&line), "{line} missing");
    }
    // A cleared request leaves the gap free; of listeners asking for it at once, one gets it.
    let path = ask(&ids["Third"]);
    let at_once =
        futures_util::future::join_all((0..20).map(|_| public(cp, Method::POST, &path))).await;
    let codes: Vec<u16> = at_once.iter().map(|(s, _, _)| *s).collect();
    let taken = codes.iter().filter(|&&c| c == 200).count();
    assert_eq!(taken, 1, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 200 || c == 409), "{at_once:?}");
    // Turning requests off clears what waits.
    let off = json!({"requests": {"enabled": false}});
    assert_eq!(
        cp.tenant_call(&key, Method::PATCH, &station_path, Some(off))
            .await
            .0,
        200
    );
    let (_, pending) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("{requests}?state=pending"),
            None,
        )
        .await;
    assert_eq!(pending["items"], json!([]), "{pending}");
    assert_eq!(public(cp, Method::POST, &ask(&ids["Third"])).await.0, 403);
    // The history API names the request a play was for.
    let (_, history) = cp
        .tenant_call(
            &key,
            Method::GET,
            &format!("/v1/stations/{sid}/history"),
            None,
        )
        .await;
    let requested: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|h| h["request_id"].is_string())
        .filter_map(|h| h["title"].as_str())
        .collect();
    assert!(
        !requested.is_empty() && requested.iter().all(|t| *t == "First"),
        "{history}"
    );
}

async fn stations_without_requests_say_why(b: Backend) {
    let Some(fx) = ClusterFixture::start_on(ClusterSpec {
        backend: b,
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let cp = &fx.cp;
    // A tenant on the Basic plan, which has no song requests.
    let (s, tenant) = cp
        .call(
            Method::POST,
            "/v1/tenants",
            Some(json!({"name": "Basic Radio", "email": "b@example.com", "plan_id": "plan_basic"})),
        )
        .await;
    assert_eq!(s, 201, "{tenant}");
    let tid = tenant["id"].as_str().expect("id");
    let (_, k) = cp
        .call(
            Method::POST,
            &format!("/v1/tenants/{tid}/api-keys"),
            Some(json!({"name": "k"})),
        )
        .await;
    let key = k["secret"].as_str().expect("secret");
    let body = json!({"name": "Small FM",
        "mounts": [{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]});
    let (s, station) = cp
        .tenant_call(key, Method::POST, "/v1/stations", Some(body))
        .await;
    assert_eq!(s, 201, "{station}");
    let (sid, slug) = (
        station["id"].as_str().expect("id"),
        station["slug"].as_str().expect("slug"),
    );
    assert_eq!(station["requests"]["enabled"], false, "{station}");
    let (s, refused) = cp
        .tenant_call(
            key,
            Method::PATCH,
            &format!("/v1/stations/{sid}"),
            Some(json!({"requests": {"enabled": true}})),
        )
        .await;
    assert_eq!(s, 403, "{refused}");
    assert_eq!(refused["limit"], "features.requests", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("plan feature requests"),
        "{refused}"
    );
    // Listeners are told too, by slug and by id; an unknown station is a 404.
    for station in [slug, sid] {
        let (s, _, why) =
            public(cp, Method::GET, &format!("/api/station/{station}/requests")).await;
        assert_eq!(s, 403, "{why}");
        assert!(
            why["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("plan feature requests"),
            "{why}"
        );
        let (s, _, why) = public(
            cp,
            Method::POST,
            &format!("/api/station/{station}/request/mf_x"),
        )
        .await;
        assert_eq!(s, 403, "{why}");
    }
    let (s, _, _) = public(cp, Method::GET, "/api/station/no-such-station/requests").await;
    assert_eq!(s, 404);
    // Web players on other sites may post requests (CORS preflight).
    let pre = cp
        .http
        .request(
            Method::OPTIONS,
            format!("{}/api/station/{slug}/request/mf_x", cp.api),
        )
        .header("origin", "https://radio.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    let allowed = pre
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(allowed.contains("POST"), "{allowed}");
    // The Standard plan has the feature.
    let (_, plans) = cp.call(Method::GET, "/v1/plans", None).await;
    let standard = plans["items"]
        .as_array()
        .expect("plans")
        .iter()
        .find(|p| p["id"] == "plan_standard")
        .cloned()
        .expect("standard");
    assert_eq!(standard["features"]["requests"], true, "{standard}");
}
