//! The realtime gateway with the official `socket.io-client` (Node), on SQLite and PostgreSQL:
//! two users chatting across devices, read marks and unread counts, typing indicators,
//! presence, the handshake's refusals, and bad payloads and floods answered with error acks on
//! a connection that stays up.

use onda_tests::api::TestControlPlane;
use onda_tests::cluster::ControlPlane;
use onda_tests::db::Backend;
use onda_tests::fixture::{ClusterFixture, ClusterSpec};
use onda_tests::on_both_backends;
use onda_tests::realtime::{Sio, StalledClient};
use onda_tests::sioload::{Emit, Pool};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_fan_and_a_creator_chat_across_devices,
    handshakes_need_a_valid_user_token,
    bad_payloads_and_floods_get_error_acks,
    presence_follows_the_last_device,
    edits_deletes_blocks_and_reports,
    the_conversation_list_shows_each_peer_and_last_message,
    a_reconnect_replays_missed_events_once_in_order,
    a_reconnect_amid_a_burst_gets_each_offset_once,
    old_foreign_or_bad_offsets_say_incomplete,
    a_client_that_never_reads_is_dropped_and_others_are_not_slowed,
    messages_sent_at_once_are_each_stored_and_answered,
);

/// A tenant with a fan and a creator: (API key, fan's token, creator's token).
async fn pair(cp: &TestControlPlane) -> (String, String, String) {
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;
    (key, fan, creator)
}

fn assert_error(ack: &Value, code: &str) {
    assert_eq!(ack["error"]["code"], code, "{ack}");
    let message = ack["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(' '), "a sentence: {ack}");
}

async fn a_fan_and_a_creator_chat_across_devices(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, fan, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    sio.connect("fan-phone", &fan)
        .await
        .expect("fan's phone connects");
    sio.connect("creator", &creator)
        .await
        .expect("creator connects");

    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "Hi Cleo! 🎧 loved the show"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let id = ack["id"].as_str().expect("message id").to_string();
    let got = sio.event("creator", "receive-message").await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["senderId"], "fan-1");
    assert_eq!(got["receiverId"], "creator-1");
    assert_eq!(got["content"], "Hi Cleo! 🎧 loved the show");
    assert!(got["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(got["conversationId"], ack["conversationId"]);
    // The sender's other device sees it too; the sending socket has its ack instead.
    assert_eq!(
        sio.event("fan-phone", "receive-message").await["id"],
        id.as_str()
    );
    assert!(
        sio.event_within("fan", "receive-message", Duration::from_millis(300))
            .await
            .is_none()
    );

    // The creator types: the fan's devices see it start and stop.
    let ack = sio
        .emit("creator", "typing-start", json!({"receiverId": "fan-1"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        sio.event("fan", "typing-start").await["senderId"],
        "creator-1"
    );
    sio.send("creator", "typing-stop", json!({"receiverId": "fan-1"}))
        .await;
    assert_eq!(
        sio.event("fan", "typing-stop").await["senderId"],
        "creator-1"
    );

    let reply = sio
        .emit(
            "creator",
            "send-message",
            json!({"receiverId": "fan-1", "content": "Thank you!\nSee you Friday"}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        sio.event("fan", "receive-message").await["content"],
        "Thank you!\nSee you Friday"
    );
    assert_eq!(
        sio.event("fan-phone", "receive-message").await["senderId"],
        "creator-1"
    );

    // Unread counts over REST, then a read mark clears them and tells the sender.
    let list = cp
        .get("/v1/me/conversations", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(list["unreadTotal"], 1, "{list}");
    let c = &list["items"][0];
    assert_eq!(c["user"]["id"], "fan-1");
    assert_eq!(c["user"]["displayName"], "Fan One");
    assert_eq!(c["user"]["online"], true);
    assert_eq!(c["lastMessage"]["id"], reply["id"]);
    let ack = sio
        .emit(
            "creator",
            "mark-read",
            json!({"senderId": "fan-1", "messageId": id}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let read = sio.event("fan", "messages-read").await;
    assert_eq!(read["readerId"], "creator-1");
    assert_eq!(read["messageId"], id.as_str());
    let list = cp
        .get("/v1/me/conversations", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(list["unreadTotal"], 0, "{list}");
    let fans = cp.get("/v1/me/conversations", &fan).await.expect(200).body;
    assert_eq!(
        fans["unreadTotal"], 1,
        "the creator's reply is unread: {fans}"
    );

    // History, newest first, in pages.
    for n in 0..3 {
        let ack = sio
            .emit(
                "fan",
                "send-message",
                json!({"receiverId": "creator-1", "content": format!("more {n}")}),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let page = cp
        .get("/v1/me/conversations/creator-1/messages?limit=2", &fan)
        .await
        .expect(200)
        .body;
    let contents: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["more 2", "more 1"]);
    let before = page["nextBefore"].as_str().expect("older messages");
    let older = cp
        .get(
            &format!("/v1/me/conversations/creator-1/messages?limit=10&before={before}"),
            &fan,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(older["items"].as_array().map(Vec::len), Some(3), "{older}");
    assert_eq!(older["nextBefore"], Value::Null);
    // Stored, not just relayed: the same from the other side.
    let theirs = cp
        .get("/v1/me/conversations/fan-1/messages", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(theirs["items"].as_array().map(Vec::len), Some(5));
    // A tenant key is not a user token here.
    cp.get("/v1/me/conversations", &cp.admin).await.problem(403);
    cp.stop().await;
}

async fn handshakes_need_a_valid_user_token(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, _) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    let err = sio
        .connect_auth("anon", json!({}))
        .await
        .expect_err("no token");
    assert!(err.contains("auth: { token"), "{err}");
    let err = sio
        .connect("bad", "not.a.token")
        .await
        .expect_err("garbage");
    assert!(err.contains("not a JWT"), "{err}");
    let err = sio.connect("key", &key).await.expect_err("an API key");
    assert!(err.contains("not a JWT"), "{err}");

    // A tenant whose plan lacks messaging: its users' tokens are good, the gateway refuses.
    let (_, basic) = cp.tenant_with_key("Radio only", "plan_basic").await;
    let listener = cp.user_with_token(&basic, "listener", "Listener").await;
    let err = sio
        .connect("basic", &listener)
        .await
        .expect_err("no messaging");
    assert!(err.contains("does not include messaging"), "{err}");

    // Another tenant's user cannot reach this tenant's users, even by the same id.
    let (_, key_b) = cp.tenant_with_key("Other", "plan_premium").await;
    let outsider = cp.user_with_token(&key_b, "fan-2", "Outsider").await;
    sio.connect("outsider", &outsider).await.expect("connects");
    let ack = sio
        .emit(
            "outsider",
            "send-message",
            json!({"receiverId": "creator-1", "content": "hello?"}),
        )
        .await;
    assert_error(&ack, "not_found");

    // Deleting a user ends their connections at once, and their token no longer connects.
    sio.connect("fan", &fan).await.expect("connects");
    cp.call(Method::DELETE, "/v1/users/fan-1", Some(&key), None)
        .await
        .expect(204);
    let reason = sio.event("fan", "disconnect").await;
    assert_eq!(reason, "io server disconnect");
    let err = sio.connect("fan-again", &fan).await.expect_err("deleted");
    assert!(err.contains("does not exist"), "{err}");

    // Suspending the tenant ends its users' connections and refuses them until resumed.
    let (tid, key2) = cp.tenant_with_key("Suspendable", "plan_premium").await;
    let member = cp.user_with_token(&key2, "member", "Member").await;
    sio.connect("member", &member).await.expect("connects");
    cp.post(&format!("/v1/tenants/{tid}/suspend"), &cp.admin, json!({}))
        .await
        .expect(200);
    assert_eq!(
        sio.event("member", "disconnect").await,
        "io server disconnect"
    );
    let err = sio
        .connect("member-again", &member)
        .await
        .expect_err("suspended");
    assert!(err.contains("suspended"), "{err}");
    cp.post(&format!("/v1/tenants/{tid}/resume"), &cp.admin, json!({}))
        .await
        .expect(200);
    sio.connect("member-back", &member).await.expect("resumed");
    let m = cp.get("/metrics", &cp.admin).await.expect(200).text;
    assert!(
        m.contains("onda_realtime_handshakes_total{outcome=\"malformed\"}"),
        "handshakes counted"
    );
    cp.stop().await;
}

async fn bad_payloads_and_floods_get_error_acks(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, fan, _) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("connects");
    let long = "é".repeat(4001);
    for (payload, code, says) in [
        (
            json!({"receiverId": 7, "content": "x"}),
            "invalid_payload",
            "invalid type",
        ),
        (
            json!({"receiverId": "creator-1", "content": "x", "senderId": "creator-1"}),
            "invalid_payload",
            "unknown field",
        ),
        (
            json!({"receiverId": "creator-1", "content": long}),
            "invalid_payload",
            "4001",
        ),
        (
            json!({"receiverId": "creator-1", "content": "a\u{0}b"}),
            "invalid_payload",
            "control",
        ),
        (
            json!({"receiverId": "creator-1", "content": "   "}),
            "invalid_payload",
            "needs content",
        ),
        (
            json!({"receiverId": "fan-1", "content": "me"}),
            "invalid_payload",
            "your own id",
        ),
        (
            json!({"receiverId": "no one", "content": "x"}),
            "invalid_payload",
            "must be 1 to 128",
        ),
        (
            json!({"receiverId": "ghost", "content": "x"}),
            "not_found",
            "ghost",
        ),
        (
            json!({"receiverId": "creator-1", "mediaUrl": "https://x/y.png", "mediaType": "image"}),
            "invalid_payload",
            "POST /v1/me/attachments",
        ),
        (
            json!({"receiverId": "creator-1", "content": "x", "mediaType": "image"}),
            "invalid_payload",
            "mediaType goes with mediaUrl",
        ),
        (
            json!({"receiverId": "creator-1", "mediaUrl": "/v1/attachments/att_00000000000000000000000000000000"}),
            "not_found",
            "no attachment of yours",
        ),
        (
            json!(["creator-1", "x", null, null]),
            "invalid_payload",
            "JSON object",
        ),
    ] {
        let ack = sio.emit("fan", "send-message", payload.clone()).await;
        assert_error(&ack, code);
        assert!(
            ack["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{payload}: {ack}"
        );
    }
    let ack = sio.emit_args("fan", "send-message", json!([])).await;
    assert_error(&ack, "invalid_payload");
    let ack = sio
        .emit("fan", "mark-read", json!({"senderId": "creator-1"}))
        .await;
    assert_error(&ack, "not_found");
    // An event the gateway does not know is refused by name, and the connection goes on.
    let ack = sio
        .emit("fan", "send-messages", json!({"receiverId": "creator-1"}))
        .await;
    assert_error(&ack, "unknown_event");
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("send-messages")),
        "{ack}"
    );
    let long = "x".repeat(10_000);
    let ack = sio.emit("fan", &long, json!({})).await;
    assert_error(&ack, "unknown_event");
    let said = ack["error"]["message"].as_str().unwrap_or_default();
    assert!(said.len() < 200 && said.contains(&"x".repeat(64)), "{ack}");
    // A packet that is not Socket.io at all ends that connection, as the reference server does
    // ("parse error"); the user's other connections and the server carry on.
    sio.connect("garbage", &fan).await.expect("connects");
    sio.raw("garbage", "4{not a packet").await;
    sio.event("garbage", "disconnect").await;
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "still here"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    // A packet over 64 KiB is no client of ours: that connection ends, the others go on.
    sio.connect("huge", &fan).await.expect("connects");
    let huge = "x".repeat(70 * 1024);
    sio.send(
        "huge",
        "send-message",
        json!({"receiverId": "creator-1", "content": huge}),
    )
    .await;
    sio.event("huge", "disconnect").await;
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "after"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let accepted_before_flood = 2;

    // A flood of messages: the user's bucket refuses with when to retry, and nothing is lost
    // of what was accepted.
    let mut accepted = accepted_before_flood;
    let mut limited = None;
    for n in 0..40 {
        let ack = sio
            .emit(
                "fan",
                "send-message",
                json!({"receiverId": "creator-1", "content": format!("flood {n}")}),
            )
            .await;
        if ack["ok"] == true {
            accepted += 1;
        } else {
            assert_error(&ack, "rate_limited");
            limited = Some(ack);
        }
    }
    let limited = limited.expect("a flood is limited");
    assert!(
        limited["error"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 1000)
    );
    let stored = cp
        .get("/v1/me/conversations/creator-1/messages?limit=100", &fan)
        .await
        .expect(200)
        .body;
    assert_eq!(stored["items"].as_array().map(Vec::len), Some(accepted));
    cp.stop().await;
}

async fn presence_follows_the_last_device(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, fan, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("connects");
    sio.connect("creator", &creator).await.expect("connects");
    // They share a conversation once a message passed.
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "hi"}),
        )
        .await;
    assert_eq!(ack["ok"], true);
    sio.close("creator").await;
    let off = sio.event("fan", "user-offline").await;
    assert_eq!(off["userId"], "creator-1");
    assert!(off["lastSeen"].is_string(), "{off}");

    sio.connect("creator-laptop", &creator)
        .await
        .expect("connects");
    assert_eq!(sio.event("fan", "user-online").await["userId"], "creator-1");
    sio.connect("creator-phone", &creator)
        .await
        .expect("connects");
    sio.close("creator-laptop").await;
    // One device left: still online.
    assert!(
        sio.event_within("fan", "user-offline", Duration::from_millis(500))
            .await
            .is_none()
    );
    let list = cp.get("/v1/me/conversations", &fan).await.expect(200).body;
    assert_eq!(list["items"][0]["user"]["online"], true);
    sio.close("creator-phone").await;
    assert_eq!(
        sio.event("fan", "user-offline").await["userId"],
        "creator-1"
    );
    let list = cp.get("/v1/me/conversations", &fan).await.expect(200).body;
    assert_eq!(list["items"][0]["user"]["online"], false);
    assert!(list["items"][0]["user"]["lastSeen"].is_string());

    // A typing indicator without a refresh ends by itself after 6 s.
    sio.connect("creator", &creator).await.expect("connects");
    sio.send("creator", "typing-start", json!({"receiverId": "fan-1"}))
        .await;
    assert_eq!(
        sio.event("fan", "typing-start").await["senderId"],
        "creator-1"
    );
    let stop = sio.event("fan", "typing-stop").await;
    assert_eq!(stop["expired"], true, "{stop}");
    cp.stop().await;
}

/// Two replicas over one PostgreSQL database: events fan out between them (LISTEN/NOTIFY),
/// presence holds over both, and deleting a user through one ends their sockets on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_messages_presence_and_disconnects() {
    let Some(a) = TestControlPlane::start(Backend::Postgres).await else {
        return;
    };
    let b = a.replica().await;
    let (key, fan, creator) = pair(&a).await;
    let mut on_a = Sio::start(&a.url).await;
    let mut on_b = Sio::start(&b.url).await;
    on_a.connect("fan", &fan).await.expect("fan on A");
    on_b.connect("fan-phone", &fan)
        .await
        .expect("fan's phone on B");
    on_b.connect("creator", &creator)
        .await
        .expect("creator on B");

    let ack = on_a
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "across"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        on_b.event("creator", "receive-message").await["content"],
        "across"
    );
    assert_eq!(
        on_b.event("fan-phone", "receive-message").await["id"],
        ack["id"]
    );
    let reply = on_b
        .emit(
            "creator",
            "send-message",
            json!({"receiverId": "fan-1", "content": "back"}),
        )
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        on_a.event("fan", "receive-message").await["content"],
        "back"
    );
    on_b.send("creator", "typing-start", json!({"receiverId": "fan-1"}))
        .await;
    assert_eq!(
        on_a.event("fan", "typing-start").await["senderId"],
        "creator-1"
    );

    // Presence over both replicas: the creator on A and on B stays online until both close.
    on_a.connect("creator-laptop", &creator)
        .await
        .expect("creator on A");
    on_b.close("creator").await;
    assert!(
        on_a.event_within("fan", "user-offline", Duration::from_millis(700))
            .await
            .is_none(),
        "still connected through A"
    );
    let seen_from_b = b.get("/v1/me/conversations", &fan).await.expect(200).body;
    assert_eq!(
        seen_from_b["items"][0]["user"]["online"], true,
        "{seen_from_b}"
    );
    on_a.close("creator-laptop").await;
    assert_eq!(
        on_a.event("fan", "user-offline").await["userId"],
        "creator-1"
    );
    let seen_from_b = b.get("/v1/me/conversations", &fan).await.expect(200).body;
    assert_eq!(
        seen_from_b["items"][0]["user"]["online"], false,
        "{seen_from_b}"
    );

    // Deleting the fan through A ends their socket on B.
    a.call(Method::DELETE, "/v1/users/fan-1", Some(&key), None)
        .await
        .expect(204);
    assert_eq!(
        on_b.event("fan-phone", "disconnect").await,
        "io server disconnect"
    );
    assert_eq!(
        on_a.event("fan", "disconnect").await,
        "io server disconnect"
    );
    drop((on_a, on_b));
    b.stop().await;
    a.stop().await;
}

/// A user of a process-based control plane: created with the tenant key, with a fresh token.
async fn process_user(cp: &ControlPlane, key: &str, id: &str) -> String {
    let (s, _) = cp
        .tenant_call(
            key,
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, t) = cp
        .tenant_call(
            key,
            Method::POST,
            &format!("/v1/users/{id}/tokens"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().expect("token").to_string()
}

/// `kill -9` of the replica a user is connected to: the users who share a conversation with
/// them see them go offline within 10 s, announced by the surviving replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_users_go_offline_within_10_s() {
    let Some(fx) = ClusterFixture::start_on(ClusterSpec {
        backend: Backend::Postgres,
        etcd: true,
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let mut b = fx.start_replica("cp-b").await;
    let key = fx.cp.tenant_key("Creators").await;
    let fan = process_user(&fx.cp, &key, "fan-1").await;
    let creator = process_user(&fx.cp, &key, "creator-1").await;
    let mut on_a = Sio::start(&fx.cp.api).await;
    let mut on_b = Sio::start(&b.api).await;
    on_a.connect("fan", &fan).await.expect("fan on A");
    on_b.connect("creator", &creator)
        .await
        .expect("creator on B");
    let ack = on_a
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "hi"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        on_b.event("creator", "receive-message").await["content"],
        "hi"
    );

    let killed = std::time::Instant::now();
    b.proc.kill();
    let off = on_a
        .event_within("fan", "user-offline", Duration::from_secs(12))
        .await
        .expect("the creator goes offline after their replica is killed");
    let took = killed.elapsed();
    assert_eq!(off["userId"], "creator-1");
    assert!(took < Duration::from_secs(10), "offline after {took:?}");
    eprintln!("offline {took:?} after kill -9 of the replica");
    let (s, list) = fx
        .cp
        .tenant_call(&fan, Method::GET, "/v1/me/conversations", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["items"][0]["user"]["online"], false, "{list}");
}

async fn edits_deletes_blocks_and_reports(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("connects");
    sio.connect("creator", &creator).await.expect("connects");
    let sent = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "helo"}),
        )
        .await;
    let id = sent["id"].as_str().expect("id").to_string();
    sio.event("creator", "receive-message").await;

    // Edit and delete one's own message; the other side hears of both.
    let ack = sio
        .emit(
            "fan",
            "edit-message",
            json!({"messageId": id, "content": "hello"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let edited = sio.event("creator", "message-edited").await;
    assert_eq!(
        (edited["id"].as_str(), edited["content"].as_str()),
        (Some(id.as_str()), Some("hello"))
    );
    assert!(edited["editedAt"].is_string());
    let ack = sio
        .emit(
            "creator",
            "edit-message",
            json!({"messageId": id, "content": "mine now"}),
        )
        .await;
    assert_error(&ack, "not_found");

    // A report keeps the message as the reporter saw it, even after it is deleted.
    let ack = sio
        .emit(
            "creator",
            "report-message",
            json!({"messageId": id, "reason": "spam"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = sio
        .emit(
            "creator",
            "report-message",
            json!({"messageId": id, "reason": ""}),
        )
        .await;
    assert_error(&ack, "invalid_payload");
    let ack = sio
        .emit("fan", "delete-message", json!({"messageId": id}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let deleted = sio.event("creator", "message-deleted").await;
    assert_eq!(deleted["id"], id.as_str());
    let history = cp
        .get("/v1/me/conversations/fan-1/messages", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(history["items"][0]["content"], "", "{history}");
    assert!(history["items"][0]["deletedAt"].is_string());
    let reports = cp.list_all("/v1/reports", &key).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["reporterId"], "creator-1");
    assert_eq!(reports[0]["reason"], "spam");
    assert_eq!(reports[0]["message"]["content"], "hello");
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    assert!(cp.list_all("/v1/reports", &other).await.is_empty());

    // The creator blocks the fan: the fan can neither message nor type to them; unblocking
    // lets the fan in again.
    let ack = sio
        .emit("creator", "block-user", json!({"userId": "fan-1"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "hey?"}),
        )
        .await;
    assert_error(&ack, "blocked");
    let ack = sio
        .emit("fan", "typing-start", json!({"receiverId": "creator-1"}))
        .await;
    assert_error(&ack, "blocked");
    let ack = sio
        .emit(
            "creator",
            "send-message",
            json!({"receiverId": "fan-1", "content": "x"}),
        )
        .await;
    assert_error(&ack, "blocked");
    assert!(
        sio.event_within("creator", "receive-message", Duration::from_millis(300))
            .await
            .is_none()
    );
    let ack = sio
        .emit("creator", "unblock-user", json!({"userId": "fan-1"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "hey!"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    cp.stop().await;
}

/// `kill -9` of the control plane right after a message was acknowledged: after a restart the
/// message is in the history (it was committed before the ack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_message_survives_kill_9() {
    let mut fx = ClusterFixture::start(0).await;
    let key = fx.cp.tenant_key("Creators").await;
    let fan = process_user(&fx.cp, &key, "fan-1").await;
    process_user(&fx.cp, &key, "creator-1").await;
    let mut sio = Sio::start(&fx.cp.api).await;
    sio.connect("fan", &fan).await.expect("connects");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "kept"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    fx.kill_cp();
    sio.event("fan", "disconnect").await;
    fx.restart_cp().await;
    let (s, history) = fx
        .cp
        .tenant_call(
            &fan,
            Method::GET,
            "/v1/me/conversations/creator-1/messages",
            None,
        )
        .await;
    assert_eq!(s, 200, "{history}");
    assert_eq!(history["items"][0]["id"], ack["id"], "{history}");
    assert_eq!(history["items"][0]["content"], "kept");
}

/// A creator with three conversations: the list is newest first, each row carries its own last
/// message and unread count, and a deleted fan's conversation stays, shown as a deleted user.
async fn the_conversation_list_shows_each_peer_and_last_message(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, _, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("creator", &creator).await.expect("connects");
    for (n, fan) in ["fan-a", "fan-b", "fan-c"].into_iter().enumerate() {
        let token = cp.user_with_token(&key, fan, &format!("Fan {fan}")).await;
        sio.connect(fan, &token).await.expect("connects");
        for i in 0..=n {
            let ack = sio
                .emit(
                    fan,
                    "send-message",
                    json!({"receiverId": "creator-1", "content": format!("{fan} says {i}")}),
                )
                .await;
            assert_eq!(ack["ok"], true, "{ack}");
        }
    }
    sio.close("fan-c").await;
    // Gone once the creator hears it (its last_seen is stored before that).
    assert_eq!(
        sio.event("creator", "user-offline").await["userId"],
        "fan-c"
    );
    // fan-a writes again: their conversation moves to the top.
    let ack = sio
        .emit(
            "fan-a",
            "send-message",
            json!({"receiverId": "creator-1", "content": "fan-a again"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    cp.delete("/v1/users/fan-b", &key).await.expect(204);

    let list = cp
        .get("/v1/me/conversations", &creator)
        .await
        .expect(200)
        .body;
    let rows: Vec<(Value, Value, Value, Value, Value)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| {
            (
                c["user"]["id"].clone(),
                c["user"]["online"].clone(),
                c["user"]["deleted"].clone(),
                c["lastMessage"]["content"].clone(),
                c["unreadCount"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                json!("fan-a"),
                json!(true),
                json!(false),
                json!("fan-a again"),
                json!(2)
            ),
            (
                json!("fan-c"),
                json!(false),
                json!(false),
                json!("fan-c says 2"),
                json!(3)
            ),
            (
                json!("fan-b"),
                json!(false),
                json!(true),
                json!("fan-b says 1"),
                json!(2)
            ),
        ],
        "{list}"
    );
    assert_eq!(list["unreadTotal"], 7, "{list}");
    assert_eq!(
        list["items"][2]["user"]["displayName"],
        Value::Null,
        "{list}"
    );
    assert!(list["items"][1]["user"]["lastSeen"].is_string(), "{list}");
}

/// The events of a replay: (event, first argument, offset), up to and without `recovery`, and
/// `recovery`'s payload. The `disconnect` of the drop before it and ephemeral events (typing,
/// presence: never replayed, they have no offset) are left out.
fn replayed(events: Vec<Value>) -> (Vec<(String, Value, String)>, Value) {
    let (last, rest) = events.split_last().expect("recovery came");
    assert_eq!(last["event"], "recovery", "{last}");
    let got = rest
        .iter()
        .filter(|v| {
            let ephemeral = ["typing-start", "typing-stop", "user-online", "user-offline"];
            v["event"] != "disconnect" && !ephemeral.iter().any(|e| v["event"] == *e)
        })
        .map(|v| {
            let offset = v["args"][1]
                .as_str()
                .unwrap_or_else(|| panic!("an offset: {v}"));
            (
                v["event"].as_str().unwrap_or_default().to_string(),
                v["args"][0].clone(),
                offset.to_string(),
            )
        })
        .collect();
    (got, last["args"][0].clone())
}

/// A receiver that loses its connection for a moment gets, when socket.io-client reconnects
/// with the newest offset it saw, the messages and notifications sent meanwhile: in order, once,
/// then `recovery` says it is complete, and new events come live after it.
async fn a_reconnect_replays_missed_events_once_in_order(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    sio.connect("creator", &creator)
        .await
        .expect("creator connects");
    let first = sio.events_until("creator", "recovery").await;
    let (_, fresh) = replayed(first);
    assert_eq!(fresh["recovered"], false, "nothing asked: {fresh}");
    let send = |n: &str| json!({"receiverId": "creator-1", "content": n});
    let ack = sio.emit("fan", "send-message", send("before")).await;
    assert!(
        ack["offset"].as_str().is_some(),
        "the sender's own offset: {ack}"
    );
    assert_eq!(
        sio.event("creator", "receive-message").await["content"],
        "before"
    );
    sio.event("creator", "notification").await;
    let seen = sio.offset("creator").await.expect("an offset");

    sio.drop_connection("creator").await;
    let m1 = sio.emit("fan", "send-message", send("while away 1")).await;
    let pushed = cp
        .call(
            Method::POST,
            "/v1/users/creator-1/notifications",
            Some(&key),
            Some(json!({"type": "tip.received", "title": "A tip!"})),
        )
        .await
        .expect(201)
        .body;
    let m2 = sio.emit("fan", "send-message", send("while away 2")).await;
    assert_eq!(sio.offset("creator").await.as_deref(), Some(seen.as_str()));

    sio.reconnect("creator").await.expect("creator reconnects");
    let (got, status) = replayed(sio.events_until("creator", "recovery").await);
    let names: Vec<&str> = got.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "receive-message",
            "notification",
            "notification",
            "receive-message",
            "notification"
        ],
        "{got:?}"
    );
    assert_eq!(got[0].1["id"], m1["id"]);
    assert_eq!(got[1].1["notification"]["data"]["messageId"], m1["id"]);
    assert_eq!(got[2].1["notification"]["id"], pushed["id"]);
    assert_eq!(got[3].1["id"], m2["id"]);
    assert_eq!(got[4].1["unreadCount"], 4, "{:?}", got[4]);
    let offsets: Vec<&str> = got.iter().map(|(_, _, o)| o.as_str()).collect();
    assert!(seen.as_str() < offsets[0], "{seen} then {offsets:?}");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert_eq!(status["recovered"], true, "{status}");
    assert_eq!(status["replayed"], 5, "{status}");
    assert_eq!(status["offset"], offsets[4], "{status}");

    // Exactly once: nothing of it comes again, and what is new comes live.
    let m3 = sio.emit("fan", "send-message", send("back again")).await;
    let live = sio.event("creator", "receive-message").await;
    assert_eq!(live["id"], m3["id"], "only the new one: {live}");
    assert!(
        sio.event_within("creator", "receive-message", Duration::from_millis(500))
            .await
            .is_none()
    );
    // A second drop with nothing missed is complete with nothing to replay.
    sio.event("creator", "notification").await;
    sio.drop_connection("creator").await;
    sio.reconnect("creator").await.expect("again");
    let (got, status) = replayed(sio.events_until("creator", "recovery").await);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(
        (status["recovered"].clone(), status["replayed"].clone()),
        (json!(true), json!(0))
    );
    let metrics = cp.call(Method::GET, "/metrics", None, None).await.text;
    assert!(
        metrics.contains("onda_realtime_recoveries_total{outcome=\"complete\"} 2"),
        "{metrics}"
    );
    cp.stop().await;
}

/// The sequence number of an offset (`{epoch}-{seq}`).
fn seq_of(offset: &str) -> u64 {
    offset
        .rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("an offset: {offset}"))
}

/// A receiver reconnects while many events for it are being committed and sent (messages of
/// ten fans through the gateway, notifications through REST): every offset after the one it
/// had reaches the socket exactly once, replayed or live, and the replay is in order.
async fn a_reconnect_amid_a_burst_gets_each_offset_once(b: Backend) {
    const FANS: usize = 10;
    const ROUNDS: usize = 10;
    // Fewer than the 1000 events a replay may have.
    const PUSHES_AFTER: usize = 200;
    const MAX_PUSHES: usize = 600;
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, _, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    let fans: Vec<String> = (0..FANS).map(|i| format!("fan-{i}")).collect();
    for fan in &fans {
        let token = cp.user_with_token(&key, fan, fan).await;
        sio.connect(fan, &token).await.expect("a fan connects");
    }
    sio.connect("creator", &creator)
        .await
        .expect("creator connects");
    sio.events_until("creator", "recovery").await;
    let send = |n: String| json!({"receiverId": "creator-1", "content": n});
    sio.emit("fan-0", "send-message", send("before".into()))
        .await;
    sio.events_until("creator", "notification").await;
    let seen = sio.offset("creator").await.expect("an offset");

    sio.drop_connection("creator").await;
    // Messages before and after the reconnect command, and notifications through REST at the
    // same time: many commits while the socket is read its plan and joins its rooms.
    let emits: Vec<(&str, &str, Value)> = (0..ROUNDS)
        .flat_map(|r| {
            fans.iter()
                .map(move |f| (f.as_str(), "send-message", send(format!("{f} {r}"))))
        })
        .collect();
    let (before, after) = emits.split_at(emits.len() / 3);
    // Notifications through REST, four at a time, from before the reconnect until well after it
    // (the replay and the joins happen after the reconnect is answered).
    let reconnect_done = std::sync::atomic::AtomicBool::new(false);
    let pusher = async {
        let (mut pushed, mut after) = (0, 0);
        while after < PUSHES_AFTER && pushed < MAX_PUSHES {
            let batch = futures_util::future::join_all((0..4).map(|i| {
                cp.call(
                    Method::POST,
                    "/v1/users/creator-1/notifications",
                    Some(&key),
                    Some(json!({"type": "tip.received", "title": format!("Push {pushed} {i}")})),
                )
            }));
            for r in batch.await {
                r.expect(201);
            }
            pushed += 4;
            if reconnect_done.load(std::sync::atomic::Ordering::Relaxed) {
                after += 4;
            }
        }
        pushed
    };
    let reconnect = async {
        let r = sio.reconnect_amid("creator", before, after).await;
        reconnect_done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let ((reconnected, acks), pushed) = tokio::join!(reconnect, pusher);
    reconnected.expect("creator reconnects");
    for ack in &acks {
        assert_eq!(ack["ok"], true, "{ack}");
    }
    // A last message, sent after everything else was acknowledged, closes what is expected.
    let last = sio.emit("fan-0", "send-message", send("last".into())).await;
    let mut events: Vec<Value> = Vec::new();
    let last_came = |events: &[Value]| {
        events
            .iter()
            .any(|v| v["event"] == "receive-message" && v["args"][0]["id"] == last["id"])
    };
    // The recovery first (the last message may come before it, replayed), then what is live.
    events.extend(sio.events_until("creator", "recovery").await);
    while !last_came(&events) {
        events.extend(sio.events_until("creator", "receive-message").await);
    }
    let at = events
        .iter()
        .position(|v| v["event"] == "recovery")
        .expect("recovery came");
    let (replay, status) = replayed(events[..=at].to_vec());
    assert_eq!(status["recovered"], true, "{status}");
    let replay_seqs: Vec<u64> = replay.iter().map(|(_, _, o)| seq_of(o)).collect();
    assert!(
        replay_seqs.windows(2).all(|w| w[0] < w[1]),
        "the replay in order: {replay_seqs:?}"
    );
    let mut seqs = replay_seqs.clone();
    for v in &events[at + 1..] {
        if let Some(o) = v["args"][1].as_str() {
            seqs.push(seq_of(o));
        }
    }
    let from = seq_of(&seen) + 1;
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    let dups: Vec<&[u64]> = sorted.windows(2).filter(|w| w[0] == w[1]).collect();
    assert!(
        dups.is_empty(),
        "offsets that came twice: {dups:?} of {seqs:?}"
    );
    // Each message is two events of the creator (the message and its notification), each push
    // one, and the last message (its notification comes after it).
    let expected = 2 * FANS * ROUNDS + pushed + 1;
    assert_eq!(sorted.len(), expected, "{sorted:?}");
    assert_eq!(sorted.first().copied(), Some(from), "{sorted:?}");
    assert_eq!(
        sorted.last().copied(),
        Some(from + u64::try_from(sorted.len()).expect("fits") - 1),
        "no offset missing: {sorted:?}"
    );
    cp.stop().await;
}

/// Ages every stored gateway event by `ms`, as if that long had passed.
async fn age_feeds(cp: &TestControlPlane, ms: i64) {
    let db = onda_control_plane::db::Db::connect(cp.database_url(), 1)
        .await
        .expect("database");
    let mut conn = db.conn().await.expect("conn");
    sqlx::query("UPDATE realtime_events SET created_ms = created_ms - $1")
        .bind(ms)
        .execute(&mut *conn)
        .await
        .expect("age");
}

/// An offset older than the recovery window, another user's, or not an offset at all: the
/// connection stands, nothing is replayed, and `recovery` says to reload through REST.
async fn old_foreign_or_bad_offsets_say_incomplete(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, fan, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    sio.connect("creator", &creator).await.expect("creator");
    // Its first connect asked for nothing: told so, with where its feed is.
    let (_, fresh) = replayed(sio.events_until("creator", "recovery").await);
    assert_eq!(fresh["recovered"], false, "{fresh}");
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "one"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    sio.event("creator", "receive-message").await;
    sio.event("creator", "notification").await;
    let creators = sio.offset("creator").await.expect("creator's offset");

    // The fan presents the creator's offset: none of the creator's events, and not complete.
    sio.connect_auth("fan-2", json!({"token": fan, "offset": creators}))
        .await
        .expect("connects anyway");
    let (got, status) = replayed(sio.events_until("fan-2", "recovery").await);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(status["recovered"], false, "{status}");
    assert!(
        status["reason"]
            .as_str()
            .is_some_and(|r| r.contains("REST")),
        "{status}"
    );
    assert_ne!(status["offset"], creators.as_str());
    // Not an offset: the same, on a connection that works.
    for bad in [json!(5), json!("x-1"), json!({"seq": 1})] {
        sio.connect_auth("odd", json!({"token": fan, "offset": bad}))
            .await
            .expect("connects anyway");
        let (got, status) = replayed(sio.events_until("odd", "recovery").await);
        assert!(got.is_empty() && status["recovered"] == false, "{status}");
        let ack = sio
            .emit("odd", "typing-start", json!({"receiverId": "creator-1"}))
            .await;
        assert_eq!(ack["ok"], true, "the socket works: {ack}");
        sio.close("odd").await;
    }

    // Away longer than the window: what was missed is gone from the log.
    sio.drop_connection("creator").await;
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "two"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    age_feeds(&cp, 3 * 60 * 1000).await;
    sio.reconnect("creator").await.expect("reconnects");
    let (got, status) = replayed(sio.events_until("creator", "recovery").await);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(status["recovered"], false, "{status}");
    assert!(
        status["reason"]
            .as_str()
            .is_some_and(|r| r.contains("window")),
        "{status}"
    );
    // From the offset it is told, the next reconnect is complete again.
    let message = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "three"}),
        )
        .await;
    assert_eq!(
        sio.event("creator", "receive-message").await["id"],
        message["id"]
    );
    sio.event("creator", "notification").await;
    sio.drop_connection("creator").await;
    sio.reconnect("creator").await.expect("reconnects");
    let (_, status) = replayed(sio.events_until("creator", "recovery").await);
    assert_eq!(status["recovered"], true, "{status}");
    cp.stop().await;
}

/// Recovery does not depend on the replica: a message sent through replica A while the receiver
/// was away is replayed when it reconnects to replica B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_through_another_replica_recovers() {
    let Some(a) = TestControlPlane::start(Backend::Postgres).await else {
        return;
    };
    let b = a.replica().await;
    let (_, fan, creator) = pair(&a).await;
    let mut on_a = Sio::start(&a.url).await;
    let mut on_b = Sio::start(&b.url).await;
    on_a.connect("fan", &fan).await.expect("fan on A");
    on_a.connect("creator", &creator)
        .await
        .expect("creator on A");
    let first = on_a
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "hi"}),
        )
        .await;
    assert_eq!(
        on_a.event("creator", "receive-message").await["id"],
        first["id"]
    );
    on_a.event("creator", "notification").await;
    let seen = on_a.offset("creator").await.expect("an offset");
    on_a.close("creator").await;

    let missed = on_a
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "via A"}),
        )
        .await;
    assert_eq!(missed["ok"], true, "{missed}");
    on_b.connect_auth("creator", json!({"token": creator, "offset": seen}))
        .await
        .expect("creator on B");
    let (got, status) = replayed(on_b.events_until("creator", "recovery").await);
    let names: Vec<&str> = got.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(names, ["receive-message", "notification"], "{got:?}");
    assert_eq!(got[0].1["id"], missed["id"]);
    assert_eq!(status["recovered"], true, "{status}");
    // And it is live on B from then on, for a message sent through A.
    let next = on_a
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "live"}),
        )
        .await;
    assert_eq!(
        on_b.event("creator", "receive-message").await["id"],
        next["id"]
    );
    drop((on_a, on_b));
    b.stop().await;
    a.stop().await;
}

/// The value of an unlabelled series in a Prometheus text page.
fn series(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A client that completes its handshake and then never reads, while a flood of notifications
/// goes to its user: it is dropped within seconds (counted as a slow client), and another
/// user's reading client keeps getting its messages promptly meanwhile.
async fn a_client_that_never_reads_is_dropped_and_others_are_not_slowed(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, creator) = pair(&cp).await;
    let stuck = cp.user_with_token(&key, "stuck-1", "Stuck").await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("fan connects");
    sio.connect("creator", &creator)
        .await
        .expect("creator connects");
    let addr = cp
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the control plane's address");
    let stalled = StalledClient::connect(addr, &stuck).await;
    let metrics = async || cp.call(Method::GET, "/metrics", None, None).await.text;
    let page = metrics().await;
    assert_eq!(
        series(&page, "onda_realtime_connections"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(series(&page, "onda_realtime_slow_clients_total"), Some(0.0));

    // The flood: notifications of about 6 KB to the stuck user, eight requests at a time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = tokio::spawn({
        let (http, url, key, stop) = (cp.http.clone(), cp.url.clone(), key.clone(), stop.clone());
        let body = json!({
            "type": "flood.test",
            "title": "Flood",
            "body": "b".repeat(2000),
            "data": {"pad": "d".repeat(3900)},
        });
        async move {
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                let mut batch = tokio::task::JoinSet::new();
                for _ in 0..8 {
                    batch.spawn(
                        http.post(format!("{url}/v1/users/stuck-1/notifications"))
                            .bearer_auth(&key)
                            .json(&body)
                            .send(),
                    );
                }
                for r in batch.join_all().await {
                    assert_eq!(r.expect("the API answers").status().as_u16(), 201);
                    sent += 1;
                }
            }
            sent
        }
    });

    // Meanwhile the creator messages the fan (within the message rate limit) and the fan's
    // socket gets each one; the latency of the slowest is kept.
    let started = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(150));
    let dropped_after = loop {
        pace.tick().await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stalled client is not dropped within 60 s"
        );
        let at = std::time::Instant::now();
        let ack = sio
            .emit(
                "creator",
                "send-message",
                json!({"receiverId": "fan-1", "content": format!("probe {probes}")}),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        let got = sio.event("fan", "receive-message").await;
        assert_eq!(got["id"], ack["id"], "in order, none lost");
        worst = worst.max(at.elapsed());
        probes += 1;
        let page = metrics().await;
        if series(&page, "onda_realtime_slow_clients_total") == Some(1.0) {
            // Its disconnect ran: two connections left, the readers'.
            assert_eq!(
                series(&page, "onda_realtime_connections"),
                Some(2.0),
                "{page}"
            );
            break started.elapsed();
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flooded = flood.await.expect("flood");
    eprintln!(
        "stalled client dropped after {dropped_after:?} of flood ({flooded} notifications sent); \
         slowest of {probes} messages to a reading client: {worst:?}"
    );
    assert!(worst < Duration::from_secs(1), "a reader waited {worst:?}");
    // The readers are still connected and served.
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "still here"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        sio.event("creator", "receive-message").await["id"],
        ack["id"]
    );
    drop(stalled);
    cp.stop().await;
}

/// Forty users in twenty pairs send five messages each to their peer at once, so the gateway
/// stores them several to a transaction: every message is answered on its own, the refused ones
/// (to a user who does not exist, between users who blocked each other) refuse only
/// themselves, and every stored one is delivered once, listed and counted unread.
async fn messages_sent_at_once_are_each_stored_and_answered(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        let id = format!("u{i:02}");
        tokens.push(cp.user_with_token(&key, &id, &format!("User {i}")).await);
    }
    let pool = Pool::connect(&cp.url, &tokens, 1000).await;
    assert_eq!(
        pool.wait_answered(Duration::from_secs(20)).await,
        (40, 0, 0, 0)
    );
    pool.emit(
        3,
        Emit {
            event: "block-user",
            payload: json!({ "userId": "u02" }),
            stamp: None,
            stamp_field: "content",
        },
    );
    let stats = pool.stats.clone();
    onda_tests::wait_for("the block", Duration::from_secs(10), || {
        let stats = stats.clone();
        async move { (stats.joined.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    stats.measure(1);
    let message = |to: String| Emit {
        event: "send-message",
        payload: json!({ "receiverId": to }),
        stamp: Some(1),
        stamp_field: "content",
    };
    for _ in 0..5 {
        for i in 0..40 {
            pool.emit(i, message(format!("u{:02}", i ^ 1)));
        }
    }
    pool.emit(0, message("ghost".to_string()));
    let done = onda_tests::wait_for("every answer and delivery", Duration::from_secs(30), || {
        let stats = stats.clone();
        async move {
            let m = stats.snapshot();
            (m.acked + m.ack_errors == 201 && m.delivered >= 190).then_some(m)
        }
    })
    .await;
    // Pair (u02, u03) blocked each other: 10 refused; and the one to the ghost.
    assert_eq!((done.sent, done.acked, done.ack_errors), (201, 190, 11));
    assert_eq!(done.delivered, 190, "each stored message delivered once");
    for (user, token, peer) in [("u05", &tokens[5], "u04"), ("u38", &tokens[38], "u39")] {
        let list = cp.get("/v1/me/conversations", token).await.expect(200).body;
        assert_eq!(
            list["items"].as_array().map(Vec::len),
            Some(1),
            "{user}: {list}"
        );
        assert_eq!(list["items"][0]["user"]["id"], peer, "{list}");
        assert_eq!(list["items"][0]["unreadCount"], 5, "{list}");
        let page = cp
            .get(&format!("/v1/me/conversations/{peer}/messages"), token)
            .await
            .expect(200)
            .body;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(10), "{page}");
        let unread = cp
            .get("/v1/me/notifications?unread=true", token)
            .await
            .expect(200)
            .body;
        assert_eq!(unread["unreadCount"], 5, "{unread}");
    }
    let list = cp
        .get("/v1/me/conversations", &tokens[2])
        .await
        .expect(200)
        .body;
    assert_eq!(
        list["items"],
        json!([]),
        "nothing stored between blocked users: {list}"
    );
    // Told for the record, not asserted: how many transactions wrote them depends on timing.
    let metrics = cp.call(Method::GET, "/metrics", None, None).await.text;
    let batches: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("onda_realtime_message_batch_size_"))
        .collect();
    eprintln!("{}", batches.join("\n"));
    assert!(!batches.is_empty(), "the writer's batch sizes are exported");
    pool.close(Duration::from_secs(5)).await;
}

/// A replica on its own sends events to its own sockets only (no NOTIFY); when a second
/// replica starts, the first hears of it and a message from a client of the first reaches a
/// client of the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_alone_starts_sharing_when_another_joins() {
    let Some(a) = TestControlPlane::start(Backend::Postgres).await else {
        return;
    };
    let (_, fan, creator) = pair(&a).await;
    let mut on_a = Sio::start(&a.url).await;
    on_a.connect("fan", &fan).await.expect("fan on A");
    on_a.connect("creator", &creator)
        .await
        .expect("creator on A");
    let ack = on_a
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "alone"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        on_a.event("creator", "receive-message").await["content"],
        "alone"
    );
    let b = a.replica().await;
    let mut on_b = Sio::start(&b.url).await;
    on_b.connect("creator-phone", &creator)
        .await
        .expect("creator's phone on B");
    let ack = on_a
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": "shared"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        on_b.event("creator-phone", "receive-message").await["content"],
        "shared"
    );
    assert_eq!(
        on_a.event("creator", "receive-message").await["content"],
        "shared"
    );
}
