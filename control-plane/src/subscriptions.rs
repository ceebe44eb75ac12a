//! Creator subscriptions bought from the wallet and their renewal. A subscription is 30 days of
//! membership (see `memberships::entitled`) paid by one ledger transaction of source
//! `subscription` (the creator's price, the tenant's fee split off); tenant-declared ones move
//! no money and never renew.
//!
//! Renewal ([`renew_due`]) runs on every replica (the [`Renewer`] task, and tests call it
//! directly): each due subscription is renewed in one database transaction that moves it to its
//! next period with a conditional UPDATE, stores the idempotency key
//! `renew {subscription id} {period}` (see [`renewal_key`]) and posts the payment, so whichever replica gets there
//! first renews it and the others find nothing to do: one renewal per period, however many
//! replicas run it and however often. When the wallet does not cover the price, the
//! subscription lapses: it renews no more, access ends at its end, and the fan is told why
//! (notification `subscription.lapsed`; webhook `subscription.lapsed`).

use crate::db::{self, Db, ledger::PostError, ledger::StoredAnswer, subscriptions::Row};
use crate::ledger;
use crate::metrics::{LedgerMetrics, NotificationSource, RealtimeMetrics};
use crate::notifications::{self, Content};
use crate::realtime::protocol::NOTIFICATION;
use crate::realtime::recovery::{self, Entry, Recorded};
use crate::webhooks;
use onda_shared::api::{LedgerSource, Subscription, Tenant, WebhookEventType};
use serde_json::{Map, json};
use std::time::Duration;

/// How long one paid period lasts.
pub const PERIOD_MS: i64 = 30 * 86_400 * 1000;

/// The `type` of the creator's notification of a new subscriber.
pub const NEW_SUBSCRIBER: &str = "subscriber.new";
/// The `type` of the fan's notification that a renewal failed.
pub const LAPSED: &str = "subscription.lapsed";

/// How often the renewal task looks for due subscriptions.
pub const RENEWAL_INTERVAL: Duration = Duration::from_secs(60);

/// The idempotency route of renewals.
const RENEWAL_ROUTE: &str = "subscription renewal";

/// The idempotency key of a subscription's renewal into `period`. Its spaces keep it apart from
/// every key a client can send (1 to 255 visible ASCII characters, no space), so no request
/// can take a renewal's key and block it.
pub fn renewal_key(subscription_id: &str, period: i64) -> String {
    format!("renew {subscription_id} {period}")
}

/// The subscription as the API shows it, at `now_ms`.
pub fn to_api(row: &Row, currency: &str, now_ms: i64) -> Subscription {
    let status = if row.ends_ms <= now_ms {
        "ended"
    } else if row.renews || row.kind == db::subscriptions::TENANT {
        "active"
    } else {
        "canceled"
    };
    Subscription {
        id: row.id.clone(),
        creator_id: row.creator_id.clone(),
        user_id: row.user_id.clone(),
        kind: row.kind.clone(),
        status: status.to_string(),
        price: row.price,
        currency: currency.to_string(),
        renews: row.renews,
        started_at: db::messages::rfc3339_ms(row.started_ms),
        ends_at: db::messages::rfc3339_ms(row.ends_ms),
        transaction_id: row.transaction_id.clone(),
        lapsed_at: row.lapsed_ms.map(db::messages::rfc3339_ms),
    }
}

/// The creator's notification of a new subscriber.
pub fn new_subscriber(subscriber_name: &str, sub: &Subscription) -> Content {
    let mut data = Map::new();
    data.insert("subscriptionId".into(), json!(sub.id));
    data.insert("userId".into(), json!(sub.user_id));
    data.insert("kind".into(), json!(sub.kind));
    data.insert("endsAt".into(), json!(sub.ends_at));
    Content {
        kind: NEW_SUBSCRIBER.to_string(),
        title: format!("New subscriber: {subscriber_name}"),
        body: format!("{subscriber_name} subscribed until {}.", sub.ends_at),
        link: None,
        data,
    }
}

/// The fan's notification that the wallet did not cover a renewal.
fn lapsed(creator_name: &str, sub: &Subscription) -> Content {
    let price = sub.price.unwrap_or(0);
    let mut data = Map::new();
    data.insert("subscriptionId".into(), json!(sub.id));
    data.insert("creatorId".into(), json!(sub.creator_id));
    data.insert("price".into(), json!(price));
    data.insert("currency".into(), json!(sub.currency));
    Content {
        kind: LAPSED.to_string(),
        title: format!("Your subscription to {creator_name} ended"),
        body: format!(
            "Your wallet held less than the {price} (minor units of {}) your subscription to \
             {creator_name} renews at, so it was not renewed and ended on {}. Top up your \
             wallet and subscribe again to keep watching.",
            sub.currency, sub.ends_at
        ),
        link: None,
        data,
    }
}

/// What one run of the renewal did.
#[derive(Debug, Default)]
pub struct Report {
    pub renewed: u32,
    pub lapsed: u32,
    /// Renewed or changed by someone else meanwhile (another replica, a cancel).
    pub skipped: u32,
    /// What each renewal paid: (currency, amount in minor units).
    pub paid: Vec<(String, i64)>,
    /// Events to push after the commits, by tenant.
    pub pushes: Vec<(String, Vec<Recorded>)>,
}

enum Outcome {
    Renewed(String, i64),
    Lapsed(String, Vec<Recorded>),
    Skipped,
}

/// Renews every wallet subscription due at `now_ms` (up to 500 per run; the task runs again).
pub async fn renew_due(db: &Db, now_ms: i64) -> Result<Report, sqlx::Error> {
    let due = db::subscriptions::due(&mut *db.conn().await?, now_ms, 500).await?;
    let mut report = Report::default();
    for row in due {
        match renew_one(db, &row, now_ms).await? {
            Outcome::Renewed(currency, amount) => {
                report.renewed += 1;
                report.paid.push((currency, amount));
            }
            Outcome::Lapsed(tenant, recorded) => {
                report.lapsed += 1;
                report.pushes.push((tenant, recorded));
            }
            Outcome::Skipped => report.skipped += 1,
        }
    }
    Ok(report)
}

/// Renews one due subscription, or lets it lapse when the wallet does not cover it (or the
/// tenant's plan no longer has monetization).
async fn renew_one(db: &Db, row: &Row, now_ms: i64) -> Result<Outcome, sqlx::Error> {
    let Some(tenant) = db::tenants::get(&mut *db.conn().await?, &row.tenant_id).await? else {
        return Ok(Outcome::Skipped);
    };
    let monetized = crate::tips::monetized(&mut *db.conn().await?, &tenant)
        .await
        .is_ok();
    let (Some(price), true) = (row.price, monetized) else {
        return lapse(db, &tenant, row, now_ms).await;
    };
    let period = row.period + 1;
    let key = renewal_key(&row.id, period);
    let ends_ms = row.ends_ms.max(now_ms) + PERIOD_MS;
    let mut posting = ledger::payment(
        LedgerSource::Subscription,
        &row.user_id,
        &row.creator_id,
        price,
        tenant.platform_fee_bps,
    )
    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    posting.reference = Some(row.id.clone());
    let mut tx = db.begin().await?;
    // First the period's key: a replica renewing the same period at once waits on it
    // (PostgreSQL's unique index, SQLite's write lock) and then finds it taken.
    let mut answer = StoredAnswer {
        route: RENEWAL_ROUTE.to_string(),
        request_hash: crate::secrets::sha256_hex(&key),
        status: 0,
        body: String::new(),
    };
    if let Err(e) = db::ledger::store_answer(&mut tx, &tenant.id, &key, &answer).await {
        if db::is_unique_violation(&e) {
            return Ok(Outcome::Skipped);
        }
        return Err(e);
    }
    let t = match db::ledger::post(&mut tx, &tenant, &posting).await {
        Ok(t) => t,
        Err(PostError::Insufficient { .. }) => {
            drop(tx);
            return lapse(db, &tenant, row, now_ms).await;
        }
        Err(PostError::Database(e)) => return Err(e),
    };
    // The row moves on only from the period read: if anything renewed or cancelled it since,
    // nothing of this transaction is kept.
    if !db::subscriptions::advance(&mut tx, row, (ends_ms, &t.id), now_ms).await? {
        return Ok(Outcome::Skipped);
    }
    let renewed = Row {
        period,
        ends_ms,
        transaction_id: Some(t.id.clone()),
        ..row.clone()
    };
    let sub = to_api(&renewed, &tenant.currency, now_ms);
    answer.status = 201;
    answer.body = serde_json::to_string(&sub).map_err(|e| sqlx::Error::Encode(e.into()))?;
    db::ledger::complete_answer(&mut tx, &tenant.id, &key, &answer).await?;
    webhooks::enqueue(
        &mut tx,
        &tenant.id,
        WebhookEventType::SubscriptionRenewed,
        &sub,
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Renewed(tenant.currency.clone(), price))
}

/// Marks a due subscription lapsed and tells the fan, in one transaction.
async fn lapse(db: &Db, tenant: &Tenant, row: &Row, now_ms: i64) -> Result<Outcome, sqlx::Error> {
    let mut tx = db.begin().await?;
    if !db::subscriptions::lapse(&mut tx, row, now_ms).await? {
        return Ok(Outcome::Skipped);
    }
    let lapsed_row = Row {
        renews: false,
        lapsed_ms: Some(now_ms),
        ..row.clone()
    };
    let sub = to_api(&lapsed_row, &tenant.currency, now_ms);
    let outbox = webhooks::Outbox::load(&mut tx, &tenant.id).await?;
    outbox
        .enqueue(&mut tx, WebhookEventType::SubscriptionLapsed, &sub)
        .await?;
    let creator = db::users::get(&mut tx, &tenant.id, &row.creator_id)
        .await?
        .map_or_else(|| row.creator_id.clone(), |u| u.display_name);
    let content = lapsed(&creator, &sub);
    let push = notifications::store_with(&mut tx, &outbox, &row.user_id, &content, now_ms).await?;
    let entry = Entry::new(&row.user_id, NOTIFICATION, json!(push));
    let recorded = recovery::record(&mut tx, &tenant.id, vec![entry]).await?;
    tx.commit().await?;
    Ok(Outcome::Lapsed(tenant.id.clone(), recorded))
}

/// The renewal task of a replica: [`renew_due`] now and then, pushing the fans' notifications
/// and counting what it did.
#[derive(Clone)]
pub struct Renewer {
    pub db: Db,
    pub realtime: crate::realtime::Gateway,
    pub ledger: LedgerMetrics,
    pub notifications: RealtimeMetrics,
}

impl Renewer {
    /// One run at the current time.
    pub async fn run_once(&self) -> Result<Report, sqlx::Error> {
        let report = renew_due(&self.db, db::now_millis()).await?;
        for (currency, amount) in &report.paid {
            self.ledger.transaction(LedgerSource::Subscription);
            self.ledger
                .paid(LedgerSource::Subscription, currency, *amount);
        }
        for (tenant, recorded) in &report.pushes {
            self.notifications.notification(NotificationSource::Money);
            self.realtime.send(tenant, recorded).await;
        }
        if report.renewed + report.lapsed > 0 {
            tracing::info!(
                renewed = report.renewed,
                lapsed = report.lapsed,
                "subscriptions renewed"
            );
        }
        Ok(report)
    }

    /// Runs every `every` until `stop` is cancelled.
    pub fn spawn(
        self,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = crate::ticker::Ticker::new(every, stop);
            while ticker.next().await {
                if let Err(e) = self.run_once().await {
                    tracing::warn!(error = %e, "subscription renewal failed; retrying later");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_keys_are_per_period_and_no_client_can_send_one() {
        let key = renewal_key("sub_1", 2);
        assert_eq!(key, "renew sub_1 2");
        assert_ne!(key, renewal_key("sub_1", 3));
        assert!(!crate::ledger::idempotency_key_ok(&key));
    }
}
