//! 1-to-1 calls over the gateway with the official `socket.io-client`, on SQLite and
//! PostgreSQL: a fan calls a creator who answers on one of two devices, signals reach only the
//! other party, the fan pays each started minute (the creator earns it less the tenant's fee)
//! and the record says so; reject, cancel, busy and missed end with their reason and charge
//! nothing; a fan with one minute of credit is warned and cut at the boundary; a party gone
//! 15 s ends the call and one back sooner keeps it; bad input gets error acks.

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::on_both_backends;
use onda_tests::realtime::Sio;
use onda_tests::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_fan_calls_a_creator_who_answers_and_pays_each_started_minute,
    reject_cancel_busy_and_missed_end_with_their_reason_and_charge_nothing,
    one_minute_of_credit_is_warned_and_ends_at_the_boundary,
    a_party_gone_fifteen_seconds_ends_the_call_and_one_back_sooner_keeps_it,
    bad_calls_and_signals_get_error_acks,
    a_control_plane_killed_mid_call_bills_each_second_once,
    a_creators_page_says_what_a_call_takes,
);

/// A tenant whose creator `star` takes calls at `price` a minute (by `billing`) and whose fan
/// `fan` holds `credit`: (API key, fan's token, star's token).
async fn setup(
    cp: &TestControlPlane,
    (price, billing): (i64, &str),
    credit: i64,
) -> (String, String, String) {
    let (_, key) = cp.tenant_with_key("Calls", "plan_premium").await;
    cp.call(
        Method::PUT,
        "/v1/users/star",
        Some(&key),
        Some(
            json!({"display_name": "Star", "creator": true, "available_for_calls": true,
                    "call_price_per_minute": price, "call_billing": billing}),
        ),
    )
    .await
    .expect(201);
    let star = token(cp, &key, "star").await;
    let fan = cp.user_with_token(&key, "fan", "Fan").await;
    if credit > 0 {
        credit_wallet(cp, &key, "fan", credit).await;
    }
    (key, fan, star)
}

async fn token(cp: &TestControlPlane, key: &str, user: &str) -> String {
    cp.post(&format!("/v1/users/{user}/tokens"), key, json!({}))
        .await
        .expect(201)
        .body["token"]
        .as_str()
        .expect("token")
        .to_string()
}

async fn credit_wallet(cp: &TestControlPlane, key: &str, user: &str, amount: i64) {
    let r = cp
        .http
        .post(format!("{}/v1/users/{user}/wallet/credits", cp.url))
        .bearer_auth(key)
        .header("idempotency-key", format!("credit-{user}-{amount}"))
        .json(&json!({"amount": amount, "reference": "psp"}))
        .send()
        .await
        .expect("credit");
    assert_eq!(r.status().as_u16(), 201);
}

async fn wallet(cp: &TestControlPlane, key: &str, user: &str) -> Value {
    cp.get(&format!("/v1/users/{user}/wallet"), key)
        .await
        .expect(200)
        .body
}

fn assert_error(ack: &Value, code: &str) {
    assert_eq!(ack["error"]["code"], code, "{ack}");
    let message = ack["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(' '), "a sentence: {ack}");
}

/// The next `call-state` of call `id` with `state` that `client` receives, skipping other
/// calls' and earlier states.
async fn state(sio: &mut Sio, (client, id): (&str, &str), want: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let got = sio
            .event_within(client, "call-state", left)
            .await
            .unwrap_or_else(|| panic!("{client} saw no call-state {want} within {within:?}"));
        if got["callId"] == id && got["state"] == want {
            return got;
        }
    }
}

/// `initiate-call` from `fan` with `payload` is refused with `code`.
async fn refused(sio: &mut Sio, payload: Value, code: &str) {
    let ack = sio.emit("fan", "initiate-call", payload).await;
    assert_error(&ack, code);
}

/// A driver with `fan` and `star` connected, by their tokens.
async fn fan_and_star(url: &str, (fan, star): (&str, &str)) -> Sio {
    let mut sio = Sio::start(url).await;
    sio.connect("fan", fan).await.expect("fan connects");
    sio.connect("star", star).await.expect("star connects");
    sio
}

/// Rings `star` from `fan`, and `star` answers: the call's id.
async fn answered(sio: &mut Sio) -> String {
    let id = ring(sio).await;
    let ack = sio.emit("star", "accept-call", json!({"callId": id})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    id
}

/// Rings `star` from `fan`: the call's id.
async fn ring(sio: &mut Sio) -> String {
    let ack = sio
        .emit("fan", "initiate-call", json!({"receiverId": "star"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack["iceServers"].is_array(), "{ack}");
    let id = ack["callId"].as_str().expect("callId").to_string();
    let incoming = sio.event("star", "incoming-call").await;
    assert_eq!(incoming["callId"], id.as_str());
    assert_eq!(incoming["callerId"], "fan");
    assert_eq!(incoming["callerName"], "Fan");
    id
}

async fn a_fan_calls_a_creator_who_answers_and_pays_each_started_minute(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = setup(&cp, (120, "minute"), 1000).await;
    let mut sio = fan_and_star(&cp.url, (&fan, &star)).await;
    sio.connect("star-tablet", &star)
        .await
        .expect("star's tablet connects");

    let id = ring(&mut sio).await;
    // Every device of the creator rings, with the price fixed on the call.
    let tablet = sio.event("star-tablet", "incoming-call").await;
    assert_eq!(tablet["pricePerMinute"], 120);
    assert_eq!(
        state(&mut sio, ("fan", &id), "ringing", Duration::from_secs(5)).await["callId"],
        id.as_str()
    );
    // The creator's devices got the "incoming call" notification too.
    let note = sio.event("star-tablet", "notification").await;
    assert_eq!(note["notification"]["type"], "call.incoming", "{note}");

    // Signals reach only the other party, with who sent them.
    let offer = json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    let ack = sio
        .emit("fan", "signal", json!({"callId": id, "signal": offer}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = sio.event("star", "signal").await;
    assert_eq!(
        (got["callId"].clone(), got["from"].clone()),
        (json!(id), json!("fan"))
    );
    assert_eq!(got["signal"], offer);

    let ack = sio.emit("star", "accept-call", json!({"callId": id})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["call"]["state"], "in_progress");
    for client in ["fan", "star-tablet"] {
        state(
            &mut sio,
            (client, &id),
            "in_progress",
            Duration::from_secs(5),
        )
        .await;
    }
    // The first minute is charged at acceptance: 120 from the wallet, 96 to the creator
    // (the tenant's 20 % split off).
    let billed = sio.event("fan", "call-billed").await;
    assert_eq!(
        (billed["unitsCharged"].clone(), billed["amount"].clone()),
        (json!(1), json!(120))
    );
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], 880);
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], 96);
    // Accepting again (a retry) changes nothing.
    let again = sio.emit("star", "accept-call", json!({"callId": id})).await;
    assert_eq!(again["call"]["unitsCharged"], 1, "{again}");
    let answer = json!({"type": "answer", "sdp": "v=0\r\n"});
    sio.emit("star", "signal", json!({"callId": id, "signal": answer}))
        .await;
    assert_eq!(sio.event("fan", "signal").await["signal"], answer);
    let ack = sio
        .emit("fan", "call-connected", json!({"callId": id}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    let ack = sio.emit("fan", "end-call", json!({"callId": id})).await;
    assert_eq!(ack["call"]["state"], "ended", "{ack}");
    assert_eq!(ack["call"]["reason"], "hung_up");
    let ended = state(&mut sio, ("star", &id), "ended", Duration::from_secs(5)).await;
    assert_eq!(ended["reason"], "hung_up");
    // Each party gets "call ended" with its cost.
    let note = &sio.event("fan", "notification").await["notification"];
    assert_eq!(note["type"], "call.ended", "{note}");
    assert_eq!(note["data"]["amount"], 120);

    // The record, for the tenant and for each party.
    let calls = cp.get("/v1/calls", &key).await.expect(200).body;
    let call = &calls["items"][0];
    assert_eq!(call["id"], id.as_str());
    assert_eq!(
        (
            call["unitsCharged"].clone(),
            call["amount"].clone(),
            call["reason"].clone()
        ),
        (json!(1), json!(120), json!("hung_up"))
    );
    assert!(
        call["startedAt"].is_string() && call["endedAt"].is_string(),
        "{call}"
    );
    assert!(call["setupMs"].as_i64().is_some_and(|ms| ms >= 0), "{call}");
    for user_token in [&fan, &star] {
        let mine = cp.get("/v1/me/calls", user_token).await.expect(200).body;
        assert_eq!(mine["items"][0]["id"], id.as_str());
    }
    // The ledger holds one call transaction, balanced, and the books check.
    let check = cp.get("/v1/ledger/check", &key).await.expect(200).body;
    assert_eq!(check["ok"], true, "{check}");
    // The minute charged is on the tenant's usage, which its invoice prices.
    let usage = cp.get("/v1/realtime/usage", &key).await.expect(200).body;
    assert_eq!(usage["total"]["call_ms"], 60_000, "{usage}");
    assert_eq!(usage["total"]["transactions"], 1, "{usage}");
    cp.stop().await;
}

async fn reject_cancel_busy_and_missed_end_with_their_reason_and_charge_nothing(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = setup(&cp, (100, "minute"), 500).await;
    let other = cp.user_with_token(&key, "other", "Other").await;
    credit_wallet(&cp, &key, "other", 500).await;
    let mut sio = fan_and_star(&cp.url, (&fan, &star)).await;
    sio.connect("other", &other).await.expect("other connects");

    // Rejected by the creator.
    let id = ring(&mut sio).await;
    let ack = sio.emit("star", "reject-call", json!({"callId": id})).await;
    assert_eq!(ack["call"]["reason"], "rejected", "{ack}");
    assert_eq!(
        state(&mut sio, ("fan", &id), "ended", Duration::from_secs(5)).await["reason"],
        "rejected"
    );

    // Cancelled by the caller before an answer.
    let id = ring(&mut sio).await;
    let ack = sio.emit("fan", "end-call", json!({"callId": id})).await;
    assert_eq!(ack["call"]["reason"], "cancelled", "{ack}");
    assert_eq!(
        state(&mut sio, ("star", &id), "ended", Duration::from_secs(5)).await["reason"],
        "cancelled"
    );

    // Busy: the creator is being called by the fan when another fan calls.
    let id = ring(&mut sio).await;
    let ack = sio
        .emit("other", "initiate-call", json!({"receiverId": "star"}))
        .await;
    assert_error(&ack, "busy");
    let busy_id = ack["callId"]
        .as_str()
        .expect("the busy call's id")
        .to_string();
    assert_eq!(
        state(
            &mut sio,
            ("other", &busy_id),
            "ended",
            Duration::from_secs(5)
        )
        .await["reason"],
        "busy"
    );

    // Missed: nobody answers within 30 s.
    let missed = state(&mut sio, ("fan", &id), "ended", Duration::from_secs(40)).await;
    assert_eq!(
        (missed["callId"].clone(), missed["reason"].clone()),
        (json!(id), json!("missed"))
    );
    // Each ring left an "incoming call" notification; the miss leaves "missed call".
    let mut kinds = Vec::new();
    while let Some(note) = sio
        .event_within("star", "notification", Duration::from_secs(5))
        .await
    {
        let kind = &note["notification"]["type"];
        kinds.push(kind.as_str().unwrap_or_default().to_string());
        if kind == "call.missed" {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "call.incoming",
            "call.incoming",
            "call.incoming",
            "call.missed"
        ]
    );

    let calls = cp.list_all("/v1/calls", &key).await;
    let reasons: Vec<&str> = calls
        .iter()
        .map(|c| c["reason"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        reasons,
        // The busy call was made while the missed one rang.
        ["busy", "missed", "cancelled", "rejected"],
        "newest first"
    );
    assert!(calls.iter().any(|c| c["id"] == busy_id.as_str()));
    assert!(
        calls
            .iter()
            .all(|c| c["amount"] == 0 && c["unitsCharged"] == 0)
    );
    assert_eq!(
        wallet(&cp, &key, "fan").await["balance"],
        500,
        "nothing charged"
    );
    assert_eq!(wallet(&cp, &key, "other").await["balance"], 500);
    cp.stop().await;
}

async fn one_minute_of_credit_is_warned_and_ends_at_the_boundary(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    // 600 a minute by the second (10 a second), and exactly one minute in the wallet.
    let (key, fan, star) = setup(&cp, (600, "second"), 600).await;
    let mut sio = fan_and_star(&cp.url, (&fan, &star)).await;
    let id = answered(&mut sio).await;
    let started = std::time::Instant::now();
    // The balance pays 60 s: both are warned at once, with the end time.
    for client in ["fan", "star"] {
        let w = sio.event(client, "call-warning").await;
        assert_eq!(w["callId"], id.as_str());
        assert!(
            w["secondsLeft"]
                .as_i64()
                .is_some_and(|s| (55..=60).contains(&s)),
            "{w}"
        );
    }
    let ended = state(&mut sio, ("fan", &id), "ended", Duration::from_secs(75)).await;
    assert_eq!(ended["reason"], "balance_exhausted", "{ended}");
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(59)..Duration::from_secs(63)).contains(&took),
        "ended at the boundary, {took:?} after the answer"
    );
    let call = &ended["call"];
    assert_eq!(
        (call["unitsCharged"].clone(), call["amount"].clone()),
        (json!(60), json!(600))
    );
    assert_eq!(call["durationSecs"], 60, "{call}");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], 0);
    // 600 less the 20 % fee, as the sum of 60 one-second payments (each fee rounded down).
    let earned = wallet(&cp, &key, "star").await["earnings"]
        .as_i64()
        .expect("earnings");
    assert_eq!(earned, 60 * (10 - 2));
    cp.stop().await;
}

async fn a_party_gone_fifteen_seconds_ends_the_call_and_one_back_sooner_keeps_it(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = setup(&cp, (60, "minute"), 1000).await;
    let mut sio = fan_and_star(&cp.url, (&fan, &star)).await;
    let id = answered(&mut sio).await;
    for client in ["fan", "star"] {
        state(
            &mut sio,
            (client, &id),
            "in_progress",
            Duration::from_secs(5),
        )
        .await;
    }

    // The creator's connection drops and comes back within the grace: the call goes on, and
    // the new socket is told its state.
    sio.drop_connection("star").await;
    // The hiccup lasts 3 s (a time of absence, not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(3)).await;
    sio.reconnect("star").await.expect("star reconnects");
    let back = state(
        &mut sio,
        ("star", &id),
        "in_progress",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(back["callId"], id.as_str());
    assert!(
        sio.event_within("fan", "call-state", Duration::from_secs(17))
            .await
            .is_none(),
        "the call went on past the grace"
    );

    // Gone for good: ended as connection lost 15 s after the drop.
    sio.close("star").await;
    let dropped = std::time::Instant::now();
    let ended = state(&mut sio, ("fan", &id), "ended", Duration::from_secs(25)).await;
    assert_eq!(ended["reason"], "connection_lost");
    assert!(
        dropped.elapsed() >= Duration::from_secs(14),
        "{:?}",
        dropped.elapsed()
    );
    assert_eq!(
        wallet(&cp, &key, "fan").await["balance"],
        940,
        "one started minute"
    );
    cp.stop().await;
}

async fn bad_calls_and_signals_get_error_acks(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = setup(&cp, (100, "minute"), 50).await;
    cp.call(
        Method::PUT,
        "/v1/users/plain",
        Some(&key),
        Some(json!({"display_name": "Plain"})),
    )
    .await
    .expect(201);
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");

    for (payload, code) in [
        (json!({"receiverId": "fan"}), "invalid_payload"),
        (json!({"receiverId": "plain"}), "not_a_creator"),
        (json!({"receiverId": "nobody"}), "not_found"),
        (json!({"to": "star"}), "invalid_payload"),
    ] {
        refused(&mut sio, payload, code).await;
    }
    // The creator is not online.
    refused(&mut sio, json!({"receiverId": "star"}), "offline").await;
    sio.connect("star", &star).await.expect("star connects");
    // Online, but the fan holds less than a minute.
    refused(
        &mut sio,
        json!({"receiverId": "star"}),
        "insufficient_funds",
    )
    .await;
    credit_wallet(&cp, &key, "fan", 1000).await;
    // Not available, then available but blocked.
    cp.patch("/v1/me", &star, json!({"available_for_calls": false}))
        .await
        .expect(200);
    refused(&mut sio, json!({"receiverId": "star"}), "unavailable").await;
    let me = cp
        .patch("/v1/me", &star, json!({"available_for_calls": true}))
        .await
        .expect(200);
    assert_eq!(
        me.body["call_price_per_minute"], 100,
        "a PATCH keeps what it leaves out"
    );
    let ack = sio
        .emit("star", "block-user", json!({"userId": "fan"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    refused(&mut sio, json!({"receiverId": "star"}), "blocked").await;
    sio.emit("star", "unblock-user", json!({"userId": "fan"}))
        .await;
    // Subscribers only: the fan is not one.
    cp.patch("/v1/me", &star, json!({"calls_subscribers_only": true}))
        .await
        .expect(200);
    refused(
        &mut sio,
        json!({"receiverId": "star"}),
        "subscription_required",
    )
    .await;
    cp.patch("/v1/me", &star, json!({"calls_subscribers_only": false}))
        .await
        .expect(200);
    // A fan cannot set a creator's call settings.
    cp.patch("/v1/me", &fan, json!({"call_price_per_minute": 5}))
        .await
        .problem(422);

    // Signals: to a call one is not part of, too large, to an ended call.
    let id = ring(&mut sio).await;
    let outsider = cp.user_with_token(&key, "outsider", "Outsider").await;
    sio.connect("outsider", &outsider)
        .await
        .expect("outsider connects");
    let ack = sio
        .emit(
            "outsider",
            "signal",
            json!({"callId": id, "signal": {"type": "offer"}}),
        )
        .await;
    assert_error(&ack, "not_found");
    let ack = sio
        .emit("outsider", "end-call", json!({"callId": id}))
        .await;
    assert_error(&ack, "not_found");
    let huge = "a".repeat(20_000);
    let ack = sio
        .emit(
            "fan",
            "signal",
            json!({"callId": id, "signal": {"type": "offer", "sdp": huge}}),
        )
        .await;
    assert_error(&ack, "too_large");
    let ack = sio.emit("fan", "accept-call", json!({"callId": id})).await;
    assert_error(&ack, "invalid_state");
    sio.emit("fan", "end-call", json!({"callId": id})).await;
    let ack = sio
        .emit(
            "fan",
            "signal",
            json!({"callId": id, "signal": {"type": "offer"}}),
        )
        .await;
    assert_error(&ack, "invalid_state");

    // A flood of calls: refused past the burst, with when to try again; the connection stays.
    let mut limited = None;
    for _ in 0..8 {
        let ack = sio
            .emit("fan", "initiate-call", json!({"receiverId": "star"}))
            .await;
        if ack["error"]["code"] == "rate_limited" {
            limited = Some(ack);
            break;
        }
        if let Some(id) = ack["callId"].as_str() {
            sio.emit("fan", "end-call", json!({"callId": id})).await;
        }
    }
    let limited = limited.expect("a flood of initiate-call is limited");
    assert!(
        limited["error"]["retryAfterMs"].as_u64().is_some(),
        "{limited}"
    );
    let ack = sio
        .emit("fan", "mark-all-notifications-read", json!({}))
        .await;
    assert!(ack["error"].is_null(), "the connection still works: {ack}");
    cp.stop().await;
}

/// The call's record as the tenant lists it.
async fn record(fx: &ClusterFixture, key: &str, id: &str) -> Value {
    let (status, page) = fx.cp.tenant_call(key, Method::GET, "/v1/calls", None).await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|c| c["id"] == id).cloned())
        .unwrap_or_else(|| panic!("call {id} is listed: {page}"))
}

/// SIGKILL of the control plane (a real `onda` process) during a call billed by the second:
/// the restarted one goes on billing it from the database, and when it is hung up every second
/// it lasted is paid exactly once.
async fn a_control_plane_killed_mid_call_bills_each_second_once(b: Backend) {
    let Some(mut fx) = ClusterFixture::start_on(ClusterSpec {
        backend: b,
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let key = fx.cp.tenant_key("Killed calls").await;
    let put = |id: &str, body: Value| {
        let (cp, key, path) = (&fx.cp, key.clone(), format!("/v1/users/{id}"));
        async move { cp.tenant_call(&key, Method::PUT, &path, Some(body)).await }
    };
    // 60 a minute by the second: each second costs 1.
    let (s, _) = put(
        "star",
        json!({"display_name": "Star", "creator": true, "available_for_calls": true,
               "call_price_per_minute": 60, "call_billing": "second"}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = put("fan", json!({"display_name": "Fan"})).await;
    assert_eq!(s, 201);
    let mut tokens = Vec::new();
    for user in ["fan", "star"] {
        let (s, t) = fx
            .cp
            .tenant_call(
                &key,
                Method::POST,
                &format!("/v1/users/{user}/tokens"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        tokens.push(t["token"].as_str().expect("token").to_string());
    }
    fx.cp.credit(&key, "fan", 1000).await;

    let mut sio = Sio::start(&fx.cp.api).await;
    sio.connect("fan", &tokens[0]).await.expect("fan connects");
    sio.connect("star", &tokens[1])
        .await
        .expect("star connects");
    let id = answered(&mut sio).await;
    let units = |c: &Value| c["unitsCharged"].as_i64().unwrap_or(0);
    let fx_ref = &fx;
    onda_tests::wait_for("3 seconds billed", Duration::from_secs(10), || {
        let (key, id) = (key.clone(), id.clone());
        async move { (units(&record(fx_ref, &key, &id).await) >= 3).then_some(()) }
    })
    .await;

    fx.kill_cp();
    let killed = units(&record_after_restart(&mut fx, &key, &id).await);
    // Both come back within the 15 s grace; the restarted process bills on.
    sio.reconnect("fan").await.expect("fan reconnects");
    sio.reconnect("star").await.expect("star reconnects");
    let fx_ref = &fx;
    onda_tests::wait_for("billing goes on", Duration::from_secs(10), || {
        let (key, id) = (key.clone(), id.clone());
        async move { (units(&record(fx_ref, &key, &id).await) >= killed + 2).then_some(()) }
    })
    .await;
    let ack = sio.emit("fan", "end-call", json!({"callId": id})).await;
    assert_eq!(ack["call"]["reason"], "hung_up", "{ack}");
    let call = record(&fx, &key, &id).await;
    let (charged, amount) = (units(&call), call["amount"].as_i64().unwrap_or(-1));
    assert_eq!(amount, charged, "1 a second, each charged once: {call}");
    // Every second it was in progress is paid: the seconds it lasted, rounded up.
    assert_eq!(
        charged,
        call["durationSecs"].as_i64().unwrap_or(-1),
        "{call}"
    );
    let (_, wallet) = fx
        .cp
        .tenant_call(&key, Method::GET, "/v1/users/fan/wallet", None)
        .await;
    assert_eq!(wallet["balance"], json!(1000 - amount), "{wallet}");
    let (_, check) = fx
        .cp
        .tenant_call(&key, Method::GET, "/v1/ledger/check", None)
        .await;
    assert_eq!(check["ok"], true, "{check}");
}

/// Restarts the killed control plane and reads the call's record from the new one.
async fn record_after_restart(fx: &mut ClusterFixture, key: &str, id: &str) -> Value {
    fx.restart_cp().await;
    record(fx, key, id).await
}

async fn page(cp: &TestControlPlane, token: &str) -> Value {
    cp.get("/v1/me/creators/star", token).await.expect(200).body
}

/// `GET /v1/me/creators/{id}` (the web app's creator page) tells a fan what `initiate-call`
/// will check: the price and whether the creator takes calls, is online, has a block between
/// them, or takes subscribers only and whether the fan is one; a user who is not a creator is a
/// 404, and the route is for user tokens.
async fn a_creators_page_says_what_a_call_takes(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = setup(&cp, (120, "minute"), 0).await;
    let p = page(&cp, &fan).await;
    assert_eq!(p["display_name"], "Star", "{p}");
    assert_eq!(p["currency"], "USD", "{p}");
    assert_eq!(
        p["calls"],
        json!({"available": true, "price_per_minute": 120, "billing": "minute",
               "subscribers_only": false}),
        "{p}"
    );
    assert_eq!(
        (&p["online"], &p["subscribed"], &p["blocked"]),
        (&json!(false), &json!(false), &json!(false)),
        "{p}"
    );
    assert!(
        p.get("metadata").is_none() && p.get("region").is_none(),
        "{p}"
    );

    // Online once connected to the gateway; a block either way shows.
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("star", &star).await.expect("star connects");
    wait_for("star online", Duration::from_secs(5), || async {
        (page(&cp, &fan).await["online"] == true).then_some(())
    })
    .await;
    let ack = sio
        .emit("star", "block-user", json!({"userId": "fan"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(page(&cp, &fan).await["blocked"], true);
    sio.emit("star", "unblock-user", json!({"userId": "fan"}))
        .await;
    assert_eq!(page(&cp, &fan).await["blocked"], false);

    // The creator's own settings: off, then subscribers only, which the fan becomes.
    cp.patch("/v1/me", &star, json!({"available_for_calls": false}))
        .await
        .expect(200);
    assert_eq!(page(&cp, &fan).await["calls"]["available"], false);
    cp.patch(
        "/v1/me",
        &star,
        json!({"available_for_calls": true, "calls_subscribers_only": true}),
    )
    .await
    .expect(200);
    let p = page(&cp, &fan).await;
    assert_eq!(
        (&p["calls"]["subscribers_only"], &p["subscribed"]),
        (&json!(true), &json!(false)),
        "{p}"
    );
    assert_eq!(
        page(&cp, &star).await["subscribed"],
        true,
        "the creator is in"
    );
    let ends = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    cp.call(
        Method::PUT,
        "/v1/creators/star/subscribers/fan",
        Some(&key),
        Some(json!({"ends_at": ends})),
    )
    .await
    .expect(201);
    assert_eq!(page(&cp, &fan).await["subscribed"], true);

    // Not a creator, nobody, a bad id, another principal.
    for (path, status) in [
        ("/v1/me/creators/fan", 404),
        ("/v1/me/creators/nobody", 404),
        ("/v1/me/creators/bad%20id", 422),
    ] {
        let r = cp.get(path, &fan).await.expect(status);
        assert!(
            r.body["detail"].as_str().is_some_and(|d| d.contains(' ')),
            "{}",
            r.text
        );
    }
    cp.get("/v1/me/creators/star", &key).await.expect(403);
    cp.stop().await;
}
