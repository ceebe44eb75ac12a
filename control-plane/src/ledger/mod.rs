//! The ledger's rules, without I/O: which accounts a movement of value touches and by how much.
//! Every value-moving operation (a credit, a fan-to-creator payment, a refund, an adjustment, a
//! payout's request and its decision) becomes a [`Posting`]: a set of entries over [`Account`]s in integer minor units
//! that sum to zero. [`Posting`]s are only made through [`Posting::new`], which refuses an
//! unbalanced or empty set, so an unbalanced transaction is a bug caught here and never reaches
//! the database (`db::ledger::post` writes postings and nothing else).
//!
//! Rounding: the tenant's commission on a payment is `floor(amount × platform_fee_bps / 10000)`
//! (the fee rounds down, the creator gets the rest). A partial refund of a payment takes back
//! the fee in proportion, computed on the running total of what has been refunded
//! (`floor(refunded × fee / amount)` minus what earlier refunds took back), so refunds that add up
//! to the whole payment take back exactly its fee.

pub mod earnings;

use onda_shared::api::{AdjustedAccount, LedgerSource};
use std::collections::BTreeMap;

/// The largest amount one request may move: 10^12 minor units (ten billion dollars in cents).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// The longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Whether `key` may be an idempotency key (the `Idempotency-Key` header, or the
/// `idempotencyKey` of a gateway event): 1 to 255 visible ASCII characters.
pub fn idempotency_key_ok(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// An account of a tenant's ledger. Its key (`wallet:<user id>`, …) is how the database and the
/// API name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// What a user may spend.
    Wallet(String),
    /// What a creator has earned and not been paid out.
    Earnings(String),
    /// The tenant's revenue (its commission).
    Platform,
    /// Money entering and leaving through the tenant's payment provider.
    External,
    /// Payouts creators requested and the tenant has not decided yet: their sum.
    PayoutsPending,
}

impl Account {
    pub fn key(&self) -> String {
        match self {
            Account::Wallet(u) => format!("wallet:{u}"),
            Account::Earnings(u) => format!("earnings:{u}"),
            Account::Platform => "platform".to_string(),
            Account::External => "external".to_string(),
            Account::PayoutsPending => "payouts_pending".to_string(),
        }
    }

    pub fn parse(key: &str) -> Option<Account> {
        match key {
            "platform" => Some(Account::Platform),
            "external" => Some(Account::External),
            "payouts_pending" => Some(Account::PayoutsPending),
            _ => match key.split_once(':')? {
                ("wallet", u) if !u.is_empty() => Some(Account::Wallet(u.to_string())),
                ("earnings", u) if !u.is_empty() => Some(Account::Earnings(u.to_string())),
                _ => None,
            },
        }
    }

    /// Users' accounts never go below zero, nor does `payouts_pending` (a decision takes back
    /// only what a request put there); the tenant's own (platform, external) are its books and
    /// may (external is negative by what has entered).
    pub fn floored(&self) -> bool {
        matches!(
            self,
            Account::Wallet(_) | Account::Earnings(_) | Account::PayoutsPending
        )
    }
}

/// Why a movement is refused by the rules (before any database work).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    Amount(String),
    #[error("{0}")]
    NotRefundable(String),
    /// A bug in a caller: entries that do not sum to zero, or none.
    #[error("unbalanced ledger posting: entries sum to {sum}")]
    Unbalanced { sum: i128 },
}

/// `value` as an amount to move: a positive integer up to [`MAX_AMOUNT`].
pub fn amount(field: &str, value: i64) -> Result<i64, RuleError> {
    if (1..=MAX_AMOUNT).contains(&value) {
        Ok(value)
    } else {
        Err(RuleError::Amount(format!(
            "{field} = {value} must be a whole number of minor units between 1 and {MAX_AMOUNT}."
        )))
    }
}

/// `value` as a signed change: not zero, at most [`MAX_AMOUNT`] either way.
pub fn signed_amount(field: &str, value: i64) -> Result<i64, RuleError> {
    if value != 0 && value.unsigned_abs() <= MAX_AMOUNT.unsigned_abs() {
        Ok(value)
    } else {
        Err(RuleError::Amount(format!(
            "{field} = {value} must be a whole number of minor units, not zero, between \
             -{MAX_AMOUNT} and {MAX_AMOUNT}."
        )))
    }
}

/// The tenant's commission and the creator's share of a payment: the fee rounds down.
pub fn fee_split(amount: i64, fee_bps: u32) -> (i64, i64) {
    let fee = i128::from(amount) * i128::from(fee_bps.min(10_000)) / 10_000;
    // fee ≤ amount, so it fits an i64.
    let fee = i64::try_from(fee).unwrap_or(amount);
    (fee, amount - fee)
}

/// A balanced transaction about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub source: LedgerSource,
    pub user_id: String,
    pub counterparty_id: Option<String>,
    pub amount: i64,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub refund_of: Option<String>,
    entries: Vec<(Account, i64)>,
}

/// What a posting is about, besides its entries.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub counterparty_id: Option<String>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub refund_of: Option<String>,
}

impl Posting {
    /// The only way to make a posting: entries on the same account are merged, zero entries
    /// dropped, and what remains must be non-empty and sum to zero. Entries come out sorted by
    /// account key, the order the database locks them in (no deadlock between two postings).
    pub fn new(
        source: LedgerSource,
        user_id: &str,
        amount: i64,
        header: Header,
        entries: impl IntoIterator<Item = (Account, i64)>,
    ) -> Result<Posting, RuleError> {
        let mut merged: BTreeMap<String, (Account, i128)> = BTreeMap::new();
        for (account, value) in entries {
            merged
                .entry(account.key())
                .or_insert_with(|| (account, 0))
                .1 += i128::from(value);
        }
        let sum: i128 = merged.values().map(|(_, v)| v).sum();
        let entries: Vec<(Account, i64)> = merged
            .into_values()
            .filter(|(_, v)| *v != 0)
            .map(|(a, v)| i64::try_from(v).map(|v| (a, v)))
            .collect::<Result<_, _>>()
            .map_err(|_| RuleError::Unbalanced { sum })?;
        if sum != 0 || entries.is_empty() {
            return Err(RuleError::Unbalanced { sum });
        }
        Ok(Posting {
            source,
            user_id: user_id.to_string(),
            counterparty_id: header.counterparty_id,
            amount,
            reference: header.reference,
            reason: header.reason,
            refund_of: header.refund_of,
            entries,
        })
    }

    pub fn entries(&self) -> &[(Account, i64)] {
        &self.entries
    }
}

/// The tenant's payment provider confirmed a purchase: external → the user's wallet.
pub fn credit(user_id: &str, amount: i64, reference: &str) -> Result<Posting, RuleError> {
    let amount = self::amount("amount", amount)?;
    Posting::new(
        LedgerSource::Credit,
        user_id,
        amount,
        Header {
            reference: Some(reference.to_string()),
            ..Header::default()
        },
        [
            (Account::External, -amount),
            (Account::Wallet(user_id.to_string()), amount),
        ],
    )
}

/// A fan pays a creator (a tip, a purchase, a subscription, a call): the fan's wallet pays the
/// creator's earnings, the tenant's fee split off to its platform account.
pub fn payment(
    source: LedgerSource,
    payer: &str,
    creator: &str,
    amount: i64,
    fee_bps: u32,
) -> Result<Posting, RuleError> {
    if !source.is_payment() {
        return Err(RuleError::NotRefundable(format!(
            "{source} is not a payment from a fan to a creator."
        )));
    }
    let amount = self::amount("amount", amount)?;
    let (fee, share) = fee_split(amount, fee_bps);
    Posting::new(
        source,
        payer,
        amount,
        Header {
            counterparty_id: Some(creator.to_string()),
            ..Header::default()
        },
        [
            (Account::Wallet(payer.to_string()), -amount),
            (Account::Earnings(creator.to_string()), share),
            (Account::Platform, fee),
        ],
    )
}

/// A creator asks for `amount` of their earnings: earnings → `payouts_pending` until the
/// tenant decides. `payout_id` is the transaction's reference.
pub fn payout_request(creator: &str, amount: i64, payout_id: &str) -> Result<Posting, RuleError> {
    let amount = self::amount("amount", amount)?;
    Posting::new(
        LedgerSource::Payout,
        creator,
        amount,
        Header {
            reference: Some(payout_id.to_string()),
            ..Header::default()
        },
        [
            (Account::Earnings(creator.to_string()), -amount),
            (Account::PayoutsPending, amount),
        ],
    )
}

/// How the tenant decided a requested payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayoutDecision {
    /// Its payment provider paid it: `payouts_pending` → `external` (money left), with the
    /// provider's reference.
    Paid { reference: String },
    /// Not paid: `payouts_pending` → the creator's earnings again, with the reason.
    Rejected { reason: String },
}

/// The decision on a payout of `amount` requested by `creator`: a new transaction (the request's
/// stays as it was).
pub fn payout_decision(
    creator: &str,
    amount: i64,
    decision: &PayoutDecision,
) -> Result<Posting, RuleError> {
    let amount = self::amount("amount", amount)?;
    let (header, to) = match decision {
        PayoutDecision::Paid { reference } => (
            Header {
                reference: Some(reference.clone()),
                ..Header::default()
            },
            Account::External,
        ),
        PayoutDecision::Rejected { reason } => (
            Header {
                reason: Some(reason.clone()),
                ..Header::default()
            },
            Account::Earnings(creator.to_string()),
        ),
    };
    Posting::new(
        LedgerSource::Payout,
        creator,
        amount,
        header,
        [(Account::PayoutsPending, -amount), (to, amount)],
    )
}

/// A correction of a user's wallet or earnings, against the tenant's platform account.
pub fn adjustment(
    user_id: &str,
    account: AdjustedAccount,
    amount: i64,
    reason: &str,
) -> Result<Posting, RuleError> {
    let amount = signed_amount("amount", amount)?;
    let target = match account {
        AdjustedAccount::Wallet => Account::Wallet(user_id.to_string()),
        AdjustedAccount::Earnings => Account::Earnings(user_id.to_string()),
    };
    Posting::new(
        LedgerSource::Adjustment,
        user_id,
        amount.abs(),
        Header {
            reason: Some(reason.to_string()),
            ..Header::default()
        },
        [(target, amount), (Account::Platform, -amount)],
    )
}

/// A stored transaction as a refund needs it.
#[derive(Debug, Clone)]
pub struct Original {
    pub id: String,
    pub source: LedgerSource,
    pub user_id: String,
    pub counterparty_id: Option<String>,
    pub amount: i64,
    /// What its entries gave the platform account (a payment's fee).
    pub fee: i64,
}

/// A refund of `requested` (all that remains when None) of `original`, of which `refunded` has
/// been refunded already: a credit goes back from the wallet to external; a payment goes back
/// from the creator's earnings and the platform's fee to the fan's wallet.
pub fn refund(
    original: &Original,
    refunded: i64,
    requested: Option<i64>,
    reason: &str,
) -> Result<Posting, RuleError> {
    let remaining = original.amount - refunded;
    if original.source != LedgerSource::Credit && !original.source.is_payment() {
        return Err(RuleError::NotRefundable(format!(
            "Transaction {:?} is a {}: only credits and payments can be refunded.",
            original.id, original.source
        )));
    }
    if remaining <= 0 {
        return Err(RuleError::NotRefundable(format!(
            "Transaction {:?} has been refunded in full already.",
            original.id
        )));
    }
    let r = match requested {
        Some(v) => amount("amount", v)?,
        None => remaining,
    };
    if r > remaining {
        return Err(RuleError::Amount(format!(
            "amount = {r} is more than the {remaining} that remains refundable of transaction {:?}.",
            original.id
        )));
    }
    let header = Header {
        counterparty_id: original.counterparty_id.clone(),
        reason: Some(reason.to_string()),
        refund_of: Some(original.id.clone()),
        ..Header::default()
    };
    let user = original.user_id.clone();
    let entries = match (&original.counterparty_id, original.source) {
        (None, LedgerSource::Credit) => vec![(Account::Wallet(user), -r), (Account::External, r)],
        (Some(creator), _) => {
            let taken = |refunded: i64| {
                let v = i128::from(refunded) * i128::from(original.fee)
                    / i128::from(original.amount.max(1));
                i64::try_from(v).unwrap_or(original.fee)
            };
            let fee_back = taken(refunded + r) - taken(refunded);
            vec![
                (Account::Wallet(user), r),
                (Account::Earnings(creator.clone()), -(r - fee_back)),
                (Account::Platform, -fee_back),
            ]
        }
        (None, _) => {
            return Err(RuleError::NotRefundable(format!(
                "Transaction {:?} names no creator to take the payment back from.",
                original.id
            )));
        }
    };
    Posting::new(LedgerSource::Refund, &original.user_id, r, header, entries)
}

/// Which of a batch's postings can be written, in their order (`db::ledger::post_payments`):
/// each takes from its floored accounts only what `held` (their kept balances) still holds
/// after the postings before it that pass; one that cannot changes nothing. Credits of the
/// batch are not counted for later postings (in a batch of payments no account is both paid
/// and paid from).
pub fn affordable(held: &BTreeMap<String, i64>, postings: &[&Posting]) -> Vec<bool> {
    let mut left = held.clone();
    postings
        .iter()
        .map(|p| {
            let fits = p.entries().iter().all(|(account, v)| {
                *v >= 0
                    || !account.floored()
                    || left.get(&account.key()).copied().unwrap_or(0) + v >= 0
            });
            if fits {
                for (account, v) in p.entries() {
                    if *v < 0 {
                        *left.entry(account.key()).or_insert(0) += v;
                    }
                }
            }
            fits
        })
        .collect()
}

/// Balances as the entries make them: what the kept balances must equal.
pub fn balances<'a>(entries: impl IntoIterator<Item = (&'a str, i64)>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (account, amount) in entries {
        *out.entry(account.to_string()).or_insert(0) += amount;
    }
    out
}

#[cfg(test)]
mod tests;
