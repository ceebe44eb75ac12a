//! Billing arithmetic: the lines of a tenant's monthly invoice from its plan history and its
//! metered usage. Pure — the database layer (`db::billing`) gathers the inputs — so the same
//! code prices drafts, finalized invoices and usage that arrived late, and is tested on its own.
//!
//! The rules (README "Billing" states them for users):
//! - A period is a calendar month in UTC.
//! - A day of the month is *active* when the tenant existed and was not suspended at any moment
//!   of it; it belongs to the plan in effect at its last active moment (a day with no active
//!   moment belongs to the plan in effect when it ends). Usage belongs to the day its report
//!   period starts in; realtime usage is recorded per UTC day already (a connection over
//!   midnight counts on both days).
//! - Per plan: the monthly price × active days / days in the month; the plan's included GB,
//!   listener hours, realtime connection minutes, messages, payments, call minutes and GB
//!   relayed by TURN are prorated the same way, and what the plan's days used beyond them is
//!   billed at the plan's overage prices (per GB, per listener hour, per 1000 connection minutes,
//!   per 1000 messages, per 1000 payments, per 1000 call minutes, per GB relayed).
//! - Amounts are micro-units of the currency, rounded half up once per line.
//! - Usage that reaches the control plane after its month's invoice was finalized is billed on
//!   a later invoice as the difference between that month's overage with it and without it, so
//!   the month is in the end billed exactly as if the usage had been on time.

use onda_shared::api::Plan;
use std::collections::HashMap;
use time::{Date, Month};

pub const DAY_MS: i64 = 86_400_000;
const HOUR_MS: u128 = 3_600_000;
const GB: u128 = 1_000_000_000;
const MINUTE_MS: u128 = 60_000;

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: Month,
}

impl Period {
    /// Parses `YYYY-MM` (years 2000 to 9999).
    pub fn parse(s: &str) -> Result<Period, String> {
        let bad = || format!("period {s:?} is not a month written YYYY-MM, such as 2026-11");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        if !(2000..=9999).contains(&year) {
            return Err(format!(
                "period {s:?}: the year must be between 2000 and 9999"
            ));
        }
        let month = Month::try_from(month).map_err(|_| bad())?;
        Ok(Period { year, month })
    }

    /// The month that contains a unix time in milliseconds.
    pub fn containing(ms: i64) -> Period {
        let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Period {
            year: t.year(),
            month: t.month(),
        }
    }

    fn first_day(self) -> Date {
        Date::from_calendar_date(self.year, self.month, 1).unwrap_or(Date::MIN)
    }

    pub fn start_ms(self) -> i64 {
        self.first_day().midnight().assume_utc().unix_timestamp() * 1000
    }

    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }

    pub fn days(self) -> u32 {
        u32::from(self.month.length(self.year))
    }

    pub fn next(self) -> Period {
        match self.month {
            Month::December => Period {
                year: self.year + 1,
                month: Month::January,
            },
            m => Period {
                year: self.year,
                month: m.next(),
            },
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, u8::from(self.month))
    }
}

/// A tenant's status in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Suspended,
    Deleted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
            Status::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Status {
        match s {
            "active" => Status::Active,
            "suspended" => Status::Suspended,
            _ => Status::Deleted,
        }
    }
}

/// From `at_ms` on (until the next change) the tenant is on `plan_id` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub at_ms: i64,
    pub plan_id: String,
    pub status: Status,
}

/// Usage of one day of the month (0 = the 1st), summed over stations, mounts and nodes, and
/// over the tenant's end users' realtime connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayUsage {
    pub day: u32,
    pub listener_ms: u64,
    pub bytes: u64,
    /// Time every socket of the tenant's end users was connected.
    pub connection_ms: u64,
    /// Messages the tenant's end users sent.
    pub messages: u64,
    /// Payments the tenant's end users made (tips, purchases, subscription periods, calls).
    pub transactions: u64,
    /// Time of the calls its end users were charged for.
    pub call_ms: u64,
    /// Bytes the TURN relays relayed for its end users (received from and sent to them).
    pub turn_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Plan,
    Bandwidth,
    ListenerHours,
    ConnectionMinutes,
    Messages,
    Transactions,
    CallMinutes,
    TurnBytes,
}

/// The metered kinds, in the order their lines follow a plan's line.
const METERED: [LineKind; 7] = [
    LineKind::Bandwidth,
    LineKind::ListenerHours,
    LineKind::ConnectionMinutes,
    LineKind::Messages,
    LineKind::Transactions,
    LineKind::CallMinutes,
    LineKind::TurnBytes,
];

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Plan => "plan",
            LineKind::Bandwidth => "bandwidth_overage",
            LineKind::ListenerHours => "listener_hours_overage",
            LineKind::ConnectionMinutes => "connection_minutes_overage",
            LineKind::Messages => "messages_overage",
            LineKind::Transactions => "transactions_overage",
            LineKind::CallMinutes => "call_minutes_overage",
            LineKind::TurnBytes => "turn_bytes_overage",
        }
    }
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    pub description: String,
    pub plan_id: String,
    /// The month the line's usage or days belong to (earlier than the invoice's for late usage).
    pub usage_period: String,
    /// Exact decimal where it can be (days, GB, thousands of messages), six places for listener
    /// hours and thousands of connection minutes.
    pub quantity: String,
    /// "month", "GB", "listener hour", "1000 connection minutes", "1000 messages" or "1000
    /// payments".
    pub unit: String,
    pub unit_price_micros: u64,
    pub amount_micros: u64,
}

/// What the days of one plan in a month add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlanMonth {
    plan_id: String,
    active_days: u32,
    listener_ms: u64,
    bytes: u64,
    connection_ms: u64,
    messages: u64,
    transactions: u64,
    call_ms: u64,
    turn_bytes: u64,
}

/// One metered quantity of one plan's days in a month, in its base unit (bytes, ms, messages):
/// what the days included, what went beyond, and the price of that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Metered {
    included: u64,
    over: u64,
    amount: u64,
}

/// Overage of one plan's days in a month.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Overage {
    plan_id: String,
    active_days: u32,
    bytes: Metered,
    listener_ms: Metered,
    connection_ms: Metered,
    messages: Metered,
    transactions: Metered,
    call_ms: Metered,
    turn_bytes: Metered,
}

impl Overage {
    fn of(&self, kind: LineKind) -> Metered {
        match kind {
            LineKind::Bandwidth => self.bytes,
            LineKind::ListenerHours => self.listener_ms,
            LineKind::ConnectionMinutes => self.connection_ms,
            LineKind::Messages => self.messages,
            LineKind::Transactions => self.transactions,
            LineKind::CallMinutes => self.call_ms,
            LineKind::TurnBytes => self.turn_bytes,
            LineKind::Plan => Metered::default(),
        }
    }
}

/// a × b / c rounded half up, in 128 bits (no product of u64s overflows).
fn mul_div_round(a: u64, b: u64, c: u128) -> u64 {
    let n = u128::from(a) * u128::from(b);
    u64::try_from((n + c / 2) / c).unwrap_or(u64::MAX)
}

/// a × b / c rounded down.
fn mul_div_floor(a: u64, b: u64, c: u128) -> u64 {
    u64::try_from(u128::from(a) * u128::from(b) / c).unwrap_or(u64::MAX)
}

/// `n / 10^places` written exactly, trailing zeros dropped ("12.5", "3").
fn decimal(n: u64, places: u32) -> String {
    let scale = 10u64.pow(places);
    let (int, frac) = (n / scale, n % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = places as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Per day of the month: whether the tenant was active at some moment of it, and its plan
/// (None before the tenant existed).
fn days(period: Period, history: &[Change]) -> Vec<(bool, Option<String>)> {
    let start = period.start_ms();
    (0..i64::from(period.days()))
        .map(|d| {
            let (ds, de) = (start + d * DAY_MS, start + (d + 1) * DAY_MS);
            // The state at the day's start, then each change inside the day: every one of these
            // segments lasts at least a millisecond.
            let at_start = history.iter().rev().find(|c| c.at_ms <= ds);
            let segments = at_start
                .into_iter()
                .chain(history.iter().filter(|c| c.at_ms > ds && c.at_ms < de));
            let mut active_plan = None;
            let mut last_plan = None;
            for c in segments {
                if c.status == Status::Active {
                    active_plan = Some(c.plan_id.clone());
                }
                last_plan = Some(c.plan_id.clone());
            }
            (active_plan.is_some(), active_plan.or(last_plan))
        })
        .collect()
}

/// The month per plan, in the order the plans first appear.
fn plan_months(period: Period, history: &[Change], usage: &[DayUsage]) -> Vec<PlanMonth> {
    let days = days(period, history);
    // Usage on a day before the tenant's first change (a node clock behind) goes to its first plan.
    let first_plan = history.first().map(|c| c.plan_id.clone());
    let mut out: Vec<PlanMonth> = Vec::new();
    fn entry<'a>(out: &'a mut Vec<PlanMonth>, plan: &str) -> &'a mut PlanMonth {
        let i = match out.iter().position(|p| p.plan_id == plan) {
            Some(i) => i,
            None => {
                out.push(PlanMonth {
                    plan_id: plan.to_string(),
                    active_days: 0,
                    listener_ms: 0,
                    bytes: 0,
                    connection_ms: 0,
                    messages: 0,
                    transactions: 0,
                    call_ms: 0,
                    turn_bytes: 0,
                });
                out.len() - 1
            }
        };
        &mut out[i]
    }
    for (active, plan) in &days {
        if *active && let Some(plan) = plan {
            entry(&mut out, plan).active_days += 1;
        }
    }
    for u in usage {
        let plan = days
            .get(u.day as usize)
            .and_then(|(_, p)| p.clone())
            .or_else(|| first_plan.clone());
        if let Some(plan) = plan {
            let m = entry(&mut out, &plan);
            m.listener_ms = m.listener_ms.saturating_add(u.listener_ms);
            m.bytes = m.bytes.saturating_add(u.bytes);
            m.connection_ms = m.connection_ms.saturating_add(u.connection_ms);
            m.messages = m.messages.saturating_add(u.messages);
            m.transactions = m.transactions.saturating_add(u.transactions);
            m.call_ms = m.call_ms.saturating_add(u.call_ms);
            m.turn_bytes = m.turn_bytes.saturating_add(u.turn_bytes);
        }
    }
    out
}

fn plan<'a>(plans: &'a HashMap<String, Plan>, id: &str) -> Result<&'a Plan, String> {
    plans
        .get(id)
        .ok_or_else(|| format!("plan {id:?} no longer exists, so the days on it cannot be priced"))
}

/// `used` against a monthly allowance of `allowance` units of `unit` base units, prorated by
/// `days` of `dim`, the rest priced at `price` per `per` base units.
fn metered(
    used: u64,
    allowance: u64,
    unit: u128,
    days: u64,
    dim: u128,
    price: u64,
    per: u128,
) -> Metered {
    let unit = u64::try_from(unit).unwrap_or(u64::MAX);
    let included = mul_div_floor(allowance.saturating_mul(unit), days, dim);
    let over = used.saturating_sub(included);
    Metered {
        included,
        over,
        amount: mul_div_round(over, price, per),
    }
}

fn overages(
    period: Period,
    history: &[Change],
    usage: &[DayUsage],
    plans: &HashMap<String, Plan>,
) -> Result<Vec<Overage>, String> {
    let dim = u128::from(period.days());
    plan_months(period, history, usage)
        .into_iter()
        .map(|m| {
            let p = &plan(plans, &m.plan_id)?.prices;
            let days = u64::from(m.active_days);
            Ok(Overage {
                plan_id: m.plan_id,
                active_days: m.active_days,
                bytes: metered(
                    m.bytes,
                    p.included_gb,
                    GB,
                    days,
                    dim,
                    p.overage_per_gb_micros,
                    GB,
                ),
                listener_ms: metered(
                    m.listener_ms,
                    p.included_listener_hours,
                    HOUR_MS,
                    days,
                    dim,
                    p.overage_per_listener_hour_micros,
                    HOUR_MS,
                ),
                connection_ms: metered(
                    m.connection_ms,
                    p.included_connection_minutes,
                    MINUTE_MS,
                    days,
                    dim,
                    p.overage_per_1000_connection_minutes_micros,
                    1000 * MINUTE_MS,
                ),
                messages: metered(
                    m.messages,
                    p.included_messages,
                    1,
                    days,
                    dim,
                    p.overage_per_1000_messages_micros,
                    1000,
                ),
                transactions: metered(
                    m.transactions,
                    p.included_transactions,
                    1,
                    days,
                    dim,
                    p.overage_per_1000_transactions_micros,
                    1000,
                ),
                call_ms: metered(
                    m.call_ms,
                    p.included_call_minutes,
                    MINUTE_MS,
                    days,
                    dim,
                    p.overage_per_1000_call_minutes_micros,
                    1000 * MINUTE_MS,
                ),
                turn_bytes: metered(
                    m.turn_bytes,
                    p.included_turn_gb,
                    GB,
                    days,
                    dim,
                    p.overage_per_turn_gb_micros,
                    GB,
                ),
            })
        })
        .collect()
}

/// An overage line of a metered `kind` for `over` base units beyond what the plan's days
/// included, or (`late`) beyond what was billed before.
fn overage_line(
    kind: LineKind,
    plan: &Plan,
    period: Period,
    o: &Overage,
    late: bool,
    over: u64,
    amount: u64,
) -> Line {
    let included = o.of(kind).included;
    let p = &plan.prices;
    let (what, included, quantity, unit, unit_price) = match kind {
        LineKind::ListenerHours => (
            "listener hours",
            decimal(mul_div_round(included, 1_000_000, HOUR_MS), 6),
            // Hours to six places: a listener hour is 3.6 million ms, not a power of ten.
            decimal(mul_div_round(over, 1_000_000, HOUR_MS), 6),
            "listener hour",
            p.overage_per_listener_hour_micros,
        ),
        LineKind::ConnectionMinutes => (
            "realtime connection minutes",
            decimal(mul_div_round(included, 1000, MINUTE_MS), 3),
            // Thousands of minutes to six places (0.06 s): the price is per 1000 minutes.
            decimal(mul_div_round(over, 1_000_000, 1000 * MINUTE_MS), 6),
            "1000 connection minutes",
            p.overage_per_1000_connection_minutes_micros,
        ),
        LineKind::Messages => (
            "messages",
            included.to_string(),
            decimal(over, 3),
            "1000 messages",
            p.overage_per_1000_messages_micros,
        ),
        LineKind::CallMinutes => (
            "call minutes",
            decimal(mul_div_round(included, 1000, MINUTE_MS), 3),
            // Thousands of minutes to six places, as connection minutes.
            decimal(mul_div_round(over, 1_000_000, 1000 * MINUTE_MS), 6),
            "1000 call minutes",
            p.overage_per_1000_call_minutes_micros,
        ),
        LineKind::TurnBytes => (
            "GB relayed by TURN",
            format!("{} GB", decimal(included, 9)),
            decimal(over, 9),
            "GB",
            p.overage_per_turn_gb_micros,
        ),
        LineKind::Transactions => (
            "payments",
            included.to_string(),
            decimal(over, 3),
            "1000 payments",
            p.overage_per_1000_transactions_micros,
        ),
        _ => (
            "GB delivered",
            format!("{} GB", decimal(included, 9)),
            decimal(over, 9),
            "GB",
            p.overage_per_gb_micros,
        ),
    };
    let description = if late {
        format!(
            "Late usage from {period}: {what} beyond the {} plan",
            plan.name
        )
    } else {
        let mut what = what.to_string();
        if let Some(first) = what.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        format!(
            "{what} beyond the {included} the {} plan includes for {} of {} days",
            plan.name,
            o.active_days,
            period.days()
        )
    };
    Line {
        kind,
        description,
        plan_id: plan.id.clone(),
        usage_period: period.to_string(),
        quantity,
        unit: unit.into(),
        unit_price_micros: unit_price,
        amount_micros: amount,
    }
}

/// The currency every plan of the lines shares; an error when they differ.
pub fn currency(lines: &[Line], plans: &HashMap<String, Plan>) -> Result<Option<String>, String> {
    let mut currency: Option<&str> = None;
    for l in lines {
        let c = plan(plans, &l.plan_id)?.prices.currency.as_str();
        match currency {
            Some(prev) if prev != c => {
                return Err(format!(
                    "the plans of this invoice are priced in {prev} and {c}; one invoice has one currency"
                ));
            }
            _ => currency = Some(c),
        }
    }
    Ok(currency.map(str::to_string))
}

/// The lines of a tenant's invoice for `period`: per plan its days, then overage lines for
/// what went beyond the plan's allowances.
pub fn month_lines(
    period: Period,
    history: &[Change],
    usage: &[DayUsage],
    plans: &HashMap<String, Plan>,
) -> Result<Vec<Line>, String> {
    let dim = period.days();
    let mut lines = Vec::new();
    for o in overages(period, history, usage, plans)? {
        let plan = plan(plans, &o.plan_id)?;
        if o.active_days > 0 {
            lines.push(Line {
                kind: LineKind::Plan,
                description: format!(
                    "{} plan, {} of {} days active",
                    plan.name, o.active_days, dim
                ),
                plan_id: plan.id.clone(),
                usage_period: period.to_string(),
                quantity: decimal(
                    mul_div_round(u64::from(o.active_days), 1_000_000, u128::from(dim)),
                    6,
                ),
                unit: "month".into(),
                unit_price_micros: plan.prices.monthly_micros,
                amount_micros: mul_div_round(
                    plan.prices.monthly_micros,
                    u64::from(o.active_days),
                    u128::from(dim),
                ),
            });
        }
        for kind in METERED {
            let m = o.of(kind);
            if m.over > 0 {
                lines.push(overage_line(
                    kind, plan, period, &o, false, m.over, m.amount,
                ));
            }
        }
    }
    Ok(lines)
}

/// Lines for usage of an already invoiced `period` that arrived after its invoice was
/// finalized: `all` is every usage row of the month, `billed` the rows invoices already billed.
pub fn late_lines(
    period: Period,
    history: &[Change],
    all: &[DayUsage],
    billed: &[DayUsage],
    plans: &HashMap<String, Plan>,
) -> Result<Vec<Line>, String> {
    let before = overages(period, history, billed, plans)?;
    let mut lines = Vec::new();
    for o in overages(period, history, all, plans)? {
        let plan = plan(plans, &o.plan_id)?;
        let b = before.iter().find(|b| b.plan_id == o.plan_id);
        for kind in METERED {
            let (now, then) = (o.of(kind), b.map(|b| b.of(kind)).unwrap_or_default());
            let over = now.over.saturating_sub(then.over);
            if over > 0 {
                let amount = now.amount.saturating_sub(then.amount);
                lines.push(overage_line(kind, plan, period, &o, true, over, amount));
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use onda_shared::api::{PlanFeatures, PlanLimits, PlanPrices};

    fn plan(id: &str, monthly: u64, gb: u64, hours: u64, per_gb: u64, per_hour: u64) -> Plan {
        Plan {
            id: id.into(),
            name: id.to_uppercase(),
            description: String::new(),
            limits: PlanLimits {
                max_stations: 1,
                max_mounts_per_station: 1,
                allowed_formats: vec![],
                max_bitrate_kbps: 64,
                max_listeners_per_station: 1,
                storage_bytes: 0,
                max_live_streams: 0,
                live_renditions: Vec::new(),
                attachment_bytes: 0,
                max_realtime_connections: 1,
            },
            features: PlanFeatures::default(),
            prices: PlanPrices {
                currency: "USD".into(),
                monthly_micros: monthly,
                overage_per_gb_micros: per_gb,
                overage_per_listener_hour_micros: per_hour,
                included_gb: gb,
                included_listener_hours: hours,
                included_connection_minutes: 0,
                overage_per_1000_connection_minutes_micros: 0,
                included_messages: 0,
                overage_per_1000_messages_micros: 0,
                included_transactions: 0,
                overage_per_1000_transactions_micros: 0,
                included_call_minutes: 0,
                overage_per_1000_call_minutes_micros: 0,
                included_turn_gb: 0,
                overage_per_turn_gb_micros: 0,
            },
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn plans(list: Vec<Plan>) -> HashMap<String, Plan> {
        list.into_iter().map(|p| (p.id.clone(), p)).collect()
    }

    fn at(period: Period, day: i64, hour: i64) -> i64 {
        period.start_ms() + day * DAY_MS + hour * 3_600_000
    }

    fn change(at_ms: i64, plan: &str, status: Status) -> Change {
        Change {
            at_ms,
            plan_id: plan.into(),
            status,
        }
    }

    #[test]
    fn periods() {
        let p = Period::parse("2026-11").expect("parse");
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(p.days(), 30);
        assert_eq!(p.start_ms(), 1_793_491_200_000); // 2026-11-01T00:00:00Z
        assert_eq!(
            p.end_ms(),
            Period::parse("2026-12").expect("parse").start_ms()
        );
        assert_eq!(Period::parse("2028-02").expect("parse").days(), 29);
        assert_eq!(
            Period::parse("2026-12").expect("parse").next().to_string(),
            "2027-01"
        );
        assert_eq!(Period::containing(p.start_ms()), p);
        assert_eq!(Period::containing(p.end_ms() - 1), p);
        for bad in [
            "2026-13", "2026-1", "26-11", "2026/11", "1999-12", "2026-00", "+026-11",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(decimal(12_500_000_000, 9), "12.5");
        assert_eq!(decimal(3_000_000, 6), "3");
        assert_eq!(decimal(5, 9), "0.000000005");
    }

    /// Active the whole month, under the allowances: only the plan line, the full price.
    #[test]
    fn a_full_month_under_the_allowance_costs_the_plan_price() {
        let p = Period::parse("2026-11").expect("parse");
        let plans = plans(vec![plan("a", 9_990_000, 100, 1000, 50_000, 2000)]);
        let history = [change(at(p, -40, 0), "a", Status::Active)];
        let usage = [DayUsage {
            day: 3,
            listener_ms: 3_600_000,
            bytes: 1_000_000_000,
            ..Default::default()
        }];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].amount_micros, 9_990_000);
        assert_eq!(lines[0].quantity, "1");
    }

    /// Created on the 11th at 23:00, suspended on the 21st at 01:00, resumed on the 26th at
    /// 12:00: active on days 11..=21 and 26..=30, 16 of 30. Price 9.99 × 16/30 = 5.328 → 5.328000.
    /// Included 100 GB × 16/30 = 53.333333333 GB; 60 GB used → 6.666666667 GB over at 0.05 =
    /// 0.333333 (0.33333333335 rounded). Hours: 1000 × 16/30 = 533.333333 h included (as ms,
    /// 1_920_000_000); 600 h used → 66.666667 h over at 0.002 = 0.133333.
    #[test]
    fn days_suspended_are_not_billed_and_allowances_follow_the_days() {
        let p = Period::parse("2026-11").expect("parse");
        let plans = plans(vec![plan("a", 9_990_000, 100, 1000, 50_000, 2000)]);
        let history = [
            change(at(p, 10, 23), "a", Status::Active),
            change(at(p, 20, 1), "a", Status::Suspended),
            change(at(p, 25, 12), "a", Status::Active),
        ];
        let usage = [
            DayUsage {
                day: 12,
                listener_ms: 400 * 3_600_000,
                bytes: 40_000_000_000,
                ..Default::default()
            },
            DayUsage {
                day: 27,
                listener_ms: 200 * 3_600_000,
                bytes: 20_000_000_000,
                ..Default::default()
            },
        ];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        let amounts: Vec<_> = lines.iter().map(|l| (l.kind, l.amount_micros)).collect();
        assert_eq!(
            amounts,
            [
                (LineKind::Plan, 5_328_000),
                (LineKind::Bandwidth, 333_333),
                (LineKind::ListenerHours, 133_333)
            ]
        );
        assert_eq!(lines[0].description, "A plan, 16 of 30 days active");
        assert_eq!(lines[0].quantity, "0.533333");
        assert_eq!(lines[1].quantity, "6.666666667");
        assert_eq!(lines[2].quantity, "66.666667");
    }

    /// A plan change on the 16th at 10:00 from a to b: days 1..=15 on a, 16..=30 on b (the 16th's
    /// last active moment is on b); usage of each day goes to its plan's allowance.
    #[test]
    fn a_plan_change_splits_the_month() {
        let p = Period::parse("2026-11").expect("parse");
        let plans = plans(vec![
            plan("a", 3_000_000, 0, 0, 1_000_000, 0),
            plan("b", 6_000_000, 10, 0, 100_000, 0),
        ]);
        let history = [
            change(at(p, -1, 0), "a", Status::Active),
            change(at(p, 15, 10), "b", Status::Active),
        ];
        let usage = [
            DayUsage {
                day: 0,
                listener_ms: 0,
                bytes: 2_000_000_000,
                ..Default::default()
            },
            DayUsage {
                day: 15,
                listener_ms: 0,
                bytes: 7_000_000_000,
                ..Default::default()
            },
        ];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.plan_id.as_str(), l.kind, l.amount_micros))
            .collect();
        // a: 3 × 15/30 = 1.5; 2 GB over (no allowance) × 1 = 2. b: 6 × 15/30 = 3; 7 GB of 5
        // included → 2 GB over × 0.1 = 0.2.
        assert_eq!(
            got,
            [
                ("a", LineKind::Plan, 1_500_000),
                ("a", LineKind::Bandwidth, 2_000_000),
                ("b", LineKind::Plan, 3_000_000),
                ("b", LineKind::Bandwidth, 200_000)
            ]
        );
    }

    /// Late usage is billed as the difference, so both invoices together bill the month as if it
    /// had all been on time, even across the allowance.
    #[test]
    fn late_usage_bills_the_difference() {
        let p = Period::parse("2026-10").expect("parse");
        let plans = plans(vec![plan("a", 1_000_000, 10, 0, 1_000_000, 0)]);
        let history = [change(at(p, -1, 0), "a", Status::Active)];
        let on_time = DayUsage {
            day: 5,
            listener_ms: 0,
            bytes: 9_000_000_000,
            ..Default::default()
        };
        let late = DayUsage {
            day: 30,
            listener_ms: 0,
            bytes: 2_500_000_000,
            ..Default::default()
        };
        let first = month_lines(p, &history, &[on_time], &plans).expect("lines");
        assert_eq!(first.len(), 1, "under the allowance: {first:?}");
        let extra = late_lines(p, &history, &[on_time, late], &[on_time], &plans).expect("late");
        assert_eq!(extra.len(), 1, "{extra:?}");
        assert_eq!(
            (extra[0].quantity.as_str(), extra[0].amount_micros),
            ("1.5", 1_500_000)
        );
        assert_eq!(extra[0].usage_period, "2026-10");
        let whole = month_lines(p, &history, &[on_time, late], &plans).expect("lines");
        let total = |l: &[Line]| l.iter().map(|l| l.amount_micros).sum::<u64>();
        assert_eq!(total(&first) + total(&extra), total(&whole));
        assert!(
            late_lines(p, &history, &[on_time], &[on_time], &plans)
                .expect("late")
                .is_empty()
        );
    }

    /// `p` with realtime allowances and prices.
    fn realtime(
        mut p: Plan,
        minutes: u64,
        per_1000_minutes: u64,
        messages: u64,
        per_1000: u64,
    ) -> Plan {
        p.prices.included_connection_minutes = minutes;
        p.prices.overage_per_1000_connection_minutes_micros = per_1000_minutes;
        p.prices.included_messages = messages;
        p.prices.overage_per_1000_messages_micros = per_1000;
        p
    }

    fn day(day: u32, connection_ms: u64, messages: u64) -> DayUsage {
        DayUsage {
            day,
            connection_ms,
            messages,
            ..Default::default()
        }
    }

    /// Active 16 of 30 days (as above). Connection minutes: 3000 a month → 1600 included
    /// (96 000 000 ms); 2000 min + 100.5 min used → 500.5 min over = 0.5005 thousand at 0.50 =
    /// 0.250250. Messages: 1000 a month → 533 included (533.33 rounded down); 1234 sent → 701
    /// over = 0.701 thousand at 2.00 = 1.402.
    #[test]
    fn realtime_usage_beyond_the_prorated_allowance_is_billed_per_1000() {
        let p = Period::parse("2026-11").expect("parse");
        let plans = plans(vec![realtime(
            plan("r", 0, 0, 0, 0, 0),
            3000,
            500_000,
            1000,
            2_000_000,
        )]);
        let history = [
            change(at(p, 10, 23), "r", Status::Active),
            change(at(p, 20, 1), "r", Status::Suspended),
            change(at(p, 25, 12), "r", Status::Active),
        ];
        let usage = [
            day(12, 2000 * 60_000, 1200),
            day(27, 100 * 60_000 + 30_000, 34),
        ];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        let got: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.kind,
                    l.quantity.as_str(),
                    l.unit.as_str(),
                    l.unit_price_micros,
                    l.amount_micros,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (LineKind::Plan, "0.533333", "month", 0, 0),
                (
                    LineKind::ConnectionMinutes,
                    "0.5005",
                    "1000 connection minutes",
                    500_000,
                    250_250
                ),
                (
                    LineKind::Messages,
                    "0.701",
                    "1000 messages",
                    2_000_000,
                    1_402_000
                ),
            ]
        );
        assert_eq!(
            lines[1].description,
            "Realtime connection minutes beyond the 1600 the R plan includes for 16 of 30 days"
        );
        assert_eq!(
            lines[2].description,
            "Messages beyond the 533 the R plan includes for 16 of 30 days"
        );
        assert_eq!(lines[1].kind.as_str(), "connection_minutes_overage");
        assert_eq!(lines[2].kind.as_str(), "messages_overage");
        // Under both allowances: only the plan line.
        let under = [day(12, 96_000_000, 533)];
        assert_eq!(
            month_lines(p, &history, &under, &plans)
                .expect("lines")
                .len(),
            1
        );
    }

    /// A plan change on the 16th at 10:00 from a to b: each day's realtime usage counts against
    /// its own plan's prorated allowance at its own plan's price. a: no messages included,
    /// 2500 sent → 2.5 thousand at 1.00. b: 3000 a month → 1500 for its 15 days; 2000 sent →
    /// 0.5 thousand at 0.50; 60 connection minutes of its 300 included → no line.
    #[test]
    fn a_plan_change_splits_realtime_usage_between_the_plans() {
        let p = Period::parse("2026-11").expect("parse");
        let plans = plans(vec![
            realtime(plan("a", 3_000_000, 0, 0, 0, 0), 0, 0, 0, 1_000_000),
            realtime(
                plan("b", 6_000_000, 0, 0, 0, 0),
                600,
                100_000,
                3000,
                500_000,
            ),
        ]);
        let history = [
            change(at(p, -1, 0), "a", Status::Active),
            change(at(p, 15, 10), "b", Status::Active),
        ];
        let usage = [day(0, 0, 2500), day(15, 0, 2000), day(20, 3_600_000, 0)];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        let got: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.plan_id.as_str(),
                    l.kind,
                    l.quantity.as_str(),
                    l.amount_micros,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", LineKind::Plan, "0.5", 1_500_000),
                ("a", LineKind::Messages, "2.5", 2_500_000),
                ("b", LineKind::Plan, "0.5", 3_000_000),
                ("b", LineKind::Messages, "0.5", 250_000),
            ]
        );
    }

    /// Realtime usage that arrives after the month was finalized is billed as the difference,
    /// like listener hours: both invoices together bill the month as if it had been on time.
    #[test]
    fn late_realtime_usage_bills_the_difference() {
        let p = Period::parse("2026-10").expect("parse");
        let plans = plans(vec![realtime(
            plan("a", 0, 0, 0, 0, 0),
            0,
            400_000,
            31_000,
            1_000_000,
        )]);
        let history = [change(at(p, -1, 0), "a", Status::Active)];
        let on_time = day(5, 0, 30_000);
        let late = day(30, 90_000, 2_500);
        let first = month_lines(p, &history, &[on_time], &plans).expect("lines");
        assert_eq!(first.len(), 1, "under the allowance: {first:?}");
        let extra = late_lines(p, &history, &[on_time, late], &[on_time], &plans).expect("late");
        let got: Vec<_> = extra
            .iter()
            .map(|l| (l.kind, l.quantity.as_str(), l.amount_micros))
            .collect();
        // 90 s = 0.0015 thousand minutes at 0.40 = 0.000600; 1500 messages over at 1.00.
        assert_eq!(
            got,
            [
                (LineKind::ConnectionMinutes, "0.0015", 600),
                (LineKind::Messages, "1.5", 1_500_000),
            ]
        );
        assert_eq!(
            extra[1].description,
            "Late usage from 2026-10: messages beyond the A plan"
        );
        let whole = month_lines(p, &history, &[on_time, late], &plans).expect("lines");
        let total = |l: &[Line]| l.iter().map(|l| l.amount_micros).sum::<u64>();
        assert_eq!(total(&first) + total(&extra), total(&whole));
    }

    #[test]
    fn a_tenant_with_no_active_day_and_no_usage_has_no_lines() {
        let p = Period::parse("2026-11").expect("parse");
        let plans = plans(vec![plan("a", 1, 0, 0, 0, 0)]);
        let suspended = [change(at(p, -3, 0), "a", Status::Suspended)];
        assert!(
            month_lines(p, &suspended, &[], &plans)
                .expect("lines")
                .is_empty()
        );
        let later = [change(p.end_ms(), "a", Status::Active)];
        assert!(
            month_lines(p, &later, &[], &plans)
                .expect("lines")
                .is_empty()
        );
        let deleted = [
            change(at(p, -3, 0), "a", Status::Active),
            change(at(p, 0, 0), "a", Status::Deleted),
        ];
        assert!(
            month_lines(p, &deleted, &[], &plans)
                .expect("lines")
                .is_empty()
        );
        let gone = HashMap::new();
        let active = [change(at(p, -3, 0), "a", Status::Active)];
        assert!(month_lines(p, &active, &[], &gone).is_err());
    }

    /// Payments are billed like messages: 300 a month on 16 of 30 days → 160 included; 1160
    /// payments → 1000 over = 1 thousand at 5.00.
    #[test]
    fn payments_beyond_the_prorated_allowance_are_billed_per_1000() {
        let p = Period::parse("2026-11").expect("parse");
        let mut payments = plan("pay", 0, 0, 0, 0, 0);
        payments.prices.included_transactions = 300;
        payments.prices.overage_per_1000_transactions_micros = 5_000_000;
        let plans = plans(vec![payments]);
        let history = [
            change(at(p, 10, 23), "pay", Status::Active),
            change(at(p, 20, 1), "pay", Status::Suspended),
            change(at(p, 25, 12), "pay", Status::Active),
        ];
        let usage = [
            DayUsage {
                day: 12,
                transactions: 1000,
                ..Default::default()
            },
            DayUsage {
                day: 27,
                transactions: 160,
                ..Default::default()
            },
        ];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        let over = lines
            .iter()
            .find(|l| l.kind == LineKind::Transactions)
            .expect("a payments line");
        assert_eq!(
            (
                over.kind.as_str(),
                over.quantity.as_str(),
                over.unit.as_str(),
                over.amount_micros
            ),
            ("transactions_overage", "1", "1000 payments", 5_000_000)
        );
        assert!(
            over.description
                .starts_with("Payments beyond the 160 the PAY plan includes for 16 of 30 days"),
            "{}",
            over.description
        );
    }

    /// Call minutes are billed like connection minutes: 1500 a month on 16 of 30 days → 800
    /// included; 2000 minutes charged → 1200 over = 1.2 thousand at 20.00 = 24.00.
    #[test]
    fn call_minutes_beyond_the_prorated_allowance_are_billed_per_1000() {
        let p = Period::parse("2026-11").expect("parse");
        let mut calls = plan("call", 0, 0, 0, 0, 0);
        calls.prices.included_call_minutes = 1500;
        calls.prices.overage_per_1000_call_minutes_micros = 20_000_000;
        let plans = plans(vec![calls]);
        let history = [
            change(at(p, 10, 23), "call", Status::Active),
            change(at(p, 20, 1), "call", Status::Suspended),
            change(at(p, 25, 12), "call", Status::Active),
        ];
        let usage = [DayUsage {
            day: 12,
            call_ms: 2000 * 60_000,
            ..Default::default()
        }];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        let over = lines
            .iter()
            .find(|l| l.kind == LineKind::CallMinutes)
            .expect("a call minutes line");
        assert_eq!(
            (
                over.kind.as_str(),
                over.quantity.as_str(),
                over.unit.as_str(),
                over.amount_micros
            ),
            (
                "call_minutes_overage",
                "1.2",
                "1000 call minutes",
                24_000_000
            )
        );
        assert!(
            over.description
                .starts_with("Call minutes beyond the 800 the CALL plan includes"),
            "{}",
            over.description
        );
    }

    /// Relayed TURN bytes are billed like bandwidth: 10 GB a month on 16 of 30 days → 5.333333333
    /// GB included; 8 GB relayed → 2.666666667 GB over at 0.50 = 1.333333.
    #[test]
    fn turn_bytes_beyond_the_prorated_allowance_are_billed_per_gb() {
        let p = Period::parse("2026-11").expect("parse");
        let mut relay = plan("relay", 0, 0, 0, 0, 0);
        relay.prices.included_turn_gb = 10;
        relay.prices.overage_per_turn_gb_micros = 500_000;
        let plans = plans(vec![relay]);
        let history = [
            change(at(p, 10, 23), "relay", Status::Active),
            change(at(p, 20, 1), "relay", Status::Suspended),
            change(at(p, 25, 12), "relay", Status::Active),
        ];
        let usage = [DayUsage {
            day: 12,
            turn_bytes: 8_000_000_000,
            ..Default::default()
        }];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        let over = lines
            .iter()
            .find(|l| l.kind == LineKind::TurnBytes)
            .expect("a TURN line");
        assert_eq!(
            (
                over.kind.as_str(),
                over.quantity.as_str(),
                over.unit.as_str(),
                over.amount_micros
            ),
            ("turn_bytes_overage", "2.666666667", "GB", 1_333_333)
        );
        assert!(
            over.description
                .starts_with("GB relayed by TURN beyond the 5.333333333 GB the RELAY plan"),
            "{}",
            over.description
        );
        // Within the allowance: no line.
        let usage = [DayUsage {
            day: 12,
            turn_bytes: 5_000_000_000,
            ..Default::default()
        }];
        let lines = month_lines(p, &history, &usage, &plans).expect("lines");
        assert!(lines.iter().all(|l| l.kind != LineKind::TurnBytes));
    }
}
