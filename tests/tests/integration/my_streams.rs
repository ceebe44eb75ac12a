//! Live streams as signed-in users see them (`/v1/me/streams`, the web app's watch and go-live
//! pages), through the real server on SQLite and PostgreSQL: a viewer reads a stream of their
//! tenant by slug or id with whether they may watch and what would let them in, never its key,
//! and nothing of another tenant's; a creator lists only their own streams with the RTMP
//! server and key, and sells a paid stream to subscribers or per view, but cannot make it
//! public or change another's.

use super::monetization::{problem, send, tenant};
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use reqwest::Method;
use serde_json::json;

on_both_backends!(
    viewers_see_a_stream_and_what_would_let_them_in,
    creators_see_and_sell_only_their_own_streams,
);

async fn viewers_see_a_stream_and_what_would_let_them_in(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 1000).await;
    let r = send(
        &cp,
        (Method::PATCH, "/v1/me"),
        &star,
        None,
        Some(json!({"subscription_price": 499})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let show = cp
        .post(
            "/v1/streams",
            &key,
            json!({"name": "Star Live", "slug": "star-live", "access": "subscribers", "creator_id": "star"}),
        )
        .await
        .expect(201)
        .body;
    let id = show["id"].as_str().expect("id").to_string();
    let stream_key = show["stream_key"].as_str().expect("key").to_string();
    // Another tenant's stream and user.
    let (_, other_key) = cp.tenant_with_key("Elsewhere", "plan_premium").await;
    let other = cp
        .post(
            "/v1/streams",
            &other_key,
            json!({"name": "Other Show", "slug": "other-show"}),
        )
        .await
        .expect(201)
        .body;

    // By slug and by id: the same view, not entitled, with the subscription that would be.
    for which in ["star-live", id.as_str()] {
        let v = cp
            .get(&format!("/v1/me/streams/{which}"), &fan)
            .await
            .expect(200);
        assert_eq!(v.body["id"], json!(id), "{}", v.text);
        assert_eq!(v.body["name"], "Star Live");
        assert_eq!(v.body["access"], "subscribers");
        assert_eq!(v.body["currency"], "USD");
        assert_eq!(
            v.body["creator"],
            json!({"id": "star", "display_name": "Star", "avatar_url": null,
                   "subscription_price": 499, "tip_minimum": 1})
        );
        assert_eq!(v.body["entitled"], false);
        assert_eq!(
            v.body["grant"],
            json!({"action": "subscribe", "creatorId": "star", "streamId": null, "price": 499,
                   "currency": "USD"})
        );
        assert_eq!(
            (v.body["viewers"].clone(), v.body["publishing"].clone()),
            (json!(0), json!(false))
        );
        assert!(
            !v.text.contains(&stream_key),
            "a viewer never sees the key: {}",
            v.text
        );
    }
    // Another tenant's stream is no stream, by slug or by id; so is one that does not exist.
    for missing in ["other-show", other["id"].as_str().expect("id"), "nope"] {
        let path = format!("/v1/me/streams/{missing}");
        problem(
            &send(&cp, (Method::GET, &path), &fan, None, None).await,
            404,
            "no live stream",
        );
    }
    // A fan has no streams of their own; tenant keys are no user tokens.
    let mine = cp.get("/v1/me/streams", &fan).await.expect(200).body;
    assert_eq!(mine, json!({"items": [], "next_cursor": null}));
    for path in ["/v1/me/streams", "/v1/me/streams/star-live"] {
        problem(
            &send(&cp, (Method::GET, path), &key, None, None).await,
            403,
            "user token",
        );
    }

    // Subscribed: entitled, no grant.
    let r = send(
        &cp,
        (Method::POST, "/v1/me/subscriptions"),
        &fan,
        Some("sub-1"),
        Some(json!({"creatorId": "star"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = cp
        .get("/v1/me/streams/star-live", &fan)
        .await
        .expect(200)
        .body;
    assert_eq!(
        (v["entitled"].clone(), v["grant"].clone()),
        (json!(true), json!(null))
    );
    // The creator is always let in to their own.
    let v = cp
        .get("/v1/me/streams/star-live", &star)
        .await
        .expect(200)
        .body;
    assert_eq!(v["entitled"], true);
    cp.stop().await;
}

async fn creators_see_and_sell_only_their_own_streams(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let (key, fan, star) = tenant(&cp, 1000).await;
    let show = cp
        .post(
            "/v1/streams",
            &key,
            json!({"name": "Star Live", "slug": "star-live", "access": "subscribers", "creator_id": "star"}),
        )
        .await
        .expect(201)
        .body;
    let id = show["id"].as_str().expect("id").to_string();
    // The tenant's other streams (no creator, or public) are not the star's.
    cp.post(
        "/v1/streams",
        &key,
        json!({"name": "House", "slug": "house"}),
    )
    .await
    .expect(201);
    let mine = cp.get("/v1/me/streams", &star).await.expect(200).body;
    let items = mine["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{mine}");
    let s = &items[0];
    assert_eq!(s["id"], json!(id));
    assert_eq!(
        s["stream_key"], show["stream_key"],
        "the creator gets the key for OBS"
    );
    assert_eq!(s["watch_page_path"], "/app/watch/star-live");
    // No cluster in this test: not placed on a node, so no RTMP server yet.
    assert_eq!(
        (s["rtmp_url"].clone(), s["publish_url"].clone()),
        (json!(null), json!(null))
    );
    assert_eq!(
        (s["viewers"].clone(), s["publishing"].clone()),
        (json!(0), json!(false))
    );

    // The creator sells it per view at 300; the subscribed-or-not fan is then offered a purchase.
    let path = format!("/v1/me/streams/{id}");
    let r = send(
        &cp,
        (Method::PATCH, &path),
        &star,
        None,
        Some(json!({"access": "pay_per_view", "price": 300})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["access"].clone(), r.body["price"].clone()),
        (json!("pay_per_view"), json!(300))
    );
    let v = cp.get(&path, &fan).await.expect(200).body;
    assert_eq!(v["grant"]["action"], "purchase");
    assert_eq!(v["grant"]["price"], 300);
    // Bad changes: public or token are the tenant's; prices are whole, positive, bounded.
    for (body, says) in [
        (json!({"access": "public"}), "a creator sells a stream"),
        (json!({"access": "token"}), "a creator sells a stream"),
        (json!({"price": 0}), "price"),
        (json!({"price": -5}), "price"),
    ] {
        problem(
            &send(&cp, (Method::PATCH, &path), &star, None, Some(body)).await,
            422,
            says,
        );
    }
    assert_eq!(
        send(
            &cp,
            (Method::PATCH, &path),
            &star,
            None,
            Some(json!({"price": 1.5}))
        )
        .await
        .status,
        422
    );
    // Not theirs: the fan's change is a 404, and so is a change of a stream without a creator.
    problem(
        &send(
            &cp,
            (Method::PATCH, &path),
            &fan,
            None,
            Some(json!({"price": 1})),
        )
        .await,
        404,
        "no live stream",
    );
    problem(
        &send(
            &cp,
            (Method::PATCH, "/v1/me/streams/house"),
            &star,
            None,
            Some(json!({"price": 1})),
        )
        .await,
        404,
        "no live stream",
    );
    // The tenant makes it public: now the creator can only look.
    cp.patch(
        &format!("/v1/streams/{id}"),
        &key,
        json!({"access": "public"}),
    )
    .await
    .expect(200);
    problem(
        &send(
            &cp,
            (Method::PATCH, &path),
            &star,
            None,
            Some(json!({"access": "subscribers"})),
        )
        .await,
        403,
        "only the platform",
    );
    let after = cp
        .get(&format!("/v1/streams/{id}"), &key)
        .await
        .expect(200)
        .body;
    assert_eq!(
        (after["access"].clone(), after["price"].clone()),
        (json!("public"), json!(300))
    );
    cp.stop().await;
}
