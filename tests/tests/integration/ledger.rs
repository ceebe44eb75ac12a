//! The ledger against the real database, on SQLite and PostgreSQL: a seeded random driver of
//! credits, fan-to-creator payments (tips), refunds, adjustments, payouts requested and then
//! paid or rejected, and bursts of concurrent overspending,
//! with the invariants checked after every step (each transaction sums to zero, no wallet or
//! earnings below zero, kept balances equal the ones recomputed from entries, and the totals the
//! driver expects); and 50 spends at once from one wallet, of which exactly
//! floor(balance / price) succeed; and a second refund of one transaction waiting for the first.
//! Payments written in batches (`db::ledger::post_payments`, the tips' writer): each wallet pays
//! in the batch's order what it still holds, and batches and single postings at once from one
//! wallet never overdraw it.

use onda_control_plane::db::{self, Db, ledger::PostError};
use onda_control_plane::ledger::{self, Account};
use onda_shared::api::{AdjustedAccount, LedgerSource, Tenant, TenantStatus};
use onda_tests::db::{Backend, TestDb};
use onda_tests::on_both_backends;
use rand::{RngExt as _, SeedableRng as _};
use std::collections::BTreeMap;

on_both_backends!(
    random_operations_keep_the_invariants,
    fifty_spends_at_once_never_overdraw,
    a_second_refund_waits_for_the_first,
    a_batch_of_payments_pays_in_order_what_each_wallet_holds,
    batches_and_single_spends_at_once_never_overdraw,
);

async fn tenant(db: &Db, fee_bps: u32) -> Tenant {
    let t = Tenant {
        id: format!("tnt_ledger{}", rand::random::<u32>()),
        name: "Ledger".to_string(),
        email: String::new(),
        plan_id: "plan_premium".to_string(),
        status: TenantStatus::Active,
        currency: "EUR".to_string(),
        platform_fee_bps: fee_bps,
        created_at: String::new(),
        updated_at: String::new(),
    };
    let mut c = db.conn().await.expect("conn");
    db::tenants::insert(&mut c, &t).await.expect("tenant")
}

/// Posts `p` in a transaction of its own: the transaction, or why it was refused (rolled back).
async fn post(
    db: &Db,
    t: &Tenant,
    p: &ledger::Posting,
) -> Result<onda_shared::api::LedgerTransaction, PostError> {
    let mut tx = db.begin().await.expect("begin");
    let r = db::ledger::post(&mut tx, t, p).await?;
    tx.commit().await.expect("commit");
    Ok(r)
}

async fn assert_consistent(db: &Db, t: &Tenant, expected: &BTreeMap<String, i64>, step: &str) {
    let mut c = db.conn().await.expect("conn");
    let d = db::ledger::check(&mut c, &t.id).await.expect("check");
    assert!(d.ok, "after {step}: {d:?}");
    for (account, want) in expected {
        let a = Account::parse(account).expect("account");
        let got = db::ledger::balance(&mut c, &t.id, &a)
            .await
            .expect("balance");
        assert_eq!(got, *want, "after {step}: balance of {account}");
    }
}

async fn random_operations_keep_the_invariants(b: Backend) {
    let Some(test_db) = TestDb::new(b).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 10).await.expect("db");
    let t = tenant(&db, 1500).await;
    let fans = ["fan-a", "fan-b", "fan-c"];
    let creators = ["star-1", "star-2"];
    let seed = std::env::var("LEDGER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("ledger driver seed {seed} (LEDGER_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The balances the driver expects, from its own model of the rules.
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    let mut refundable: Vec<String> = Vec::new();
    // Requested payouts not decided yet: (creator, amount).
    let mut pending: Vec<(String, i64)> = Vec::new();
    let mut payout_steps = 0;
    let (mut ok, mut refused) = (0, 0);
    for step in 0..150 {
        let fan = fans[rng.random_range(0..fans.len())];
        let creator = creators[rng.random_range(0..creators.len())];
        let posting = match rng.random_range(0..12) {
            0..=2 => ledger::credit(fan, rng.random_range(1..5_000), "psp").expect("credit"),
            3..=5 => ledger::payment(
                LedgerSource::Tip,
                fan,
                creator,
                rng.random_range(1..3_000),
                t.platform_fee_bps,
            )
            .expect("payment"),
            6 | 7 if !refundable.is_empty() => {
                let id = refundable[rng.random_range(0..refundable.len())].clone();
                let mut c = db.begin().await.expect("begin");
                let (orig, done) = db::ledger::refundable(&mut c, &t.id, &id)
                    .await
                    .expect("read")
                    .expect("exists");
                drop(c);
                let want = rng.random_range(1..=orig.amount);
                match ledger::refund(&orig, done, Some(want), "driver") {
                    Ok(p) => p,
                    Err(_) => continue,
                }
            }
            10 => {
                // A payout of up to all the creator's earnings (sometimes more: refused).
                let have = model
                    .get(&Account::Earnings(creator.into()).key())
                    .copied()
                    .unwrap_or(0);
                let amount = rng.random_range(1..=have.max(1) + 100);
                ledger::payout_request(creator, amount, &format!("pyt_{step}")).expect("request")
            }
            11 if !pending.is_empty() => {
                let (who, amount) = pending.swap_remove(rng.random_range(0..pending.len()));
                let decision = if rng.random_bool(0.5) {
                    ledger::PayoutDecision::Paid {
                        reference: format!("psp_{step}"),
                    }
                } else {
                    ledger::PayoutDecision::Rejected {
                        reason: "driver".to_string(),
                    }
                };
                ledger::payout_decision(&who, amount, &decision).expect("decision")
            }
            8 => {
                let (who, account) = if rng.random_bool(0.5) {
                    (fan, AdjustedAccount::Wallet)
                } else {
                    (creator, AdjustedAccount::Earnings)
                };
                let amount = rng.random_range(-2_000..2_000);
                match ledger::adjustment(who, account, amount, "driver") {
                    Ok(p) => p,
                    Err(_) => continue,
                }
            }
            _ => {
                // A burst: several payments from one wallet at once, each of a third to all of
                // it; the database decides which fit.
                let have = model
                    .get(&Account::Wallet(fan.into()).key())
                    .copied()
                    .unwrap_or(0);
                if have < 3 {
                    continue;
                }
                let price = rng.random_range(have / 3..=have);
                let p = ledger::payment(LedgerSource::Purchase, fan, creator, price, 1500)
                    .expect("payment");
                let results = futures_join(&db, &t, &p, 6).await;
                let won = results.iter().filter(|r| r.is_ok()).count() as i64;
                assert_eq!(won, have / price, "step {step}: {have} / {price}");
                for r in results {
                    match r {
                        Ok(tx) => {
                            for e in &tx.entries {
                                *model.entry(e.account.clone()).or_default() += e.amount;
                            }
                            refundable.push(tx.id);
                            ok += 1;
                        }
                        Err(PostError::Insufficient { .. }) => refused += 1,
                        Err(e) => panic!("step {step}: {e}"),
                    }
                }
                assert_consistent(&db, &t, &model, &format!("burst at step {step}")).await;
                continue;
            }
        };
        let sum: i64 = posting.entries().iter().map(|(_, v)| v).sum();
        assert_eq!(sum, 0);
        let would_go_negative = posting
            .entries()
            .iter()
            .any(|(a, v)| a.floored() && model.get(&a.key()).copied().unwrap_or(0) + v < 0);
        match post(&db, &t, &posting).await {
            Ok(tx) => {
                assert!(!would_go_negative, "step {step}: {posting:?} overdrew");
                for e in &tx.entries {
                    *model.entry(e.account.clone()).or_default() += e.amount;
                }
                if tx.source == LedgerSource::Credit || tx.source.is_payment() {
                    refundable.push(tx.id);
                }
                if tx
                    .reference
                    .as_deref()
                    .is_some_and(|r| r.starts_with("pyt_"))
                {
                    pending.push((tx.user_id.clone(), tx.amount));
                }
                if tx.source == LedgerSource::Payout {
                    payout_steps += 1;
                }
                ok += 1;
            }
            Err(PostError::Insufficient { .. }) => {
                assert!(would_go_negative, "step {step}: {posting:?} refused");
                refused += 1;
            }
            Err(e) => panic!("step {step}: {e}"),
        }
        assert_consistent(&db, &t, &model, &format!("step {step}")).await;
    }
    // Every payout still pending is what payouts_pending holds.
    let held: i64 = pending.iter().map(|(_, a)| a).sum();
    assert_eq!(
        model
            .get(&Account::PayoutsPending.key())
            .copied()
            .unwrap_or(0),
        held
    );
    eprintln!("{ok} postings written ({payout_steps} of payouts), {refused} refused");
    assert!(ok > 50 && refused > 0, "{ok} written, {refused} refused");
    assert!(payout_steps > 0, "the driver made no payout");
    db.close().await;
}

/// `n` copies of `p` posted at once, each in its own transaction.
async fn futures_join(
    db: &Db,
    t: &Tenant,
    p: &ledger::Posting,
    n: usize,
) -> Vec<Result<onda_shared::api::LedgerTransaction, PostError>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (db, t, p) = (db.clone(), t.clone(), p.clone());
        set.spawn(async move { post(&db, &t, &p).await });
    }
    set.join_all().await
}

async fn fifty_spends_at_once_never_overdraw(b: Backend) {
    let Some(test_db) = TestDb::new(b).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 20).await.expect("db");
    let t = tenant(&db, 2000).await;
    post(
        &db,
        &t,
        &ledger::credit("fan", 1_000, "psp").expect("credit"),
    )
    .await
    .expect("credit");
    let price = 30;
    let p = ledger::payment(LedgerSource::Tip, "fan", "star", price, 2000).expect("tip");
    let results = futures_join(&db, &t, &p, 50).await;
    let won = results.iter().filter(|r| r.is_ok()).count() as i64;
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, PostError::Insufficient { .. }), "{e}");
        }
    }
    assert_eq!(
        won,
        1_000 / price,
        "exactly floor(1000 / 30) spends succeed"
    );
    let mut c = db.conn().await.expect("conn");
    let wallet = db::ledger::balance(&mut c, &t.id, &Account::Wallet("fan".into()))
        .await
        .expect("balance");
    assert_eq!(wallet, 1_000 - won * price);
    let earnings = db::ledger::balance(&mut c, &t.id, &Account::Earnings("star".into()))
        .await
        .expect("balance");
    assert_eq!(earnings, won * 24, "the creator gets 24 of each 30 (fee 6)");
    assert!(db::ledger::check(&mut c, &t.id).await.expect("check").ok);
    drop(c);
    db.close().await;
}

/// Two refunds of one transaction: the second reads what remains refundable only after the
/// first committed (PostgreSQL: it waits on the original's row lock, seen in
/// `pg_stat_activity`; SQLite: on the write lock), so it cannot refund the same amount again.
async fn a_second_refund_waits_for_the_first(b: Backend) {
    let Some(test_db) = TestDb::new(b).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 5).await.expect("db");
    let t = tenant(&db, 2000).await;
    // The wallet holds twice the credit: only the refund rule can stop a second refund.
    let credit = post(&db, &t, &ledger::credit("fan", 100, "a").expect("credit"))
        .await
        .expect("credit");
    post(&db, &t, &ledger::credit("fan", 100, "b").expect("credit"))
        .await
        .expect("credit");
    let mut first = db.begin().await.expect("begin");
    let (orig, refunded) = db::ledger::refundable(&mut first, &t.id, &credit.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(refunded, 0);
    let p = ledger::refund(&orig, refunded, None, "first").expect("refund");
    db::ledger::post(&mut first, &t, &p).await.expect("post");
    let second = tokio::spawn({
        let (db, tid, id) = (db.clone(), t.id.clone(), credit.id.clone());
        async move {
            let mut tx = db.begin().await.expect("begin");
            let (_, refunded) = db::ledger::refundable(&mut tx, &tid, &id)
                .await
                .expect("read")
                .expect("exists");
            refunded
        }
    });
    if b == Backend::Postgres {
        let url = test_db.url.clone();
        let what = "the second refund to wait on a lock";
        onda_tests::wait_for(what, std::time::Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                use sqlx::Connection as _;
                let mut c = sqlx::AnyConnection::connect(&url).await.expect("conn");
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut c)
                .await
                .expect("activity");
                let _ = c.close().await;
                (waiting > 0).then_some(())
            }
        })
        .await;
    }
    first.commit().await.expect("commit");
    assert_eq!(
        second.await.expect("task"),
        100,
        "the second sees the first's refund"
    );
    db.close().await;
}

/// Posts `postings` as one batch in a transaction of its own: which were written.
async fn post_batch(db: &Db, t: &Tenant, postings: &[ledger::Posting]) -> Vec<bool> {
    let ids: Vec<String> = postings
        .iter()
        .map(|_| format!("txn_batch{}", rand::random::<u64>()))
        .collect();
    let batch: Vec<db::ledger::Batched<'_>> = postings
        .iter()
        .zip(&ids)
        .map(|(posting, id)| db::ledger::Batched {
            posting,
            id,
            created_ms: db::now_millis(),
        })
        .collect();
    let mut tx = db.begin().await.expect("begin");
    let written = db::ledger::post_payments(&mut tx, t, &batch)
        .await
        .expect("batch");
    tx.commit().await.expect("commit");
    for (w, id) in written.iter().zip(&ids) {
        if let Some(w) = w {
            assert_eq!(&w.id, id, "the transaction keeps the id chosen for it");
        }
    }
    written.iter().map(Option::is_some).collect()
}

fn tip(payer: &str, amount: i64) -> ledger::Posting {
    ledger::payment(LedgerSource::Tip, payer, "star", amount, 2000).expect("tip")
}

async fn a_batch_of_payments_pays_in_order_what_each_wallet_holds(b: Backend) {
    let Some(test_db) = TestDb::new(b).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 5).await.expect("db");
    let t = tenant(&db, 2000).await;
    for (fan, amount) in [("ana", 100), ("bo", 10)] {
        let credit = ledger::credit(fan, amount, "psp").expect("credit");
        post(&db, &t, &credit).await.expect("credit");
    }
    // ana: 30, 50, then 30 > 20 left (refused), then 20; bo: 6, then 6 > 4 left (refused); cy
    // has no wallet at all.
    let batch = [
        tip("ana", 30),
        tip("bo", 6),
        tip("ana", 50),
        tip("bo", 6),
        tip("ana", 30),
        tip("cy", 5),
        tip("ana", 20),
    ];
    let written = post_batch(&db, &t, &batch).await;
    assert_eq!(written, [true, true, true, false, false, false, true]);
    let paid = 30 + 6 + 50 + 20;
    let expected: BTreeMap<String, i64> = [
        ("wallet:ana", 0),
        ("wallet:bo", 4),
        ("wallet:cy", 0),
        // 20 % of each tip to the platform, the rest to the creator.
        ("earnings:star", 24 + 5 + 40 + 16),
        ("platform", 6 + 1 + 10 + 4),
        ("external", -110),
    ]
    .into_iter()
    .map(|(a, v)| (a.to_string(), v))
    .collect();
    assert_eq!(expected["earnings:star"] + expected["platform"], paid);
    assert_consistent(&db, &t, &expected, "the batch").await;
    let mut c = db.conn().await.expect("conn");
    let check = db::ledger::check(&mut c, &t.id).await.expect("check");
    assert_eq!(
        check.transactions,
        2 + 4,
        "two credits and the four tips written"
    );
    drop(c);
    // A batch where no one can pay writes nothing.
    assert_eq!(
        post_batch(&db, &t, &[tip("ana", 1), tip("bo", 5)]).await,
        [false, false]
    );
    assert_consistent(&db, &t, &expected, "a batch refused whole").await;
    db.close().await;
}

async fn batches_and_single_spends_at_once_never_overdraw(b: Backend) {
    let Some(test_db) = TestDb::new(b).await else {
        return;
    };
    let db = Db::connect(&test_db.url, 20).await.expect("db");
    let t = tenant(&db, 2000).await;
    let credit = ledger::credit("fan", 1_000, "psp").expect("credit");
    post(&db, &t, &credit).await.expect("credit");
    // Eight batches of five tips of 30 and ten single tips of 30 at once: 50 tips, and the
    // wallet pays for 33 of them.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (db, t) = (db.clone(), t.clone());
        set.spawn(async move {
            let batch: Vec<ledger::Posting> = (0..5).map(|_| tip("fan", 30)).collect();
            post_batch(&db, &t, &batch).await
        });
    }
    for _ in 0..10 {
        let (db, t) = (db.clone(), t.clone());
        set.spawn(async move { vec![post(&db, &t, &tip("fan", 30)).await.is_ok()] });
    }
    let won = set
        .join_all()
        .await
        .iter()
        .flatten()
        .filter(|ok| **ok)
        .count() as i64;
    assert_eq!(won, 1_000 / 30, "exactly floor(1000 / 30) tips are written");
    let expected: BTreeMap<String, i64> = [
        ("wallet:fan", 1_000 - won * 30),
        ("earnings:star", won * 24),
        ("platform", won * 6),
    ]
    .into_iter()
    .map(|(a, v)| (a.to_string(), v))
    .collect();
    assert_consistent(&db, &t, &expected, "the burst").await;
    db.close().await;
}
