//! The calls' clock: every [`TICK`], each replica reads every open call with whether its
//! parties are on the gateway (one query), asks `calls::plan` what time has done to it, and
//! writes that: a ring not answered in 30 s is missed, each unit that started is charged, the
//! one-minute warning goes out, a party gone 15 s ends the call. Every write is guarded
//! (`db::calls`), so replicas ticking at once change a call once, and a replica killed mid-call
//! leaves its calls to the others' next tick: no unit is charged twice, and at most the unit
//! that started during the gap waits one tick for its charge.

use super::super::{Gateway, Io};
use super::steps::{self, Charge, ChargeError, Told};
use crate::calls::{self, Open, Party};
use crate::db;
use crate::ledger::Account;
use crate::ticker::Ticker;
use onda_shared::api::{CallEndReason, Tenant};
use std::collections::HashMap;
use std::time::Duration;

/// How often the clock looks at open calls: the most a unit's charge or a missed call's end
/// waits after its time.
pub const TICK: Duration = Duration::from_millis(500);

impl Gateway {
    /// Runs the calls' clock until the gateway closes.
    pub(in crate::realtime) async fn call_clock(self) {
        let mut ticker = Ticker::new(TICK, self.stop.clone());
        while ticker.next().await {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "calls: the clock's tick");
            }
        }
    }

    async fn tick(&self) -> Result<(), sqlx::Error> {
        let open = {
            let mut conn = self.hub.db.conn().await?;
            let open = db::calls::open_calls(&mut conn, super::super::alive_since()).await?;
            let n = db::calls::in_progress(&mut conn).await?;
            self.hub.metrics.calls.in_progress.set(n);
            open
        };
        let mut tenants: HashMap<String, Option<Tenant>> = HashMap::new();
        for o in open {
            let tenant_id = o.call.tenant_id.clone();
            if !tenants.contains_key(&tenant_id) {
                let mut conn = self.hub.db.conn().await?;
                let t = db::tenants::get(&mut conn, &tenant_id).await?;
                tenants.insert(tenant_id.clone(), t);
            }
            let Some(Some(tenant)) = tenants.get(&tenant_id) else {
                continue;
            };
            let id = o.call.id.clone();
            if let Err(e) = self.step(tenant, o).await {
                tracing::warn!(call = %id, error = %e, "calls: a call's tick");
            }
        }
        Ok(())
    }

    /// Applies the clock's plan for one call.
    async fn step(&self, tenant: &Tenant, open: Open) -> Result<(), ChargeError> {
        let now = db::now_millis();
        let plan = calls::plan(&open, now);
        let mut call = open.call;
        for (party, change) in [
            (Party::Caller, plan.caller_gone),
            (Party::Callee, plan.callee_gone),
        ] {
            if let Some(since) = change {
                let mut conn = self.hub.db.conn().await?;
                db::calls::set_gone(&mut conn, &call.id, party, since).await?;
            }
        }
        if plan.end.is_none() && plan.charge_to.is_none() && !plan.check_warning {
            // Nothing to write: no transaction (on SQLite one would take the write lock).
            return Ok(());
        }
        let hub = &*self.hub;
        let mut told = Told::new(&tenant.id);
        let mut tx = hub.db.begin().await?;
        let changed = if let Some((reason, at)) = plan.end {
            steps::finish(&mut tx, (tenant, hub), &mut call, (reason, at), &mut told).await?
        } else if let Some(to) = plan.charge_to {
            match steps::charge(&mut tx, (tenant, hub), &mut call, to, (now, &mut told)).await? {
                Charge::Lost => false,
                Charge::Paid => true,
                Charge::Short { units } => {
                    // Ends at the boundary of the first unit the wallet could not pay.
                    let at = call.accepted_ms.unwrap_or(now) + units * call.unit_ms();
                    let end = (CallEndReason::BalanceExhausted, at.min(now));
                    steps::finish(&mut tx, (tenant, hub), &mut call, end, &mut told).await?
                }
            }
        } else if plan.check_warning {
            self.warning(&mut tx, tenant, &call, (now, &mut told))
                .await?
        } else {
            false
        };
        if changed {
            tx.commit().await?;
            self.tell(told).await;
        }
        Ok(())
    }

    /// The warning, if the balance (read again now) stops paying within a minute; else it is
    /// due later.
    async fn warning(
        &self,
        tx: &mut db::Conn,
        tenant: &Tenant,
        call: &calls::Record,
        (now, told): (i64, &mut Told),
    ) -> Result<bool, sqlx::Error> {
        let wallet = Account::Wallet(call.caller_id.clone());
        let balance = db::ledger::balance(tx, &tenant.id, &wallet).await?;
        let paid_until = calls::paid_until(call, call.units_charged, balance);
        let due = paid_until - calls::WARN_BEFORE_MS;
        if due > now {
            return db::calls::warned(tx, &call.id, now, Some(due)).await;
        }
        if !db::calls::warned(tx, &call.id, now, None).await? {
            return Ok(false);
        }
        told.both(
            call,
            "call-warning",
            steps::warning_body(call, paid_until, now),
        );
        Ok(true)
    }

    async fn tell(&self, told: Told) {
        match &self.io {
            Io::Local(io) => told.deliver(&self.hub, |rooms| io.to(rooms), None).await,
            Io::Postgres(io) => told.deliver(&self.hub, |rooms| io.to(rooms), None).await,
        }
    }
}
