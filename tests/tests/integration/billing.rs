//! Billing against a real database, on SQLite and PostgreSQL: a month (November 2026) of
//! synthetic usage, stored by the same function the control channel stores node reports with,
//! and tenant histories with a suspension, a plan change and a deletion, written with the times
//! they would have had. The invoices the API answers must equal the figures computed by hand in
//! the comments below. Then: running billing again creates nothing; a tenant reads only its
//! own invoices; CSV carries the same lines; a finalized invoice never changes, and usage that
//! arrives after it is billed on the next month's invoice.

use onda_control_plane::billing::Status;
use onda_control_plane::db::{Db, tenant_history, usage};
use onda_shared::cluster::proto::{MountUsage, UsageReport};
use onda_tests::api::TestControlPlane;
use onda_tests::db::Backend;
use onda_tests::on_both_backends;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

on_both_backends!(a_month_of_usage_is_invoiced_as_computed_by_hand);

const HOUR: u64 = 3_600_000;
const GB: u64 = 1_000_000_000;
/// 2026-11-01T00:00:00Z.
const NOV: i64 = 1_793_491_200_000;
const DAY: i64 = 86_400_000;

/// Unix ms of November `day` (1-based) at `hour`:`minute`.
fn nov(day: i64, hour: i64, minute: i64) -> i64 {
    NOV + (day - 1) * DAY + hour * 3_600_000 + minute * 60_000
}

struct Seeder {
    db: Db,
    seq: AtomicU64,
}

impl Seeder {
    /// Stores one node report for a station's mount starting at `start_ms` (10 s long), as the
    /// control channel does; a resend of it changes nothing.
    async fn report(&self, node: &str, station: &str, start_ms: i64, listener_ms: u64, bytes: u64) {
        let r = UsageReport {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            period_start_ms: u64::try_from(start_ms).expect("positive"),
            period_end_ms: u64::try_from(start_ms + 10_000).expect("positive"),
            mounts: vec![MountUsage {
                station_id: station.into(),
                mount: "/radio.mp3".into(),
                listener_ms,
                peak_listeners: 1,
                sessions: 1,
                bytes_sent: bytes,
            }],
            turn: Vec::new(),
        };
        for attempt in 0..2 {
            let mut tx = self.db.begin().await.expect("begin");
            let fresh = usage::store(&mut tx, node, &r, 0).await.expect("store");
            tx.commit().await.expect("commit");
            assert_eq!(fresh, attempt == 0, "a resend is not stored again");
        }
    }

    /// Replaces a tenant's history with `changes` (ms, plan, status).
    async fn history(&self, tenant: &str, name: &str, changes: &[(i64, &str, Status)]) {
        let mut tx = self.db.begin().await.expect("begin");
        sqlx::query("DELETE FROM tenant_history WHERE tenant_id = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .expect("delete history");
        for (at, plan, status) in changes {
            tenant_history::record_tenant(&mut tx, tenant, *at, plan, *status, name)
                .await
                .expect("record");
        }
        tx.commit().await.expect("commit");
    }
}

async fn plan(cp: &TestControlPlane, name: &str, prices: Value) -> String {
    let body = json!({
        "name": name,
        "limits": {"max_stations": 1, "max_mounts_per_station": 1, "allowed_formats": ["mp3"],
                   "max_bitrate_kbps": 128, "max_listeners_per_station": 100,
                   "storage_bytes": 1_000_000, "max_live_streams": 0},
        "prices": prices,
    });
    let p = cp.post("/v1/plans", &cp.admin, body).await.expect(201).body;
    p["id"].as_str().expect("plan id").to_string()
}

async fn station(cp: &TestControlPlane, key: &str, name: &str) -> String {
    let s = cp
        .post(
            "/v1/stations",
            key,
            json!({"name": name, "mounts": [{"path": "/radio.mp3", "format": "mp3", "bitrate_kbps": 64}]}),
        )
        .await
        .expect(201)
        .body;
    s["id"].as_str().expect("station id").to_string()
}

/// (kind, plan, quantity, amount) of each line.
fn lines(inv: &Value) -> Vec<(String, String, String, u64)> {
    inv["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().expect("kind").to_string(),
                l["plan_id"].as_str().expect("plan").to_string(),
                l["quantity"].as_str().expect("quantity").to_string(),
                l["amount_micros"].as_u64().expect("amount"),
            )
        })
        .collect()
}

fn line(kind: &str, plan: &str, quantity: &str, amount: u64) -> (String, String, String, u64) {
    (kind.into(), plan.into(), quantity.into(), amount)
}

async fn invoice_of(cp: &TestControlPlane, tenant: &str, period: &str) -> Value {
    let found = cp
        .list_all(
            &format!("/v1/invoices?tenant_id={tenant}&period={period}"),
            &cp.admin,
        )
        .await;
    assert_eq!(
        found.len(),
        1,
        "one invoice of {tenant} for {period}: {found:?}"
    );
    found[0].clone()
}

async fn a_month_of_usage_is_invoiced_as_computed_by_hand(b: Backend) {
    let Some(cp) = TestControlPlane::start(b).await else {
        return;
    };
    let a = cp.admin.clone();
    let seeder = Seeder {
        db: Db::connect(cp.database_url(), 2).await.expect("connect"),
        seq: AtomicU64::new(1),
    };
    // Plan S: 10.00 a month, 100 GB and 1000 listener hours included, then 0.05 per GB and
    // 0.002 per listener hour. Plan L: 30.00, 500 GB and 5000 h, then 0.02 and 0.001.
    let s = plan(
        &cp,
        "Radio S",
        json!({"currency": "USD", "monthly_micros": 10_000_000, "included_gb": 100,
               "included_listener_hours": 1000, "overage_per_gb_micros": 50_000,
               "overage_per_listener_hour_micros": 2000}),
    )
    .await;
    let l = plan(
        &cp,
        "Radio L",
        json!({"currency": "USD", "monthly_micros": 30_000_000, "included_gb": 500,
               "included_listener_hours": 5000, "overage_per_gb_micros": 20_000,
               "overage_per_listener_hour_micros": 1000}),
    )
    .await;
    let (t1, k1) = cp.tenant_with_key("Steady FM", &s).await;
    let (t2, k2) = cp.tenant_with_key("Changing, Inc.", &s).await;
    let (t3, _) = cp.tenant_with_key("Newcomer", &s).await;
    let (t4, k4) = cp.tenant_with_key("Gone Radio", &s).await;
    let (t5, k5) = cp.tenant_with_key("Dormant", &s).await;
    let st1 = station(&cp, &k1, "Steady").await;
    let st2 = station(&cp, &k2, "Changing").await;
    let st4 = station(&cp, &k4, "Gone").await;
    let st5 = station(&cp, &k5, "Dormant").await;

    // T1, on S since October: every day of November two nodes report 40 h + 10 h and
    // 4 GB + 1 GB; a report starting 23:59:55 on 30 November counts for November (1 h, 0.5 GB),
    // one starting 23:59:55 on 31 October does not (1 GB).
    // Total 1501 h and 150.5 GB: 501 h over × 0.002 = 1.002000, 50.5 GB over × 0.05 = 2.525000,
    // plan 10.000000: 13.527000.
    seeder
        .history(&t1, "Steady FM", &[(NOV - 17 * DAY, &s, Status::Active)])
        .await;
    for day in 1..=30 {
        seeder
            .report("node-a", &st1, nov(day, 12, 0), 40 * HOUR, 4 * GB)
            .await;
        seeder
            .report("node-b", &st1, nov(day, 13, 0), 10 * HOUR, GB)
            .await;
    }
    seeder
        .report("node-a", &st1, nov(30, 23, 59) + 55_000, HOUR, GB / 2)
        .await;
    seeder.report("node-a", &st1, NOV - 5_000, HOUR, GB).await;

    // T2: created 10 November 14:00 on S, suspended 20 November 08:00, resumed 23 November
    // 18:00, moved to L 26 November 09:00. Active days on S: 10th-20th (11) and 23rd-25th (3),
    // 14; on L: 26th-30th, 5 (the 26th's last active moment is on L); 21st-22nd not billed.
    // S: 10 × 14/30 = 4.666667. Included 100 GB × 14/30 = 46.666666666 GB and 1000 h × 14/30
    // = 1,680,000,000 ms. Used on S's days: 30 + 0.2 (a trickle while suspended) + 20 = 50.2 GB
    // and 300 + 2 + 200 = 502 h: 3.533333334 GB over × 0.05 = 0.176667; 35.333333 h over
    // × 0.002 = 0.070667.
    // L: 30 × 5/30 = 5.000000. Included 83.333333333 GB and 833.333 h (3,000,000,000 ms). Used
    // 120 GB and 900 h: 36.666666667 GB × 0.02 = 0.733333; 66.666667 h × 0.001 = 0.066667.
    // Total 10.714001.
    seeder
        .history(
            &t2,
            "Changing, Inc.",
            &[
                (nov(10, 14, 0), &s, Status::Active),
                (nov(20, 8, 0), &s, Status::Suspended),
                (nov(23, 18, 0), &s, Status::Active),
                (nov(26, 9, 0), &l, Status::Active),
            ],
        )
        .await;
    seeder
        .report("node-a", &st2, nov(13, 20, 0), 300 * HOUR, 30 * GB)
        .await;
    seeder
        .report("node-b", &st2, nov(22, 1, 0), 2 * HOUR, GB / 5)
        .await;
    seeder
        .report("node-a", &st2, nov(24, 6, 0), 200 * HOUR, 20 * GB)
        .await;
    seeder
        .report("node-b", &st2, nov(28, 22, 0), 900 * HOUR, 120 * GB)
        .await;

    // T3 starts in December: no November invoice.
    seeder
        .history(&t3, "Newcomer", &[(NOV + 30 * DAY, &s, Status::Active)])
        .await;

    // T4, on S since October, deleted 5 November 12:00 (its station first): 5 days, 10 × 5/30 =
    // 1.666667; its 10 h and 1 GB, reported only after the deletion (a node back from a
    // partition), stay within the allowance. Its invoice keeps its name.
    cp.delete(&format!("/v1/stations/{st4}"), &k4)
        .await
        .expect(204);
    cp.delete(&format!("/v1/tenants/{t4}"), &a)
        .await
        .expect(204);
    seeder
        .report("node-a", &st4, nov(2, 9, 0), 10 * HOUR, GB)
        .await;
    seeder
        .history(
            &t4,
            "Gone Radio",
            &[
                (NOV - 31 * DAY, &s, Status::Active),
                (nov(5, 12, 0), &s, Status::Deleted),
            ],
        )
        .await;

    // T5, suspended since October: nothing to bill for November.
    seeder
        .history(
            &t5,
            "Dormant",
            &[
                (NOV - 40 * DAY, &s, Status::Active),
                (NOV - 12 * DAY, &s, Status::Suspended),
            ],
        )
        .await;

    let run = cp
        .post("/v1/billing/runs", &a, json!({"period": "2026-11"}))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (
            &run["created"],
            &run["updated"],
            &run["unchanged"],
            &run["skipped"]
        ),
        (&json!(3), &json!(0), &json!(0), &json!([])),
        "{run}"
    );

    let i1 = invoice_of(&cp, &t1, "2026-11").await;
    assert_eq!(
        lines(&i1),
        [
            line("plan", &s, "1", 10_000_000),
            line("bandwidth_overage", &s, "50.5", 2_525_000),
            line("listener_hours_overage", &s, "501", 1_002_000),
        ],
        "{i1}"
    );
    assert_eq!(i1["total_micros"], 13_527_000);
    assert_eq!(i1["status"], "draft");
    assert_eq!(i1["currency"], "USD");
    assert_eq!(i1["period_start"], "2026-11-01T00:00:00Z");
    assert_eq!(i1["period_end"], "2026-12-01T00:00:00Z");

    let i2 = invoice_of(&cp, &t2, "2026-11").await;
    assert_eq!(
        lines(&i2),
        [
            line("plan", &s, "0.466667", 4_666_667),
            line("bandwidth_overage", &s, "3.533333334", 176_667),
            line("listener_hours_overage", &s, "35.333333", 70_667),
            line("plan", &l, "0.166667", 5_000_000),
            line("bandwidth_overage", &l, "36.666666667", 733_333),
            line("listener_hours_overage", &l, "66.666667", 66_667),
        ],
        "{i2}"
    );
    assert_eq!(i2["total_micros"], 10_714_001);
    assert_eq!(i2["tenant_name"], "Changing, Inc.");
    assert_eq!(
        i2["lines"][0]["description"],
        "Radio S plan, 14 of 30 days active"
    );

    let i4 = invoice_of(&cp, &t4, "2026-11").await;
    assert_eq!(
        lines(&i4),
        [line("plan", &s, "0.166667", 1_666_667)],
        "{i4}"
    );
    assert_eq!(i4["tenant_name"], "Gone Radio");
    let none = cp
        .list_all(&format!("/v1/invoices?tenant_id={t3}"), &a)
        .await;
    assert!(none.is_empty(), "no November invoice for T3: {none:?}");

    // Billing the month again creates and changes nothing.
    let again = cp
        .post("/v1/billing/runs", &a, json!({"period": "2026-11"}))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (&again["created"], &again["updated"], &again["unchanged"]),
        (&json!(0), &json!(0), &json!(3)),
        "{again}"
    );
    assert_eq!(invoice_of(&cp, &t1, "2026-11").await, i1);
    assert_eq!(invoice_of(&cp, &t2, "2026-11").await, i2);

    // A tenant reads its own invoices only, and cannot bill.
    let own = cp.list_all("/v1/invoices", &k1).await;
    assert_eq!(own, std::slice::from_ref(&i1));
    let i2_id = i2["id"].as_str().expect("id");
    cp.get(&format!("/v1/invoices/{i2_id}"), &k1)
        .await
        .problem(404);
    cp.get(&format!("/v1/invoices?tenant_id={t2}"), &k1)
        .await
        .problem(404);
    cp.post("/v1/billing/runs", &k1, json!({"period": "2026-11"}))
        .await
        .problem(403);
    assert_eq!(
        cp.get(&format!("/v1/invoices/{i2_id}"), &k2)
            .await
            .expect(200)
            .body,
        i2
    );

    // CSV: one row per line, the same amounts (names with commas stay one field).
    let csv = cp
        .get(&format!("/v1/invoices/{i2_id}?format=csv"), &k2)
        .await
        .expect(200);
    assert!(
        csv.content_type.starts_with("text/csv"),
        "{}",
        csv.content_type
    );
    let mut reader = csv::Reader::from_reader(csv.text.as_bytes());
    let header = reader.headers().expect("header").clone();
    let col = |n: &str| header.iter().position(|h| h == n).expect(n);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 6);
    let amounts: Vec<&str> = rows.iter().map(|r| &r[col("amount")]).collect();
    assert_eq!(
        amounts,
        [
            "4.666667", "0.176667", "0.070667", "5.000000", "0.733333", "0.066667"
        ]
    );
    assert!(
        rows.iter()
            .all(|r| &r[col("tenant_name")] == "Changing, Inc."
                && &r[col("invoice_total")] == "10.714001")
    );

    // Bad periods are refused.
    for (body, status) in [
        (json!({"period": "2026-13"}), 422),
        (json!({"period": "2999-01"}), 422),
        (json!({"period": "2026-11", "extra": 1}), 422),
    ] {
        cp.post("/v1/billing/runs", &a, body).await.problem(status);
    }
    cp.get("/v1/invoices?period=11-2026", &a).await.problem(400);

    // Finalize November. Usage of November that arrives afterwards (a node back from a long
    // partition: 10 h, 5 GB on T1) changes no finalized invoice...
    let fin = cp
        .post(
            "/v1/billing/runs",
            &a,
            json!({"period": "2026-11", "finalize": true}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (&fin["finalized"], &fin["created"]),
        (&json!(3), &json!(0)),
        "{fin}"
    );
    let f1 = invoice_of(&cp, &t1, "2026-11").await;
    assert_eq!(f1["status"], "finalized");
    assert!(f1["finalized_at"].is_string());
    assert_eq!(lines(&f1), lines(&i1));
    seeder
        .report("node-c", &st1, nov(15, 3, 0), 10 * HOUR, 5 * GB)
        .await;
    // T5 had no November invoice, but the month is closed: its late 2 GB and 1 h are billed
    // on its next invoice too, all of it beyond an allowance of 0 active days.
    seeder
        .report("node-c", &st5, nov(20, 3, 0), HOUR, 2 * GB)
        .await;
    // Plan S's GB price changes after November was finalized: T1's late November usage is
    // still priced as November was (0.05); T5, which had no November invoice to freeze
    // prices in, gets today's (1.00).
    cp.patch(
        &format!("/v1/plans/{s}"),
        &a,
        json!({"prices": {"overage_per_gb_micros": 1_000_000}}),
    )
    .await
    .expect(200);
    // A plan in a tenant's history cannot be deleted (billing prices it).
    cp.delete(&format!("/v1/plans/{l}"), &a).await.problem(409);
    let after = cp
        .post("/v1/billing/runs", &a, json!({"period": "2026-11"}))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (
            &after["already_finalized"],
            &after["created"],
            &after["updated"]
        ),
        (&json!(3), &json!(0), &json!(0)),
        "{after}"
    );
    assert_eq!(invoice_of(&cp, &t1, "2026-11").await, f1);
    let f1_id = f1["id"].as_str().expect("id");
    assert_eq!(
        cp.post(&format!("/v1/invoices/{f1_id}/finalize"), &a, json!({}))
            .await
            .expect(200)
            .body,
        f1,
        "finalizing again changes nothing"
    );

    // ...and is billed on the next invoice (the running month's draft), all of it beyond
    // November's allowance already used: 5 GB × 0.05 = 0.250000 and 10 h × 0.002 = 0.020000,
    // next to the running month's plan line (a draft shows the whole month as it stands).
    let month = time::OffsetDateTime::now_utc().date().to_string()[..7].to_string();
    cp.post(
        "/v1/billing/runs",
        &a,
        json!({"period": month, "finalize": true}),
    )
    .await
    .problem(409);
    cp.post("/v1/billing/runs", &a, json!({ "period": month }))
        .await
        .expect(200);
    let d1 = invoice_of(&cp, &t1, &month).await;
    assert_eq!(
        lines(&d1),
        [
            line("plan", &s, "1", 10_000_000),
            line("bandwidth_overage", &s, "5", 250_000),
            line("listener_hours_overage", &s, "10", 20_000),
        ],
        "{d1}"
    );
    assert_eq!(d1["lines"][1]["usage_period"], "2026-11");
    let d5 = invoice_of(&cp, &t5, &month).await;
    assert_eq!(
        lines(&d5),
        [
            line("bandwidth_overage", &s, "2", 2_000_000),
            line("listener_hours_overage", &s, "1", 2000),
        ],
        "{d5}"
    );
    let d1_id = d1["id"].as_str().expect("id");
    cp.post(&format!("/v1/invoices/{d1_id}/finalize"), &a, json!({}))
        .await
        .problem(409);
    assert!(
        cp.list_all(&format!("/v1/invoices?tenant_id={t4}&period={month}"), &a)
            .await
            .is_empty(),
        "nothing to bill a tenant deleted in November for a later month"
    );
    // The CSV export of a month is every invoice of it, whatever the page size.
    let all = cp
        .get(
            &format!("/v1/invoices?period={month}&format=csv&limit=1"),
            &a,
        )
        .await
        .expect(200);
    let ids: std::collections::BTreeSet<String> = csv::Reader::from_reader(all.text.as_bytes())
        .records()
        .map(|r| r.expect("row")[0].to_string())
        .collect();
    assert!(ids.len() >= 3, "{}", all.text);
    let metrics = cp
        .call(reqwest::Method::GET, "/metrics", None, None)
        .await
        .expect(200)
        .text;
    assert!(
        metrics.contains("onda_billing_invoices_total{outcome=\"finalized\"} 3"),
        "{metrics}"
    );
    seeder.db.close().await;
    cp.stop().await;
}
