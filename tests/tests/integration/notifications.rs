//! Notifications through the real API and the gateway (`socket.io-client`), on SQLite and
//! PostgreSQL: a tenant notifies its user and every device of theirs hears it with the unread
//! count; a new message notifies its receiver; lists, pages and read marks over REST and the
//! socket; bad input, other tenants and other users refused.

use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use onda_tests::realtime::Sio;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    a_tenant_notifies_every_device_and_marks_are_counted,
    a_message_notifies_its_receiver_only,
    bad_input_other_tenants_and_other_users_are_refused,
    notifications_page_newest_first,
);

/// A tenant with a fan and a creator: (API key, fan's token, creator's token).
async fn pair(cp: &TestControlPlane) -> (String, String, String) {
    let (_, key) = cp.tenant_with_key("Creators", "plan_premium").await;
    let fan = cp.user_with_token(&key, "fan-1", "Fan One").await;
    let creator = cp.user_with_token(&key, "creator-1", "Cleo").await;
    (key, fan, creator)
}

/// The value of `series` (name and labels exactly as exported) in `/metrics`, 0 when absent.
async fn metric(cp: &TestControlPlane, series: &str) -> f64 {
    let text = cp
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect(200)
        .text;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until each socket's connect handler has run on the server. socketioxide tells the
/// client it is connected before that handler joins the socket to its user's room; an event
/// answered on the socket shows the handler ran (it registers the events after the join).
async fn joined(sio: &mut Sio, clients: &[&str]) {
    for client in clients {
        let ack = sio
            .emit(client, "typing-stop", json!({"receiverId": "someone-else"}))
            .await;
        assert_eq!(ack["ok"], true, "{client}: {ack}");
    }
}

fn assert_error(ack: &Value, code: &str) {
    assert_eq!(ack["error"]["code"], code, "{ack}");
}

async fn a_tenant_notifies_every_device_and_marks_are_counted(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, _, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("cleo", &creator).await.expect("connects");
    sio.connect("cleo-phone", &creator).await.expect("connects");
    joined(&mut sio, &["cleo", "cleo-phone"]).await;

    let first = cp
        .post(
            "/v1/users/creator-1/notifications",
            &key,
            json!({"type": "subscriber.new", "title": "Ana subscribed 🎉", "body": "Tier 2",
                   "link": "/fans/ana", "data": {"fanId": "fan-1", "tier": 2}}),
        )
        .await
        .expect(201)
        .body;
    let id = first["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("ntf_"), "{first}");
    assert_eq!(first["type"], "subscriber.new");
    assert_eq!(first["read"], false);
    assert_eq!(first["readAt"], Value::Null);
    assert!(
        first["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    for device in ["cleo", "cleo-phone"] {
        let got = sio.event(device, "notification").await;
        assert_eq!(got["unreadCount"], 1, "{device}: {got}");
        assert_eq!(got["notification"], first, "{device}");
    }
    let second = cp
        .post(
            "/v1/users/creator-1/notifications",
            &key,
            json!({"type": "tip.received", "title": "A tip of 5 €"}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(second["body"], "");
    assert_eq!(second["data"], json!({}));
    for device in ["cleo", "cleo-phone"] {
        let got = sio.event(device, "notification").await;
        assert_eq!(got["unreadCount"], 2, "{device}: {got}");
        assert_eq!(got["notification"]["id"], second["id"]);
    }

    let list = cp
        .get("/v1/me/notifications", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(list["unreadCount"], 2, "{list}");
    assert_eq!(list["nextBefore"], Value::Null);
    assert_eq!(list["items"], json!([second, first]), "newest first");

    // One read over the socket: acked with the count after it, and kept on a second mark.
    let ack = sio
        .emit("cleo", "mark-notification-read", json!({ "id": id }))
        .await;
    assert_eq!(ack, json!({"ok": true, "unreadCount": 1}));
    let read_at = cp
        .get("/v1/me/notifications", &creator)
        .await
        .expect(200)
        .body["items"][1]["readAt"]
        .clone();
    assert!(
        read_at.as_str().is_some_and(|t| t.ends_with('Z')),
        "{read_at}"
    );
    let ack = sio
        .emit("cleo-phone", "mark-notification-read", json!({ "id": id }))
        .await;
    assert_eq!(ack, json!({"ok": true, "unreadCount": 1}));
    let list = cp
        .get("/v1/me/notifications", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(list["items"][1]["read"], true);
    assert_eq!(
        list["items"][1]["readAt"], read_at,
        "the first read time stays"
    );
    let unread = cp
        .get("/v1/me/notifications?unread=true", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(unread["items"], json!([second]), "{unread}");
    assert_eq!(unread["unreadCount"], 1);

    // All over REST, then the socket's "all" finds nothing left.
    let all = cp
        .post("/v1/me/notifications/read-all", &creator, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(all, json!({"unreadCount": 0}));
    let unread = cp
        .get("/v1/me/notifications?unread=true", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(unread["items"], json!([]), "{unread}");
    let ack = sio
        .emit("cleo", "mark-all-notifications-read", json!({}))
        .await;
    assert_eq!(ack, json!({"ok": true, "unreadCount": 0}));
    let ack = sio
        .emit("cleo", "mark-all-notifications-read", json!({"all": true}))
        .await;
    assert_error(&ack, "invalid_payload");
    let ack = sio
        .emit("cleo", "mark-notification-read", json!({"id": "ntf_nope"}))
        .await;
    assert_error(&ack, "not_found");

    // A third one counts from zero again.
    cp.post(
        "/v1/users/creator-1/notifications",
        &key,
        json!({"type": "subscriber.new", "title": "Bo subscribed"}),
    )
    .await
    .expect(201);
    assert_eq!(sio.event("cleo", "notification").await["unreadCount"], 1);
    assert_eq!(
        metric(&cp, "onda_notifications_total{source=\"tenant\"}").await,
        3.0
    );
}

async fn a_message_notifies_its_receiver_only(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (_, fan, creator) = pair(&cp).await;
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("connects");
    sio.connect("fan-phone", &fan).await.expect("connects");
    sio.connect("cleo", &creator).await.expect("connects");
    joined(&mut sio, &["fan-phone", "cleo"]).await;

    let content = format!("{}{}", "🎧".repeat(90), "x".repeat(60));
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "creator-1", "content": content}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = sio.event("cleo", "notification").await;
    assert_eq!(got["unreadCount"], 1, "{got}");
    let n = &got["notification"];
    assert_eq!(n["type"], "message.created");
    assert_eq!(n["title"], "New message from Fan One");
    assert_eq!(
        n["body"].as_str().expect("body"),
        format!("{}{}", "🎧".repeat(90), "x".repeat(10)),
        "the first 100 characters"
    );
    assert_eq!(n["link"], Value::Null);
    assert_eq!(
        n["data"],
        json!({"conversationId": ack["conversationId"], "messageId": ack["id"], "senderId": "fan-1"})
    );
    // The sender's devices get the message, not a notification.
    sio.event("fan-phone", "receive-message").await;
    for device in ["fan", "fan-phone"] {
        assert!(
            sio.event_within(device, "notification", Duration::from_millis(300))
                .await
                .is_none(),
            "{device} is not notified of its own message"
        );
    }
    let list = cp
        .get("/v1/me/notifications", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(list["items"], json!([n.clone()]), "{list}");
    let fans = cp.get("/v1/me/notifications", &fan).await.expect(200).body;
    assert_eq!(
        fans,
        json!({"items": [], "unreadCount": 0, "nextBefore": null})
    );

    // A refused message stores no notification.
    let ack = sio
        .emit(
            "fan",
            "send-message",
            json!({"receiverId": "nobody", "content": "hello?"}),
        )
        .await;
    assert_error(&ack, "not_found");
    assert_eq!(
        metric(&cp, "onda_notifications_total{source=\"message\"}").await,
        1.0
    );
}

async fn bad_input_other_tenants_and_other_users_are_refused(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, creator) = pair(&cp).await;
    let (_, other_key) = cp.tenant_with_key("Others", "plan_premium").await;
    let path = "/v1/users/creator-1/notifications";
    for (body, says) in [
        (json!({"type": "Subscriber New", "title": "x"}), "type"),
        (json!({"type": "a".repeat(65), "title": "x"}), "type"),
        (
            json!({"type": "subscriber.new", "title": "t".repeat(201)}),
            "title",
        ),
        (json!({"type": "subscriber.new", "title": " "}), "title"),
        (
            json!({"type": "a", "title": "x", "body": "b".repeat(2001)}),
            "body",
        ),
        (
            json!({"type": "a", "title": "x", "data": "not an object"}),
            "data",
        ),
        (
            json!({"type": "a", "title": "x", "data": {"k": "v".repeat(5000)}}),
            "data",
        ),
        (
            json!({"type": "a", "title": "x", "link": "javascript:alert(1)"}),
            "link",
        ),
        (
            json!({"type": "a", "title": "x", "link": "//evil.example"}),
            "link",
        ),
        (json!({"type": "a", "title": "x", "color": "red"}), "color"),
        (json!({"title": "x"}), "type"),
    ] {
        let r = cp.post(path, &key, body.clone()).await.problem(422);
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    let good = json!({"type": "subscriber.new", "title": "Ana subscribed"});
    cp.post("/v1/users/nobody/notifications", &key, good.clone())
        .await
        .problem(404);
    // Another tenant's key names none of this tenant's users, whatever the body.
    cp.post(path, &other_key, good.clone()).await.problem(404);
    cp.post(path, &other_key, json!({})).await.problem(404);
    // The principals are never mixed.
    cp.post(path, &creator, good.clone()).await.problem(403);
    cp.get("/v1/me/notifications", &key).await.problem(403);
    cp.post("/v1/me/notifications/read-all", &key, json!({}))
        .await
        .problem(403);

    // A user token sees and marks only its own user's notifications.
    let theirs = cp.post(path, &key, good).await.expect(201).body;
    let id = theirs["id"].as_str().expect("id");
    let fans = cp.get("/v1/me/notifications", &fan).await.expect(200).body;
    assert_eq!(fans["items"], json!([]), "{fans}");
    cp.post(&format!("/v1/me/notifications/{id}/read"), &fan, json!({}))
        .await
        .problem(404);
    cp.post("/v1/me/notifications/read-all", &fan, json!({}))
        .await
        .expect(200);
    let mut sio = Sio::start(&cp.url).await;
    sio.connect("fan", &fan).await.expect("connects");
    let ack = sio
        .emit("fan", "mark-notification-read", json!({ "id": id }))
        .await;
    assert_error(&ack, "not_found");
    let list = cp
        .get("/v1/me/notifications", &creator)
        .await
        .expect(200)
        .body;
    assert_eq!(
        list["unreadCount"], 1,
        "the fan's marks left it unread: {list}"
    );
    // Paging through someone else's notification id gives nothing of theirs either.
    let page = cp
        .get(&format!("/v1/me/notifications?before={id}"), &fan)
        .await
        .expect(200)
        .body;
    assert_eq!(page["items"], json!([]));
    cp.get("/v1/me/notifications?limit=0", &creator)
        .await
        .problem(400);
    cp.get("/v1/me/notifications?limit=101", &creator)
        .await
        .problem(400);

    // A deleted user's notifications go with them: a new user with the same id starts empty.
    cp.delete("/v1/users/creator-1", &key).await.expect(204);
    let again = cp.user_with_token(&key, "creator-1", "Cleo again").await;
    let list = cp
        .get("/v1/me/notifications", &again)
        .await
        .expect(200)
        .body;
    assert_eq!(
        list,
        json!({"items": [], "unreadCount": 0, "nextBefore": null})
    );
}

async fn notifications_page_newest_first(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, _, creator) = pair(&cp).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let n = cp
            .post(
                "/v1/users/creator-1/notifications",
                &key,
                json!({"type": "post.liked", "title": format!("Like {i}")}),
            )
            .await
            .expect(201)
            .body;
        made.push(n["id"].as_str().expect("id").to_string());
    }
    // Read one in the middle, so the unread filter pages over a gap.
    cp.post(
        &format!("/v1/me/notifications/{}/read", made[2]),
        &creator,
        json!({}),
    )
    .await
    .expect(200);

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for expected in [2, 2, 1] {
        let path = match &before {
            Some(b) => format!("/v1/me/notifications?limit=2&before={b}"),
            None => "/v1/me/notifications?limit=2".to_string(),
        };
        let page = cp.get(&path, &creator).await.expect(200).body;
        let items = page["items"].as_array().expect("items");
        assert_eq!(items.len(), expected, "{page}");
        assert_eq!(page["unreadCount"], 4, "the whole count on every page");
        seen.extend(
            items
                .iter()
                .map(|n| n["id"].as_str().expect("id").to_string()),
        );
        before = page["nextBefore"].as_str().map(str::to_string);
    }
    assert_eq!(before, None, "the last page says so");
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let page = cp
        .get("/v1/me/notifications?limit=2&unread=true", &creator)
        .await
        .expect(200)
        .body;
    let ids = |p: &Value| -> Vec<String> {
        p["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|n| n["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids(&page), vec![made[4].clone(), made[3].clone()]);
    let next = page["nextBefore"].as_str().expect("more unread");
    let page = cp
        .get(
            &format!("/v1/me/notifications?limit=2&unread=true&before={next}"),
            &creator,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        ids(&page),
        vec![made[1].clone(), made[0].clone()],
        "skips the read one"
    );
    assert_eq!(page["nextBefore"], Value::Null);
}
