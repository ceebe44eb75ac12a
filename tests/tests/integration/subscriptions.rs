//! Subscriptions, memberships and the paywall of live streams through the real server, on
//! SQLite and PostgreSQL: a subscription bought from the wallet (money moved once with one key,
//! the fee split, the creator told, the ledger check passing), its renewal run twice at once
//! and again moving money once, a lapse on an empty wallet with the fan's notification,
//! tenant-declared subscribers moving no money, pay-per-view bought once and then answered a
//! playback token, viewers without access told what would grant it (402/403), and bad input
//! of every kind refused without moving anything.

use super::monetization::{Answer, assert_check_ok, problem, send, tenant, wallet, webhook_events};
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    a_subscription_moves_money_once_and_renews_once,
    a_renewal_the_wallet_cannot_pay_lapses_and_tells_the_fan,
    tenant_declared_subscribers_move_no_money,
    pay_per_view_is_bought_once_and_opens_playback,
    bad_subscriptions_and_streams_are_refused,
);

async fn subscribe(cp: &TestControlPlane, token: &str, key: &str, creator: &str) -> Answer {
    send(
        cp,
        (Method::POST, "/v1/me/subscriptions"),
        token,
        Some(key),
        Some(json!({ "creatorId": creator })),
    )
    .await
}

/// The creator `star` of [`tenant`] sells subscriptions at `price` (set with their own token).
async fn price(cp: &TestControlPlane, star: &str, price: i64) {
    let r = send(
        cp,
        (Method::PATCH, "/v1/me"),
        star,
        None,
        Some(json!({ "subscription_price": price })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_price"], json!(price));
}

/// The tenant moves the end of `user`'s subscription to `star` to a minute ago.
async fn due_now(cp: &TestControlPlane, key: &str, user: &str) -> Value {
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let past = past
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    cp.call(
        Method::PUT,
        &format!("/v1/creators/star/subscribers/{user}"),
        Some(key),
        Some(json!({ "ends_at": past })),
    )
    .await
    .expect(200)
    .body
}

async fn my_subscriptions(cp: &TestControlPlane, token: &str) -> Vec<Value> {
    cp.get("/v1/me/subscriptions", token).await.expect(200).body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn notifications(cp: &TestControlPlane, token: &str) -> Vec<Value> {
    cp.get("/v1/me/notifications", token).await.expect(200).body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn playback(cp: &TestControlPlane, token: &str, stream: &str) -> Answer {
    send(
        cp,
        (Method::POST, &format!("/v1/me/streams/{stream}/playback")),
        token,
        None,
        None,
    )
    .await
}

async fn stream(cp: &TestControlPlane, key: &str, body: Value) -> String {
    cp.post("/v1/streams", key, body).await.expect(201).body["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn a_subscription_moves_money_once_and_renews_once(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 3500).await;
    cp.post(
        "/v1/webhooks",
        &key,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
    )
    .await
    .expect(201);
    price(&cp, &star, 1000).await;
    let first = subscribe(&cp, &fan, "sub-1", "star").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let s = &first.body;
    assert_eq!(
        (&s["kind"], &s["status"], &s["price"], &s["renews"]),
        (
            &json!("wallet"),
            &json!("active"),
            &json!(1000),
            &json!(true)
        ),
        "{s}"
    );
    // The same key again: the same answer, nothing moved; another key while it runs: a 409.
    let again = subscribe(&cp, &fan, "sub-1", "star").await;
    assert!(again.replayed && again.text == first.text, "{}", again.text);
    problem(
        &subscribe(&cp, &fan, "sub-2", "star").await,
        409,
        "subscribed to \"star\" until",
    );
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(2500));
    // 20 % of 1000 to the platform, the rest to the creator, in one transaction.
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(800));
    let txn = s["transactionId"].as_str().expect("transaction");
    let t = cp
        .get(&format!("/v1/transactions/{txn}"), &key)
        .await
        .expect(200)
        .body;
    assert_eq!(t["source"], json!("subscription"));
    assert_eq!(t["reference"], s["id"]);
    assert_eq!(
        t["entries"],
        json!([{"account": "earnings:star", "amount": 800}, {"account": "platform", "amount": 200},
               {"account": "wallet:fan", "amount": -1000}])
    );
    assert_eq!(
        webhook_events(&cp, "subscription.created").await,
        vec![s.clone()]
    );
    let told = notifications(&cp, &star).await;
    assert_eq!(told[0]["type"], json!("subscriber.new"), "{told:?}");
    assert_eq!(told[0]["title"], json!("New subscriber: Fan One"));
    assert_eq!(my_subscriptions(&cp, &fan).await, vec![s.clone()]);
    assert_check_ok(&cp, &key, "the subscription").await;

    // Due now: two renewals at once and a third after renew it once.
    let due = due_now(&cp, &key, "fan").await;
    assert_eq!(
        (due["kind"].clone(), due["status"].clone()),
        (json!("wallet"), json!("ended"))
    );
    let (a, b2) = tokio::join!(cp.renew_subscriptions(), cp.renew_subscriptions());
    let c = cp.renew_subscriptions().await;
    assert_eq!(a.renewed + b2.renewed + c.renewed, 1, "{a:?} {b2:?} {c:?}");
    assert_eq!(a.lapsed + b2.lapsed + c.lapsed, 0);
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(1500));
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(1600));
    assert_eq!(
        cp.list_all("/v1/transactions?source=subscription", &key)
            .await
            .len(),
        2
    );
    let renewed = webhook_events(&cp, "subscription.renewed").await;
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    let now = my_subscriptions(&cp, &fan).await;
    assert_eq!(now[0]["status"], json!("active"), "{now:?}");
    assert_ne!(now[0]["transactionId"], s["transactionId"]);
    assert_eq!(renewed[0], now[0]);
    assert_check_ok(&cp, &key, "the renewal").await;

    // Cancelled: access stays until the end, and the end renews nothing.
    let r = cp
        .call(
            Method::DELETE,
            "/v1/me/subscriptions/star",
            Some(&fan),
            None,
        )
        .await
        .expect(200);
    assert_eq!(
        (r.body["status"].clone(), r.body["renews"].clone()),
        (json!("canceled"), json!(false))
    );
    due_now(&cp, &key, "fan").await;
    let r = cp.renew_subscriptions().await;
    assert_eq!((r.renewed, r.lapsed), (0, 0), "{r:?}");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(1500));
    assert_eq!(
        my_subscriptions(&cp, &fan).await[0]["status"],
        json!("ended")
    );
    cp.call(
        Method::DELETE,
        "/v1/me/subscriptions/star",
        Some(&fan),
        None,
    )
    .await
    .problem(404);
    // Ended, it may be bought again: a new period of the same subscription.
    let back = subscribe(&cp, &fan, "sub-3", "star").await;
    assert_eq!(
        (back.status, &back.body["id"]),
        (201, &s["id"]),
        "{}",
        back.text
    );
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(500));
    assert_check_ok(&cp, &key, "the new start").await;
    cp.stop().await;
}

async fn a_renewal_the_wallet_cannot_pay_lapses_and_tells_the_fan(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 1000).await;
    cp.post(
        "/v1/webhooks",
        &key,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["subscription.lapsed"]}),
    )
    .await
    .expect(201);
    price(&cp, &star, 1000).await;
    let s = subscribe(&cp, &fan, "sub-1", "star").await;
    assert_eq!(s.status, 201, "{}", s.text);
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(0));
    let members = stream(
        &cp,
        &key,
        json!({"name": "Members", "access": "subscribers", "creator_id": "star"}),
    )
    .await;
    assert_eq!(playback(&cp, &fan, &members).await.status, 201);
    due_now(&cp, &key, "fan").await;
    let (a, b2) = tokio::join!(cp.renew_subscriptions(), cp.renew_subscriptions());
    assert_eq!(
        (a.renewed + b2.renewed, a.lapsed + b2.lapsed),
        (0, 1),
        "{a:?} {b2:?}"
    );
    let mine = my_subscriptions(&cp, &fan).await;
    assert_eq!(
        (mine[0]["status"].clone(), mine[0]["renews"].clone()),
        (json!("ended"), json!(false)),
        "{mine:?}"
    );
    assert!(mine[0]["lapsedAt"].is_string(), "{mine:?}");
    let told = notifications(&cp, &fan).await;
    assert_eq!(told[0]["type"], json!("subscription.lapsed"), "{told:?}");
    let body = told[0]["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("held less than the 1000") && body.contains("Star"),
        "{body}"
    );
    assert_eq!(
        webhook_events(&cp, "subscription.lapsed").await,
        vec![mine[0].clone()]
    );
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(0));
    // Lapsed, the subscribers' stream is closed again and says what would open it.
    let r = playback(&cp, &fan, &members).await;
    problem(&r, 403, "subscribe for 1000");
    assert_eq!(r.body["grant"]["action"], json!("subscribe"));
    // Nothing more is due.
    let again = cp.renew_subscriptions().await;
    assert_eq!((again.renewed, again.lapsed), (0, 0));
    assert_check_ok(&cp, &key, "the lapse").await;
    cp.stop().await;
}

async fn tenant_declared_subscribers_move_no_money(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 500).await;
    let members = stream(
        &cp,
        &key,
        json!({"name": "Members", "access": "subscribers", "creator_id": "star"}),
    )
    .await;
    // No price: the creator sells nothing from the wallet; only the tenant can let fans in.
    let r = playback(&cp, &fan, &members).await;
    problem(&r, 403, "only the platform can make you a subscriber");
    assert_eq!(r.body["grant"]["action"], json!("tenant"));
    let path = "/v1/creators/star/subscribers/fan";
    let declared = cp
        .call(
            Method::PUT,
            path,
            Some(&key),
            Some(json!({"ends_at": "2099-01-31T00:00:00Z"})),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(
        (
            declared["kind"].clone(),
            declared["status"].clone(),
            declared["endsAt"].clone()
        ),
        (
            json!("tenant"),
            json!("active"),
            json!("2099-01-31T00:00:00.000Z")
        )
    );
    let again = cp
        .call(
            Method::PUT,
            path,
            Some(&key),
            Some(json!({"ends_at": "2099-02-28T00:00:00Z"})),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(again["id"], declared["id"]);
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(500));
    assert!(
        cp.list_all("/v1/transactions?source=subscription", &key)
            .await
            .is_empty()
    );
    assert_eq!(
        notifications(&cp, &star).await[0]["type"],
        json!("subscriber.new")
    );
    let token = playback(&cp, &fan, &members).await;
    assert_eq!(token.status, 201, "{}", token.text);
    assert!(
        token.body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').nth(1) == Some("fan")),
        "bound to the viewer: {}",
        token.text
    );
    // The fan cannot cancel what the tenant bills; the tenant removes it.
    cp.call(
        Method::DELETE,
        "/v1/me/subscriptions/star",
        Some(&fan),
        None,
    )
    .await
    .problem(409);
    cp.call(Method::DELETE, path, Some(&key), None)
        .await
        .expect(204);
    cp.call(Method::DELETE, path, Some(&key), None)
        .await
        .problem(404);
    assert_eq!(playback(&cp, &fan, &members).await.status, 403);
    // Bad declarations: a time that is not RFC 3339, a non-creator, unknown users, another
    // tenant's key, a user token.
    for bad in [
        json!({"ends_at": "tomorrow"}),
        json!({"ends_at": 5}),
        json!({}),
    ] {
        cp.call(Method::PUT, path, Some(&key), Some(bad))
            .await
            .problem(422);
    }
    cp.call(
        Method::PUT,
        "/v1/creators/fan/subscribers/star",
        Some(&key),
        Some(json!({"ends_at": "2099-01-31T00:00:00Z"})),
    )
    .await
    .problem(422);
    for p in [
        "/v1/creators/nobody/subscribers/fan",
        "/v1/creators/star/subscribers/nobody",
    ] {
        cp.call(
            Method::PUT,
            p,
            Some(&key),
            Some(json!({"ends_at": "2099-01-31T00:00:00Z"})),
        )
        .await
        .problem(404);
    }
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    cp.call(
        Method::PUT,
        path,
        Some(&other),
        Some(json!({"ends_at": "2099-01-31T00:00:00Z"})),
    )
    .await
    .problem(404);
    cp.call(
        Method::PUT,
        path,
        Some(&fan),
        Some(json!({"ends_at": "2099-01-31T00:00:00Z"})),
    )
    .await
    .problem(403);
    assert_check_ok(&cp, &key, "the declarations").await;
    cp.stop().await;
}

async fn pay_per_view_is_bought_once_and_opens_playback(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 1000).await;
    cp.post(
        "/v1/webhooks",
        &key,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["purchase.created"]}),
    )
    .await
    .expect(201);
    let show = cp
        .post(
            "/v1/streams",
            &key,
            json!({"name": "Big Show", "access": "pay_per_view", "creator_id": "star", "price": 700}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(
        (
            show["access"].clone(),
            show["creator_id"].clone(),
            show["price"].clone()
        ),
        (json!("pay_per_view"), json!("star"), json!(700))
    );
    let id = show["id"].as_str().expect("id").to_string();
    let buy = format!("/v1/me/streams/{id}/purchase");
    // Not bought yet: a 402 that names the price and the route.
    let r = playback(&cp, &fan, &id).await;
    problem(&r, 402, "buy it for 700");
    assert_eq!(
        r.body["grant"],
        json!({"action": "purchase", "creatorId": "star", "streamId": id, "price": 700,
               "currency": "USD"})
    );
    problem(
        &send(&cp, (Method::POST, &buy), &fan, None, None).await,
        400,
        "Idempotency-Key",
    );
    let first = send(&cp, (Method::POST, &buy), &fan, Some("buy-1"), None).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(
        (
            first.body["amount"].clone(),
            first.body["fee"].clone(),
            first.body["net"].clone(),
            first.body["buyerId"].clone()
        ),
        (json!(700), json!(140), json!(560), json!("fan"))
    );
    let again = send(&cp, (Method::POST, &buy), &fan, Some("buy-1"), None).await;
    assert!(again.replayed && again.text == first.text, "{}", again.text);
    let twice = send(&cp, (Method::POST, &buy), &fan, Some("buy-2"), None).await;
    problem(&twice, 409, "bought live stream \"Big Show\" already");
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(300));
    assert_eq!(wallet(&cp, &key, "star").await["earnings"], json!(560));
    let t = cp
        .get(
            &format!(
                "/v1/transactions/{}",
                first.body["id"].as_str().unwrap_or("")
            ),
            &key,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (t["source"].clone(), t["reference"].clone()),
        (json!("purchase"), json!(id))
    );
    assert_eq!(
        webhook_events(&cp, "purchase.created").await,
        vec![first.body.clone()]
    );
    let told = notifications(&cp, &star).await;
    assert_eq!(told[0]["type"], json!("payment.received"), "{told:?}");
    // Bought: playback answers a signed token bound to the viewer.
    let token = playback(&cp, &fan, &id).await;
    assert_eq!(token.status, 201, "{}", token.text);
    let tok = token.body["token"].as_str().expect("token");
    assert_eq!(tok.split('.').nth(1), Some("fan"), "{tok}");
    let slug = show["slug"].as_str().expect("slug");
    assert_eq!(
        token.body["watch_path"],
        json!(format!("/watch/{slug}.m3u8?token={tok}"))
    );
    // The creator watches their own stream and cannot buy it.
    assert_eq!(playback(&cp, &star, &id).await.status, 201);
    problem(
        &send(&cp, (Method::POST, &buy), &star, Some("own"), None).await,
        422,
        "your own stream",
    );
    // A fan whose wallet is short: 402, nothing moved, the key still usable.
    let poor = cp.user_with_token(&key, "poor", "Poor Fan").await;
    problem(
        &send(&cp, (Method::POST, &buy), &poor, Some("p-1"), None).await,
        402,
        "holds less than the 700",
    );
    assert_eq!(wallet(&cp, &key, "poor").await["balance"], json!(0));
    // Another tenant's user names no stream of theirs.
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    let stranger = cp.user_with_token(&other, "fan", "Stranger").await;
    problem(
        &send(&cp, (Method::POST, &buy), &stranger, Some("x-1"), None).await,
        404,
        "no live stream",
    );
    problem(&playback(&cp, &stranger, &id).await, 404, "no live stream");
    // The other modes (Premium has room for two streams): public plays and has nothing to
    // buy; a token stream's tokens come from the tenant's site.
    let open = stream(&cp, &key, json!({"name": "Open"})).await;
    assert_eq!(playback(&cp, &fan, &open).await.status, 201);
    problem(
        &send(
            &cp,
            (Method::POST, &format!("/v1/me/streams/{open}/purchase")),
            &fan,
            Some("open-1"),
            None,
        )
        .await,
        409,
        "not pay-per-view",
    );
    cp.patch(
        &format!("/v1/streams/{open}"),
        &key,
        json!({"access": "token"}),
    )
    .await
    .expect(200);
    let r = playback(&cp, &fan, &open).await;
    problem(&r, 403, "playback token from the platform");
    assert_eq!(r.body["grant"]["action"], json!("tenant"));
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(300));
    assert_check_ok(&cp, &key, "the purchase").await;
    cp.stop().await;
}

async fn bad_subscriptions_and_streams_are_refused(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 300).await;
    // No price yet; then prices that are not whole amounts from 1 to 10^12.
    problem(
        &subscribe(&cp, &fan, "s-0", "star").await,
        422,
        "sells no subscription",
    );
    for bad in [
        json!(0),
        json!(-5),
        json!(1.5),
        json!(1_000_000_000_001_i64),
        json!("9"),
    ] {
        let r = send(
            &cp,
            (Method::PATCH, "/v1/me"),
            &star,
            None,
            Some(json!({ "subscription_price": bad })),
        )
        .await;
        problem(&r, 422, " ");
        cp.call(
            Method::PUT,
            "/v1/users/star",
            Some(&key),
            Some(json!({"creator": true, "subscription_price": bad})),
        )
        .await
        .problem(422);
    }
    // A fan sells no subscriptions.
    problem(
        &send(
            &cp,
            (Method::PATCH, "/v1/me"),
            &fan,
            None,
            Some(json!({"subscription_price": 100})),
        )
        .await,
        422,
        "for creators",
    );
    let put = cp
        .call(
            Method::PUT,
            "/v1/users/star",
            Some(&key),
            Some(json!({"display_name": "Star", "creator": true, "subscription_price": 400})),
        )
        .await
        .expect(200);
    assert_eq!(put.body["subscription_price"], json!(400));
    // Yourself, a non-creator, nobody, another tenant's creator, no key, a short wallet.
    problem(&subscribe(&cp, &star, "s-1", "star").await, 422, "yourself");
    cp.user_with_token(&key, "other-fan", "Other").await;
    problem(
        &subscribe(&cp, &fan, "s-2", "other-fan").await,
        422,
        "not a creator",
    );
    problem(&subscribe(&cp, &fan, "s-3", "nobody").await, 404, "nobody");
    let (_, other) = cp.tenant_with_key("Other", "plan_premium").await;
    cp.call(
        Method::PUT,
        "/v1/users/their-star",
        Some(&other),
        Some(json!({"creator": true, "subscription_price": 10})),
    )
    .await
    .expect(201);
    problem(
        &subscribe(&cp, &fan, "s-4", "their-star").await,
        404,
        "their-star",
    );
    let r = send(
        &cp,
        (Method::POST, "/v1/me/subscriptions"),
        &fan,
        None,
        Some(json!({"creatorId": "star"})),
    )
    .await;
    problem(&r, 400, "Idempotency-Key");
    problem(
        &subscribe(&cp, &fan, "s-5", "star").await,
        402,
        "holds less than the 400",
    );
    // The refused key stored nothing: after a credit it buys the subscription.
    let c = send(
        &cp,
        (Method::POST, "/v1/users/fan/wallet/credits"),
        &key,
        Some("credit-1"),
        Some(json!({"amount": 100, "reference": "psp_2"})),
    )
    .await;
    assert_eq!(c.status, 201, "{}", c.text);
    assert_eq!(subscribe(&cp, &fan, "s-5", "star").await.status, 201);
    assert_eq!(wallet(&cp, &key, "fan").await["balance"], json!(0));
    // Two subscriptions at once with two keys: one is bought, the other refused; money once.
    let twin = cp.user_with_token(&key, "twin", "Twin").await;
    let c = send(
        &cp,
        (Method::POST, "/v1/users/twin/wallet/credits"),
        &key,
        Some("credit-2"),
        Some(json!({"amount": 1000, "reference": "psp_3"})),
    )
    .await;
    assert_eq!(c.status, 201, "{}", c.text);
    let (a, b2) = tokio::join!(
        subscribe(&cp, &twin, "t-1", "star"),
        subscribe(&cp, &twin, "t-2", "star")
    );
    let mut codes = [a.status, b2.status];
    codes.sort_unstable();
    assert_eq!(codes, [201, 409], "{} / {}", a.text, b2.text);
    assert_eq!(wallet(&cp, &key, "twin").await["balance"], json!(600));
    // A plan without monetization sells none.
    let (_, basic) = cp.tenant_with_key("Basic", "plan_standard").await;
    let basic_fan = cp.user_with_token(&basic, "fan", "Fan").await;
    let r = subscribe(&cp, &basic_fan, "b-1", "star").await;
    problem(&r, 403, "monetization");
    // Streams: the paid modes need a creator of the tenant, pay-per-view a whole price.
    for bad in [
        json!({"name": "A", "access": "subscribers"}),
        json!({"name": "B", "access": "pay_per_view", "creator_id": "star"}),
        json!({"name": "C", "access": "pay_per_view", "creator_id": "star", "price": 0}),
        json!({"name": "D", "access": "pay_per_view", "creator_id": "star", "price": 1.5}),
        json!({"name": "E", "access": "pay_per_view", "creator_id": "fan", "price": 10}),
        json!({"name": "F", "access": "subscribers", "creator_id": "their-star"}),
        json!({"name": "G", "access": "members"}),
    ] {
        cp.post("/v1/streams", &key, bad).await.problem(422);
    }
    let id = stream(&cp, &key, json!({"name": "Later"})).await;
    cp.patch(
        &format!("/v1/streams/{id}"),
        &key,
        json!({"access": "pay_per_view"}),
    )
    .await
    .problem(422);
    let ok = cp
        .patch(
            &format!("/v1/streams/{id}"),
            &key,
            json!({"access": "pay_per_view", "creator_id": "star", "price": 250}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (ok["access"].clone(), ok["price"].clone()),
        (json!("pay_per_view"), json!(250))
    );
    assert_eq!(
        cp.list_all("/v1/transactions?source=subscription", &key)
            .await
            .len(),
        2
    );
    assert_check_ok(&cp, &key, "the refusals").await;
    cp.stop().await;
}
