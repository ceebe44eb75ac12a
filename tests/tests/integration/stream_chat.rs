//! Live streams' chats through the real server and `socket.io-client`, on SQLite and
//! PostgreSQL: a chat round trip between a fan and the creator with the last messages on join,
//! a tip shown in the chat to everyone (once, also when retried), a message deleted for
//! everyone and kept marked in the saved chat; the creator's and moderators' moderation (a
//! timeout that holds until it ends, a ban that keeps the user out, slow mode with moderators
//! exempt, blocked words, a subscribers-only chat opened by subscribing, the burst limit's
//! mute); and who may join at all (the stream's access, the plan's `live_chat`, another
//! tenant's stream), bad payloads refused with a sentence.

use super::monetization::{send, tenant};
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use onda_tests::realtime::Sio;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_fan_and_the_creator_chat_tip_and_delete,
    moderators_hold_viewers_back,
    only_viewers_of_the_stream_join_its_chat,
);

/// A stream of the creator `star` with `access` (public unless given).
async fn stream(cp: &TestControlPlane, key: &str, body: Value) -> String {
    cp.post("/v1/streams", key, body).await.expect(201).body["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Whether `client` hears `content` said in a chat within half a second (earlier lines it
/// heard are skipped).
async fn hears(sio: &mut Sio, client: &str, content: &str) -> bool {
    while let Some(m) = sio
        .event_within(client, "chat-message", Duration::from_millis(500))
        .await
    {
        if m["message"]["content"] == json!(content) {
            return true;
        }
    }
    false
}

#[track_caller]
fn refused(ack: &Value, code: &str) -> String {
    assert_eq!(ack["error"]["code"], json!(code), "{ack}");
    ack["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[track_caller]
fn ok(ack: &Value) -> &Value {
    assert_eq!(ack["ok"], json!(true), "{ack}");
    ack
}

async fn say(sio: &mut Sio, client: &str, stream: &str, content: &str) -> Value {
    sio.emit(
        client,
        "chat-message",
        json!({ "streamId": stream, "content": content }),
    )
    .await
}

async fn a_fan_and_the_creator_chat_tip_and_delete(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 5000).await;
    let id = stream(
        &cp,
        &key,
        json!({"name": "Late Show", "access": "public", "creator_id": "star"}),
    )
    .await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    sio.connect("star", &star).await.expect("star connects");
    let joined = sio
        .emit("star", "join-stream", json!({ "streamId": id }))
        .await;
    assert_eq!(ok(&joined)["role"], json!("creator"), "{joined}");
    assert_eq!(joined["messages"], json!([]));
    assert_eq!(joined["stream"]["creatorId"], json!("star"));
    assert_eq!(joined["stream"]["live"], json!(false));
    let joined = sio
        .emit("fan", "join-stream", json!({ "streamId": id }))
        .await;
    assert_eq!(ok(&joined)["role"], json!("viewer"));
    assert!(joined["settings"].get("blockedWords").is_none(), "{joined}");

    let said = say(&mut sio, "fan", &id, "Hi from the front row 🎉").await;
    let line = ok(&said)["message"].clone();
    assert_eq!(
        (&line["userId"], &line["displayName"], &line["kind"]),
        (&json!("fan"), &json!("Fan One"), &json!("message"))
    );
    let heard = sio.event("star", "chat-message").await;
    assert_eq!(heard["streamId"], json!(id));
    assert_eq!(heard["message"], line);
    let answer = say(&mut sio, "star", &id, "Welcome!").await;
    ok(&answer);
    assert_eq!(
        sio.event("fan", "chat-message").await["message"]["content"],
        json!("Welcome!")
    );

    // A tip in the chat: both see it once, a retry with the same key shows nothing new.
    let tip = json!({"creatorId": "star", "amount": 300, "message": "for the encore",
                     "idempotencyKey": "tip-chat-1", "streamId": id});
    let tipped = sio.emit("fan", "send-tip", tip.clone()).await;
    assert_eq!(ok(&tipped)["tip"]["amount"], json!(300));
    for who in ["fan", "star"] {
        let m = sio.event(who, "chat-message").await["message"].clone();
        assert_eq!(
            (&m["kind"], &m["amount"], &m["content"]),
            (&json!("tip"), &json!(300), &json!("for the encore")),
            "{who}"
        );
    }
    let again = sio.emit("fan", "send-tip", tip).await;
    assert_eq!(ok(&again)["tip"]["id"], tipped["tip"]["id"]);
    // Over REST too, once per key.
    let body =
        json!({"creatorId": "star", "amount": 200, "message": "from the app", "streamId": id});
    for _ in 0..2 {
        let r = send(
            &cp,
            (Method::POST, "/v1/me/tips"),
            &fan,
            Some("tip-chat-rest"),
            Some(body.clone()),
        )
        .await;
        assert!(r.status == 201, "{}", r.text);
    }
    for who in ["fan", "star"] {
        let m = sio.event(who, "chat-message").await["message"].clone();
        assert_eq!(
            (&m["amount"], &m["content"]),
            (&json!(200), &json!("from the app")),
            "{who}"
        );
    }
    // The tips' earnings reach the creator at once.
    assert_eq!(
        sio.event("star", "earnings").await["earnings"],
        tipped["tip"]["net"]
    );
    assert!(
        sio.event("star", "earnings").await["earnings"].as_i64() > tipped["tip"]["net"].as_i64()
    );

    // The creator deletes the fan's message: gone for everyone, marked in the saved chat.
    let del = sio
        .emit(
            "star",
            "delete-chat-message",
            json!({ "streamId": id, "messageId": line["id"] }),
        )
        .await;
    ok(&del);
    let gone = sio.event("fan", "chat-message-deleted").await;
    assert_eq!(gone["messageId"], line["id"]);
    let again = sio
        .emit(
            "star",
            "delete-chat-message",
            json!({ "streamId": id, "messageId": line["id"] }),
        )
        .await;
    refused(&again, "not_found");
    // A viewer cannot delete someone else's message.
    let theirs = answer["message"]["id"].clone();
    let not_yours = sio
        .emit(
            "fan",
            "delete-chat-message",
            json!({ "streamId": id, "messageId": theirs }),
        )
        .await;
    refused(&not_yours, "forbidden");

    let saved = cp
        .get(&format!("/v1/streams/{id}/chat"), &key)
        .await
        .expect(200)
        .body;
    let items = saved["items"].as_array().expect("items");
    assert_eq!(items.len(), 4, "{saved}");
    assert_eq!(items[0]["deleted"], json!(true));
    assert_eq!(items[0]["content"], json!(""));
    assert_eq!(
        (&items[2]["kind"], &items[3]["kind"]),
        (&json!("tip"), &json!("tip"))
    );

    // Who joins later gets what was said, without the deleted line.
    sio.connect(
        "late",
        &cp.user_with_token(&key, "late", "Late Comer").await,
    )
    .await
    .expect("late connects");
    let joined = sio
        .emit("late", "join-stream", json!({ "streamId": id }))
        .await;
    let contents: Vec<&Value> = ok(&joined)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["content"])
        .collect();
    assert_eq!(
        contents,
        vec![
            &json!("Welcome!"),
            &json!("for the encore"),
            &json!("from the app")
        ]
    );
    // The chat's messages are the tenant's messages for billing (tips are not: they are
    // payments).
    let usage = cp.get("/v1/realtime/usage", &key).await.expect(200).body;
    assert_eq!(usage["total"]["messages"], json!(2), "{usage}");
    // The two tips are the tenant's payments for billing, once each (the retries were not).
    assert_eq!(usage["total"]["transactions"], json!(2), "{usage}");
    // After leaving, nothing more arrives and writing is refused.
    ok(&sio
        .emit("late", "leave-stream", json!({ "streamId": id }))
        .await);
    refused(&say(&mut sio, "late", &id, "hello?").await, "not_joined");
    ok(&say(&mut sio, "star", &id, "Thanks all").await);
    assert!(hears(&mut sio, "fan", "Thanks all").await);
    assert!(!hears(&mut sio, "late", "Thanks all").await);
    // Another tenant does not see this stream's chat.
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    cp.get(&format!("/v1/streams/{id}/chat"), &other)
        .await
        .problem(404);
}

async fn moderators_hold_viewers_back(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 5000).await;
    let helper = cp.user_with_token(&key, "helper", "Helper").await;
    let id = stream(
        &cp,
        &key,
        json!({"name": "Talk", "access": "public", "creator_id": "star"}),
    )
    .await;
    let named = send(
        &cp,
        (Method::PUT, "/v1/me/moderators/helper"),
        &star,
        None,
        None,
    )
    .await;
    assert_eq!(named.status, 204, "{}", named.text);
    let listed = cp.get("/v1/me/moderators", &star).await.expect(200).body;
    assert_eq!(listed["moderators"], json!(["helper"]));
    let mut sio = Sio::start(&cp.url).await;
    for (who, token) in [("fan", &fan), ("star", &star), ("helper", &helper)] {
        sio.connect(who, token).await.expect("connects");
        let joined = sio
            .emit(who, "join-stream", json!({ "streamId": id }))
            .await;
        ok(&joined);
    }

    // A timeout holds the fan back until it ends, and only then.
    let t = sio
        .emit(
            "helper",
            "timeout-user",
            json!({ "streamId": id, "userId": "fan", "seconds": 2 }),
        )
        .await;
    let until = ok(&t)["until"].as_str().expect("until").to_string();
    assert_eq!(
        sio.event("fan", "chat-user-timed-out").await["until"],
        json!(until)
    );
    let held = say(&mut sio, "fan", &id, "let me talk").await;
    assert!(refused(&held, "timed_out").contains("more seconds"));
    assert!(
        held["error"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms <= 2000)
    );
    let until = time::OffsetDateTime::parse(&until, &time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = say(&mut sio, "fan", &id, "back").await;
        if a["ok"] == json!(true) {
            assert!(
                time::OffsetDateTime::now_utc() >= until,
                "spoke before {until}"
            );
            break;
        }
        refused(&a, "timed_out");
        let wait = a["error"]["retryAfterMs"].as_u64().unwrap_or(100);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timeout never ended"
        );
        tokio::time::sleep(Duration::from_millis(wait.min(500))).await;
    }

    // Slow mode: the fan waits, the moderator does not; the room hears the settings.
    let s = sio
        .emit(
            "star",
            "chat-settings",
            json!({ "streamId": id, "slowModeSecs": 30, "blockedWords": ["Spoiler"] }),
        )
        .await;
    assert_eq!(ok(&s)["settings"]["blockedWords"], json!(["spoiler"]));
    let told = sio.event("fan", "chat-settings").await;
    assert_eq!(
        told["settings"],
        json!({"slowModeSecs": 30, "subscribersOnly": false})
    );
    let slow = say(&mut sio, "fan", &id, "again").await;
    assert!(refused(&slow, "slow_mode").contains("30 seconds"));
    ok(&say(&mut sio, "helper", &id, "one").await);
    ok(&say(&mut sio, "helper", &id, "two").await);
    let s = sio
        .emit(
            "star",
            "chat-settings",
            json!({ "streamId": id, "slowModeSecs": 0 }),
        )
        .await;
    ok(&s);
    refused(
        &say(&mut sio, "fan", &id, "a SPOILER, sorry").await,
        "blocked_word",
    );

    // The burst limit: three at once, then a mute with a notice.
    sio.connect(
        "chatty",
        &cp.user_with_token(&key, "chatty", "Chatty").await,
    )
    .await
    .expect("connects");
    ok(&sio
        .emit("chatty", "join-stream", json!({ "streamId": id }))
        .await);
    for i in 0..3 {
        ok(&say(&mut sio, "chatty", &id, &format!("spam {i}")).await);
    }
    let muted = say(&mut sio, "chatty", &id, "spam 3").await;
    assert!(refused(&muted, "rate_limited").contains("muted for 10 s"));

    // Subscribers only: the fan writes again once subscribed.
    let s = sio
        .emit(
            "helper",
            "chat-settings",
            json!({ "streamId": id, "subscribersOnly": true }),
        )
        .await;
    ok(&s);
    refused(
        &say(&mut sio, "fan", &id, "hello").await,
        "subscribers_only",
    );
    let p = send(
        &cp,
        (Method::PATCH, "/v1/me"),
        &star,
        None,
        Some(json!({"subscription_price": 500})),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text);
    let sub = send(
        &cp,
        (Method::POST, "/v1/me/subscriptions"),
        &fan,
        Some("sub-chat"),
        Some(json!({ "creatorId": "star" })),
    )
    .await;
    assert_eq!(sub.status, 201, "{}", sub.text);
    ok(&say(&mut sio, "fan", &id, "subscribed!").await);

    // A ban: the fan hears it, is out of the room, cannot write or join again until unbanned.
    let refuse_mod = sio
        .emit(
            "helper",
            "ban-user",
            json!({ "streamId": id, "userId": "star" }),
        )
        .await;
    refused(&refuse_mod, "forbidden");
    ok(&sio
        .emit(
            "helper",
            "ban-user",
            json!({ "streamId": id, "userId": "fan" }),
        )
        .await);
    assert_eq!(
        sio.event("fan", "chat-user-banned").await["userId"],
        json!("fan")
    );
    refused(&say(&mut sio, "fan", &id, "why").await, "banned");
    refused(
        &sio.emit("fan", "join-stream", json!({ "streamId": id }))
            .await,
        "banned",
    );
    ok(&say(&mut sio, "star", &id, "moving on").await);
    assert!(
        hears(&mut sio, "helper", "moving on").await,
        "the room hears the creator"
    );
    assert!(
        !hears(&mut sio, "fan", "moving on").await,
        "a banned user still hears the room"
    );
    refused(
        &sio.emit(
            "fan",
            "timeout-user",
            json!({ "streamId": id, "userId": "helper", "seconds": 5 }),
        )
        .await,
        "forbidden",
    );
    ok(&sio
        .emit(
            "star",
            "unban-user",
            json!({ "streamId": id, "userId": "fan" }),
        )
        .await);
    ok(&sio
        .emit("fan", "join-stream", json!({ "streamId": id }))
        .await);
    ok(&say(&mut sio, "fan", &id, "thanks").await);

    // Removing the moderator takes their powers.
    let removed = send(
        &cp,
        (Method::DELETE, "/v1/me/moderators/helper"),
        &star,
        None,
        None,
    )
    .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    refused(
        &sio.emit(
            "helper",
            "ban-user",
            json!({ "streamId": id, "userId": "fan" }),
        )
        .await,
        "forbidden",
    );
    let again = send(
        &cp,
        (Method::DELETE, "/v1/me/moderators/helper"),
        &star,
        None,
        None,
    )
    .await;
    assert_eq!(again.status, 404, "{}", again.text);
    // Only creators have moderators.
    let not_creator = send(
        &cp,
        (Method::PUT, "/v1/me/moderators/star"),
        &fan,
        None,
        None,
    )
    .await;
    assert_eq!(not_creator.status, 422, "{}", not_creator.text);
}

async fn only_viewers_of_the_stream_join_its_chat(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 5000).await;
    let p = send(
        &cp,
        (Method::PATCH, "/v1/me"),
        &star,
        None,
        Some(json!({"subscription_price": 900})),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text);
    let members = stream(
        &cp,
        &key,
        json!({"name": "Members", "access": "subscribers", "creator_id": "star"}),
    )
    .await;
    let nobody = stream(&cp, &key, json!({"name": "No creator", "access": "public"})).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("connects");
    sio.connect("star", &star).await.expect("connects");
    let no = sio
        .emit("fan", "join-stream", json!({ "streamId": members }))
        .await;
    assert!(refused(&no, "forbidden").contains("subscribe for 900"));
    ok(&sio
        .emit("star", "join-stream", json!({ "streamId": members }))
        .await);
    refused(
        &say(&mut sio, "fan", &members, "let me in").await,
        "not_joined",
    );
    let no_creator = sio
        .emit("fan", "join-stream", json!({ "streamId": nobody }))
        .await;
    assert!(refused(&no_creator, "not_found").contains("no creator"));

    // Bad payloads are refused with a sentence, never a disconnect.
    for (event, bad) in [
        ("join-stream", json!({})),
        ("join-stream", json!({ "streamId": 7 })),
        ("chat-message", json!({ "streamId": members })),
        (
            "chat-message",
            json!({ "streamId": members, "content": "x", "extra": 1 }),
        ),
        (
            "timeout-user",
            json!({ "streamId": members, "userId": "fan" }),
        ),
        (
            "timeout-user",
            json!({ "streamId": members, "userId": "fan", "seconds": 0 }),
        ),
        (
            "ban-user",
            json!({ "streamId": members, "userId": "fan", "seconds": 5 }),
        ),
        (
            "chat-settings",
            json!({ "streamId": members, "slowModeSecs": 999_999 }),
        ),
        (
            "chat-settings",
            json!({ "streamId": members, "blockedWords": [""] }),
        ),
    ] {
        let a = sio.emit("star", event, bad.clone()).await;
        refused(&a, "invalid_payload");
    }
    let long = "x".repeat(501);
    let a = say(&mut sio, "star", &members, &long).await;
    assert!(refused(&a, "invalid_payload").contains("at most 500"));
    refused(
        &say(&mut sio, "star", &members, "   ").await,
        "invalid_payload",
    );
    let a = sio
        .emit(
            "star",
            "ban-user",
            json!({ "streamId": members, "userId": "ghost" }),
        )
        .await;
    refused(&a, "not_found");

    // Another tenant's stream is no stream at all.
    let (_, other_key) = cp.tenant_with_key("Other", "plan_premium").await;
    cp.call(
        Method::PUT,
        "/v1/users/star",
        Some(&other_key),
        Some(json!({"display_name": "Other Star", "creator": true})),
    )
    .await
    .expect(201);
    let theirs = stream(
        &cp,
        &other_key,
        json!({"name": "Theirs", "access": "public", "creator_id": "star"}),
    )
    .await;
    refused(
        &sio.emit("fan", "join-stream", json!({ "streamId": theirs }))
            .await,
        "not_found",
    );

    // A plan without live chat: refused, naming the feature.
    let plan = cp
        .patch(
            "/v1/plans/plan_premium",
            &cp.admin,
            json!({"features": {"live_chat": false}}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(plan["features"]["live_chat"], json!(false));
    let off = sio
        .emit("star", "join-stream", json!({ "streamId": members }))
        .await;
    assert!(refused(&off, "forbidden").contains("live_chat"));
}
