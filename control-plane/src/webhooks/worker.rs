//! The delivery worker: every `webhooks.poll_ms` it claims due deliveries (a lease per
//! delivery, so several replicas never send the same attempt at once) and posts them
//! concurrently, at most `webhooks.concurrency` at once and `webhooks.concurrency_per_tenant`
//! for one tenant, so a tenant whose endpoint hangs holds only its own slots. An attempt that
//! is not answered 2xx within `webhooks.timeout_ms` is scheduled again (see `retry`).

use super::{retry, signature, target};
use crate::config::WebhookSettings;
use crate::db::webhooks::{Attempt, Due, Outcome};
use crate::db::{self, Db};
use crate::metrics::WebhookMetrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// A lease outlives the attempt's timeout by this much, for the database writes around it.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Tenants looked at in one round.
const TENANTS_PER_ROUND: u32 = 1000;

/// Longest error text kept with a delivery.
const MAX_ERROR_CHARS: usize = 300;

/// The running worker; [`Worker::stop`] ends it.
#[derive(Debug)]
pub struct Worker {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Worker {
    pub fn start(
        db: Db,
        settings: WebhookSettings,
        metrics: WebhookMetrics,
    ) -> anyhow::Result<Worker> {
        let client = onda_shared::http::client_builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect is an answer other than 2xx: following it could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(target::GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .user_agent(concat!("Onda-Webhooks/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(settings.extra_roots.iter().cloned())
            .build()?;
        let sender = Arc::new(Sender {
            db,
            settings,
            metrics,
            client,
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(sender, cancel.clone()));
        Ok(Worker { cancel, task })
    }

    /// Stops claiming and abandons the attempts in flight: their leases expire and another
    /// round (here after a restart, or on another replica) sends them again.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "webhook worker ended abnormally");
        }
    }
}

struct Sender {
    db: Db,
    settings: WebhookSettings,
    metrics: WebhookMetrics,
    client: reqwest::Client,
}

/// Attempts in flight on this replica, by task, and how many per tenant.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<()>,
    tenants: HashMap<tokio::task::Id, String>,
    per_tenant: HashMap<String, usize>,
}

impl InFlight {
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => {
                    tracing::error!(error = %e, "a webhook attempt panicked");
                    e.id()
                }
            };
            if let Some(tenant) = self.tenants.remove(&id)
                && let Some(n) = self.per_tenant.get_mut(&tenant)
            {
                *n -= 1;
                if *n == 0 {
                    self.per_tenant.remove(&tenant);
                }
            }
        }
    }

    fn room(&self, tenant: &str, s: &WebhookSettings) -> usize {
        let mine = self.per_tenant.get(tenant).copied().unwrap_or(0);
        s.concurrency_per_tenant
            .saturating_sub(mine)
            .min(s.concurrency.saturating_sub(self.tasks.len()))
    }
}

async fn run(sender: Arc<Sender>, cancel: CancellationToken) {
    let mut inflight = InFlight::default();
    loop {
        inflight.reap();
        if let Err(e) = sender.round(&mut inflight).await {
            tracing::warn!(error = %e, "webhooks: cannot read due deliveries");
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(sender.settings.poll) => {}
        }
    }
    inflight.tasks.abort_all();
}

impl Sender {
    /// Updates the lag gauge, then claims and starts what this replica has room for, tenant
    /// by tenant (the longest-waiting first).
    async fn round(self: &Arc<Self>, inflight: &mut InFlight) -> Result<(), sqlx::Error> {
        let now = db::now_millis();
        let mut conn = self.db.conn().await?;
        let lag = db::webhooks::oldest_due_ms(&mut conn, now)
            .await?
            .map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0);
        self.metrics.lag_seconds.set(lag);
        let s = &self.settings;
        if inflight.tasks.len() >= s.concurrency {
            return Ok(());
        }
        let lease = now.saturating_add(
            i64::try_from((s.timeout + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX),
        );
        for tenant in db::webhooks::due_tenants(&mut conn, now, TENANTS_PER_ROUND).await? {
            let room = inflight.room(&tenant, s);
            if room == 0 {
                continue;
            }
            for due in db::webhooks::due(&mut conn, &tenant, now, room).await? {
                if !db::webhooks::claim(&mut conn, &due, now, lease).await? {
                    continue;
                }
                *inflight.per_tenant.entry(tenant.clone()).or_insert(0) += 1;
                let me = self.clone();
                let span = tracing::info_span!(
                    "webhook",
                    endpoint = %due.endpoint_id,
                    event = %due.event_id
                );
                let handle = inflight
                    .tasks
                    .spawn(async move { me.deliver(due).await }.instrument(span));
                inflight.tenants.insert(handle.id(), tenant.clone());
            }
            if inflight.tasks.len() >= s.concurrency {
                break;
            }
        }
        Ok(())
    }

    /// One attempt of a claimed delivery, recorded. The database connection is not held
    /// while the endpoint answers.
    async fn deliver(&self, due: Due) {
        let attempt = match self.db.conn().await {
            Ok(mut conn) => db::webhooks::attempt(&mut conn, &due).await,
            Err(e) => Err(e),
        };
        let attempt = match attempt {
            Ok(Some(a)) => a,
            // The endpoint was deleted with its deliveries meanwhile.
            Ok(None) => return,
            Err(e) => {
                // The lease expires and a later round tries again.
                tracing::warn!(error = %e, "webhooks: cannot read a delivery");
                return;
            }
        };
        let result = self.post(&due, &attempt).await;
        let now = db::now_millis();
        let outcome = decide(&self.settings, &attempt, result, now);
        self.metrics.attempt(match outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        });
        let recorded = match self.db.conn().await {
            Ok(mut conn) => db::webhooks::record(&mut conn, &due, now, &outcome).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            // Not recorded: the lease expires and the attempt is made again (at least once).
            tracing::warn!(error = %e, "webhooks: cannot record an attempt");
        }
    }

    /// Posts the event: the HTTP status, or why there is none.
    async fn post(&self, due: &Due, a: &Attempt) -> Result<u16, String> {
        let url = target::parse(&a.url)?;
        if let Some(ip) = target::refused_literal(&url, self.settings.allow_private) {
            return Err(format!(
                "{ip} is a private address; webhooks go to public ones"
            ));
        }
        let data: serde_json::Value = serde_json::from_str(&a.payload)
            .map_err(|e| format!("the stored event does not decode: {e}"))?;
        let created = db::messages::rfc3339_ms(a.created_ms);
        let body = signature::body(
            &due.event_id,
            a.event_type.as_str(),
            &created,
            &a.tenant_id,
            &data,
        );
        let timestamp = db::now();
        let sig = signature::sign(&a.secret, timestamp, &due.event_id, &body);
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("onda-event-id", &due.event_id)
            .header("onda-event-type", a.event_type.as_str())
            .header("onda-timestamp", timestamp.to_string())
            .header("onda-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(resp.status().as_u16())
    }
}

/// What an attempt's result means for the delivery.
fn decide(s: &WebhookSettings, a: &Attempt, result: Result<u16, String>, now: i64) -> Outcome {
    let (status, error) = match result {
        Ok(status) if (200..300).contains(&status) => return Outcome::Delivered { status },
        Ok(status) => (Some(status), format!("the endpoint answered {status}")),
        Err(e) => (None, e),
    };
    let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
    let failed = a.attempts.saturating_add(1);
    match retry::next_attempt_ms(s.retry_base, s.retry_for, failed, a.created_ms, now) {
        Some(at_ms) => Outcome::Retry {
            at_ms,
            status,
            error,
        },
        None => Outcome::Failed { status, error },
    }
}

/// A request error with its causes (reqwest's own message names only the URL).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within the timeout".to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use onda_shared::api::WebhookEventType;

    fn attempt(attempts: u32) -> Attempt {
        Attempt {
            url: "http://example.com/".to_string(),
            secret: "whsec_x".to_string(),
            event_type: WebhookEventType::WebhookTest,
            payload: "{}".to_string(),
            created_ms: 0,
            tenant_id: "tnt_1".to_string(),
            attempts,
        }
    }

    #[test]
    fn two_xx_delivers_anything_else_retries_until_the_window_ends() {
        let s = WebhookSettings::default();
        assert_eq!(
            decide(&s, &attempt(0), Ok(204), 1_000),
            Outcome::Delivered { status: 204 }
        );
        assert_eq!(
            decide(&s, &attempt(0), Ok(500), 1_000),
            Outcome::Retry {
                at_ms: 11_000,
                status: Some(500),
                error: "the endpoint answered 500".to_string()
            }
        );
        assert!(matches!(
            decide(&s, &attempt(2), Err("refused".to_string()), 1_000),
            Outcome::Retry {
                at_ms: 121_000,
                status: None,
                ..
            }
        ));
        let day_ms = 86_400_000;
        assert!(matches!(
            decide(&s, &attempt(30), Ok(302), day_ms - 1),
            Outcome::Failed {
                status: Some(302),
                ..
            }
        ));
    }
}
