//! A creator's earnings per UTC day and source, computed from ledger entries (there is no second
//! copy of them): each payment to the creator counts on the day it was made, under its source,
//! with `net` what its entries gave the creator's earnings and `fee` what they gave the
//! platform; a refund of a payment counts on the day of the refund, under the payment's source,
//! with its (negative) entries. Adjustments and payouts are not earnings of a source and are left
//! out. Pure: the database reads the rows (`db::ledger::earnings_rows`).

use onda_shared::api::{EarningsDay, EarningsFigures, LedgerSource};
use std::collections::BTreeMap;
use time::{
    Date, OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description,
};

/// The longest range of one report, in days.
pub const MAX_DAYS: i64 = 366;
/// The range when none is asked for: the 30 days ending today.
pub const DEFAULT_DAYS: i64 = 30;

const DAY: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// One payment to the creator, or one refund of such a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub created_ms: i64,
    /// The payment's source (a refund's is its original's).
    pub source: LedgerSource,
    /// The transaction's entry on the creator's earnings.
    pub net: i64,
    /// Its entry on the platform account.
    pub fee: i64,
}

fn day_of(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

pub fn format_day(d: Date) -> String {
    d.format(DAY).unwrap_or_default()
}

fn add(f: &mut EarningsFigures, net: i64, fee: i64) {
    f.net += net;
    f.fee += fee;
    f.gross += net + fee;
    f.transactions += 1;
}

const ZERO: EarningsFigures = EarningsFigures {
    gross: 0,
    fee: 0,
    net: 0,
    transactions: 0,
};

/// The days that have rows, oldest first, each with its sources, and the whole range's total.
pub fn by_day(rows: &[Row]) -> (Vec<EarningsDay>, EarningsFigures) {
    let mut days: BTreeMap<Date, BTreeMap<String, EarningsFigures>> = BTreeMap::new();
    let mut total = ZERO;
    for r in rows {
        let figures = days
            .entry(day_of(r.created_ms))
            .or_default()
            .entry(r.source.as_str().to_string())
            .or_insert(ZERO);
        add(figures, r.net, r.fee);
        add(&mut total, r.net, r.fee);
    }
    let days = days
        .into_iter()
        .map(|(day, sources)| {
            let mut t = ZERO;
            for f in sources.values() {
                t.gross += f.gross;
                t.fee += f.fee;
                t.net += f.net;
                t.transactions += f.transactions;
            }
            EarningsDay {
                day: format_day(day),
                sources,
                total: t,
            }
        })
        .collect();
    (days, total)
}

/// The days of a report and the unix milliseconds `[start_ms, end_ms)` they cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: Date,
    pub to: Date,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A report's range from its `from` and `to` (`YYYY-MM-DD`, inclusive) at `now_ms`.
pub fn range(from: Option<&str>, to: Option<&str>, now_ms: i64) -> Result<Range, String> {
    let parse = |field: &str, v: &str| {
        Date::parse(v, DAY).map_err(|_| {
            format!("{field} = {v:?} is not a day such as 2026-12-01 (YYYY-MM-DD, UTC).")
        })
    };
    let to = match to {
        Some(v) => parse("to", v)?,
        None => day_of(now_ms),
    };
    let from = match from {
        Some(v) => parse("from", v)?,
        None => to - time::Duration::days(DEFAULT_DAYS - 1),
    };
    if from > to {
        return Err(format!(
            "from ({}) is after to ({}).",
            format_day(from),
            format_day(to)
        ));
    }
    if (to - from).whole_days() >= MAX_DAYS {
        return Err(format!(
            "from {} to {} is more than {MAX_DAYS} days; ask for a shorter range.",
            format_day(from),
            format_day(to)
        ));
    }
    let ms = |d: Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    Ok(Range {
        from,
        to,
        start_ms: ms(from),
        end_ms: to.next_day().map_or(i64::MAX, ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;
    // 2026-12-01T00:00:00Z
    const D1: i64 = 1_796_083_200_000;

    #[test]
    fn days_and_sources_add_up_and_refunds_count_on_their_day() {
        let rows = [
            Row {
                created_ms: D1 + 5,
                source: LedgerSource::Tip,
                net: 800,
                fee: 199,
            },
            Row {
                created_ms: D1 + DAY_MS - 1,
                source: LedgerSource::Tip,
                net: 80,
                fee: 20,
            },
            Row {
                created_ms: D1 + 10,
                source: LedgerSource::Purchase,
                net: 400,
                fee: 100,
            },
            // A refund of half the first tip, the next day.
            Row {
                created_ms: D1 + DAY_MS,
                source: LedgerSource::Tip,
                net: -400,
                fee: -99,
            },
        ];
        let (days, total) = by_day(&rows);
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].day, "2026-12-01");
        assert_eq!(
            days[0].sources["tip"],
            EarningsFigures {
                gross: 1099,
                fee: 219,
                net: 880,
                transactions: 2
            }
        );
        assert_eq!(days[0].sources["purchase"].gross, 500);
        assert_eq!(days[0].total.net, 1280);
        assert_eq!(days[1].day, "2026-12-02");
        assert_eq!(
            days[1].sources["tip"],
            EarningsFigures {
                gross: -499,
                fee: -99,
                net: -400,
                transactions: 1
            }
        );
        assert_eq!(
            total,
            EarningsFigures {
                gross: 1100,
                fee: 220,
                net: 880,
                transactions: 4
            }
        );
        assert_eq!(by_day(&[]), (Vec::new(), ZERO));
    }

    #[test]
    fn ranges_are_checked() {
        let Range {
            from,
            to,
            start_ms: start,
            end_ms: end,
        } = range(Some("2026-12-01"), Some("2026-12-02"), 0).expect("range");
        assert_eq!(
            (format_day(from), format_day(to)),
            ("2026-12-01".into(), "2026-12-02".into())
        );
        assert_eq!((start, end), (D1, D1 + 2 * DAY_MS));
        // The default: the 30 days ending today.
        let Range { from, to, .. } = range(None, None, D1 + 5).expect("default");
        assert_eq!(
            (format_day(from), format_day(to)),
            ("2026-11-02".into(), "2026-12-01".into())
        );
        for (from, to, says) in [
            (Some("2026-12-02"), Some("2026-12-01"), "after"),
            (Some("2026-13-01"), None, "YYYY-MM-DD"),
            (None, Some("yesterday"), "to = "),
            (Some("2025-01-01"), Some("2026-12-01"), "366"),
        ] {
            let e = range(from, to, D1).expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
        assert!(range(Some("2025-12-01"), Some("2026-11-30"), D1).is_ok());
    }
}
