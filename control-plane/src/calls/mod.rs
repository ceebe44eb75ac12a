//! 1-to-1 calls without I/O: the state machine a party's action moves (`act`), the clock's
//! decisions for an open call (`plan`), and the arithmetic of billing by started unit. The
//! gateway (`realtime::calls`) reads a call, asks these functions, and writes what they say
//! (`db::calls`), so every rule here is tested without a socket or a database.
//!
//! States: calling → ringing → in_progress → ended. Units: unit k of an answered call starts
//! at `accepted + k × unit` and is charged at its start; the price is per minute whatever the
//! unit, and the first n units cost `ceil(price × n × unit_secs / 60)` in all, so per-second
//! billing charges exactly a minute's price for a minute.

use onda_shared::api::{CallBilling, CallEndReason, CallState};

/// A call not answered within this ends as missed.
pub const RING_TIMEOUT_MS: i64 = 30_000;
/// A party away from the gateway longer than this ends the call (connection lost); one back
/// within it keeps the call.
pub const GONE_AFTER_MS: i64 = 15_000;
/// Both parties are warned this long before the caller's balance stops paying.
pub const WARN_BEFORE_MS: i64 = 60_000;
/// The largest `signal` payload (an SDP offer of a few tracks is 3–8 KB), as JSON text.
pub const MAX_SIGNAL_BYTES: usize = 16 * 1024;

/// A call as stored, with its times in unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub tenant_id: String,
    pub caller_id: String,
    pub callee_id: String,
    pub state: CallState,
    pub reason: Option<CallEndReason>,
    pub price_per_minute: i64,
    pub billing: CallBilling,
    pub currency: String,
    pub created_ms: i64,
    pub accepted_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub units_charged: i64,
    pub amount_charged: i64,
    pub next_charge_ms: Option<i64>,
    pub warn_at_ms: Option<i64>,
    pub warned_ms: Option<i64>,
    pub caller_gone_ms: Option<i64>,
    pub callee_gone_ms: Option<i64>,
    pub setup_ms: Option<i64>,
}

impl Record {
    pub fn unit_ms(&self) -> i64 {
        self.billing.unit_secs() * 1000
    }

    /// Whether `user` is the caller or the callee.
    pub fn party(&self, user: &str) -> Option<Party> {
        if user == self.caller_id {
            Some(Party::Caller)
        } else if user == self.callee_id {
            Some(Party::Callee)
        } else {
            None
        }
    }

    /// The other party's id.
    pub fn other(&self, party: Party) -> &str {
        match party {
            Party::Caller => &self.callee_id,
            Party::Callee => &self.caller_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Caller,
    Callee,
}

pub(crate) fn ceil_div(a: i128, b: i128) -> i128 {
    if a <= 0 { 0 } else { (a + b - 1) / b }
}

/// What units `[from, from + n)` of a call cost.
pub fn cost(price_per_minute: i64, billing: CallBilling, from: i64, n: i64) -> i64 {
    let (p, u) = (
        i128::from(price_per_minute),
        i128::from(billing.unit_secs()),
    );
    let upto = |k: i64| ceil_div(p * i128::from(k) * u, 60);
    i64::try_from(upto(from + n) - upto(from)).unwrap_or(i64::MAX)
}

/// How many units from unit `from` on `balance` pays, in order.
pub fn affordable(price_per_minute: i64, billing: CallBilling, from: i64, balance: i64) -> i64 {
    if price_per_minute <= 0 {
        return i64::MAX;
    }
    // ceil(p·k·u/60) ≤ T  ⇔  p·k·u ≤ 60·T for a whole T: the first k units fit within what
    // was paid before `from` plus the balance.
    let (p, u) = (
        i128::from(price_per_minute),
        i128::from(billing.unit_secs()),
    );
    let paid_before = ceil_div(p * i128::from(from) * u, 60);
    let total = paid_before + i128::from(balance.max(0));
    let last = (60 * total) / (p * u);
    i64::try_from((last - i128::from(from)).max(0)).unwrap_or(i64::MAX)
}

/// What the caller must hold before the callee's devices ring: one minute.
pub fn ring_minimum(price_per_minute: i64, billing: CallBilling) -> i64 {
    cost(price_per_minute, billing, 0, 60 / billing.unit_secs())
}

/// Units started by `at` of a call accepted at `accepted_ms` (a unit starts at its first
/// millisecond; the first at acceptance).
pub fn started_units(accepted_ms: i64, unit_ms: i64, at: i64) -> i64 {
    if at <= accepted_ms {
        1
    } else {
        ((at - accepted_ms) / unit_ms + 1).max(1)
    }
}

/// Units a call that ended at `ended_ms` owes: each one it was in, at least the first.
pub fn owed_units(accepted_ms: i64, unit_ms: i64, ended_ms: i64) -> i64 {
    (ceil_div(i128::from(ended_ms - accepted_ms), i128::from(unit_ms)) as i64).max(1)
}

/// What a party asks of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Accept,
    Reject,
    End,
}

impl Act {
    pub fn event(self) -> &'static str {
        match self {
            Act::Accept => "accept-call",
            Act::Reject => "reject-call",
            Act::End => "end-call",
        }
    }
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ringing → in progress: billing starts.
    Answered,
    Ended(CallEndReason),
    /// Done already (a retry, or the call ended meanwhile): nothing changes.
    Already,
}

/// What `act` by `party` does to a call in `state`, or why it may not.
pub fn act(state: CallState, party: Party, act: Act) -> Result<Outcome, String> {
    use CallState::*;
    match (act, party, state) {
        (_, _, Ended) => Ok(Outcome::Already),
        (Act::Accept, Party::Caller, _) => Err("Only the one called accepts a call.".to_string()),
        (Act::Accept, Party::Callee, Calling | Ringing) => Ok(Outcome::Answered),
        (Act::Accept, Party::Callee, InProgress) => Ok(Outcome::Already),
        (Act::Reject, Party::Caller, _) => {
            Err("Only the one called rejects a call; end-call cancels one you made.".to_string())
        }
        (Act::Reject, Party::Callee, Calling | Ringing) => {
            Ok(Outcome::Ended(CallEndReason::Rejected))
        }
        (Act::Reject, Party::Callee, InProgress) => {
            Err("This call was answered: end-call hangs it up.".to_string())
        }
        (Act::End, Party::Caller, Calling | Ringing) => {
            Ok(Outcome::Ended(CallEndReason::Cancelled))
        }
        (Act::End, Party::Callee, Calling | Ringing) => Ok(Outcome::Ended(CallEndReason::Rejected)),
        (Act::End, _, InProgress) => Ok(Outcome::Ended(CallEndReason::HungUp)),
    }
}

/// An open call as the clock sees it: the record and whether each party is on the gateway.
#[derive(Debug, Clone)]
pub struct Open {
    pub call: Record,
    pub caller_online: bool,
    pub callee_online: bool,
}

/// What the clock does to an open call now, in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// A party left (Some(ms): gone since) or came back (None), for the record.
    pub caller_gone: Option<Option<i64>>,
    pub callee_gone: Option<Option<i64>>,
    /// End the call, at this time.
    pub end: Option<(CallEndReason, i64)>,
    /// Charge units up to (not including) this one.
    pub charge_to: Option<i64>,
    /// Look at the caller's balance for the warning.
    pub check_warning: bool,
}

fn gone(online: bool, since: Option<i64>, now: i64) -> (Option<Option<i64>>, Option<i64>) {
    match (online, since) {
        (true, Some(_)) => (Some(None), None),
        (false, None) => (Some(Some(now)), Some(now)),
        (_, since) => (None, since),
    }
}

/// The clock's decisions for `open` at `now`.
pub fn plan(open: &Open, now: i64) -> Plan {
    let c = &open.call;
    let mut p = Plan::default();
    let (caller_change, caller_since) = gone(open.caller_online, c.caller_gone_ms, now);
    let (callee_change, callee_since) = gone(open.callee_online, c.callee_gone_ms, now);
    p.caller_gone = caller_change;
    p.callee_gone = callee_change;
    let lost = [caller_since, callee_since]
        .into_iter()
        .flatten()
        .map(|since| since + GONE_AFTER_MS)
        .filter(|at| *at <= now)
        .min();
    match c.state {
        CallState::Calling | CallState::Ringing => {
            if now >= c.created_ms + RING_TIMEOUT_MS {
                p.end = Some((CallEndReason::Missed, now));
            } else if caller_since.is_some_and(|s| s + GONE_AFTER_MS <= now) {
                // The caller went away while it rang: nobody is there to answer to.
                p.end = Some((CallEndReason::Cancelled, now));
            }
        }
        CallState::InProgress => {
            if let Some(at) = lost {
                p.end = Some((CallEndReason::ConnectionLost, at.max(now)));
            } else {
                if c.next_charge_ms.is_some_and(|next| next <= now)
                    && let Some(accepted) = c.accepted_ms
                {
                    p.charge_to = Some(started_units(accepted, c.unit_ms(), now));
                }
                p.check_warning = c.warned_ms.is_none() && c.warn_at_ms.is_some_and(|w| w <= now);
            }
        }
        CallState::Ended => {}
    }
    p
}

/// When the caller's balance stops paying a call that has charged `units_charged` units and
/// holds `balance` more: the start of the first unit it cannot pay (unix ms).
pub fn paid_until(call: &Record, units_charged: i64, balance: i64) -> i64 {
    let more = affordable(call.price_per_minute, call.billing, units_charged, balance);
    let units = units_charged.saturating_add(more);
    call.accepted_ms
        .unwrap_or(call.created_ms)
        .saturating_add(units.saturating_mul(call.unit_ms()))
}

#[cfg(test)]
mod tests;
