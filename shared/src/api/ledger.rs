//! Wire types of the money API (docs/money.md): wallets, ledger transactions and their entries,
//! and the requests that move value. Amounts are integers in minor units of the tenant's
//! `currency` (cents for USD), never fractions.

use serde::{Deserialize, Serialize};

/// Why a transaction moved value. Today's routes write `credit`, `tip`, `payout`, `refund` and
/// `adjustment`; the other fan-to-creator payments are built on the same posting function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LedgerSource {
    Credit,
    Tip,
    Purchase,
    Subscription,
    Call,
    Payout,
    Refund,
    Adjustment,
}

impl LedgerSource {
    pub const ALL: [LedgerSource; 8] = [
        LedgerSource::Credit,
        LedgerSource::Tip,
        LedgerSource::Purchase,
        LedgerSource::Subscription,
        LedgerSource::Call,
        LedgerSource::Payout,
        LedgerSource::Refund,
        LedgerSource::Adjustment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LedgerSource::Credit => "credit",
            LedgerSource::Tip => "tip",
            LedgerSource::Purchase => "purchase",
            LedgerSource::Subscription => "subscription",
            LedgerSource::Call => "call",
            LedgerSource::Payout => "payout",
            LedgerSource::Refund => "refund",
            LedgerSource::Adjustment => "adjustment",
        }
    }

    /// A fan-to-creator payment: the tenant's fee is split off it.
    pub fn is_payment(self) -> bool {
        matches!(
            self,
            LedgerSource::Tip
                | LedgerSource::Purchase
                | LedgerSource::Subscription
                | LedgerSource::Call
        )
    }
}

impl std::fmt::Display for LedgerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LedgerSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        LedgerSource::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a ledger source"))
    }
}

/// One leg of a transaction: `account` is `wallet:<user id>`, `earnings:<user id>`, `platform`
/// (the tenant's revenue) or `external` (money entering and leaving through the tenant's
/// payment provider). Positive adds to the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    pub account: String,
    pub amount: i64,
}

/// An immutable ledger transaction: its entries sum to zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerTransaction {
    pub id: String,
    pub source: LedgerSource,
    /// The user it concerns: the credited, paying, adjusted or refunded user.
    pub user_id: String,
    /// The creator paid, for payments (and their refunds).
    pub counterparty_id: Option<String>,
    /// The amount moved, positive, in minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    /// The tenant's reference (its payment provider's id) of a credit.
    pub reference: Option<String>,
    /// Why a refund or adjustment was made.
    pub reason: Option<String>,
    /// The transaction a refund reverses.
    pub refund_of: Option<String>,
    pub entries: Vec<LedgerEntry>,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /v1/users/{user_id}/wallet` and `GET /v1/me/wallet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wallet {
    pub currency: String,
    /// What the user may spend, in minor units.
    pub balance: i64,
    /// What a creator has earned and not been paid out; absent for users who are not creators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earnings: Option<i64>,
}

/// `POST /v1/users/{user_id}/wallet/credits`: the tenant's payment provider confirmed a purchase
/// of `amount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCredit {
    /// Positive, in minor units, at most 10^12.
    pub amount: i64,
    /// The provider's id of the payment (1 to 200 characters).
    pub reference: String,
}

/// `POST /v1/transactions/{id}/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// What to refund; all that remains refundable when absent.
    #[serde(default)]
    pub amount: Option<i64>,
    /// Why (1 to 500 characters).
    pub reason: String,
}

/// Which of a user's accounts an adjustment changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdjustedAccount {
    Wallet,
    Earnings,
}

/// `POST /v1/users/{user_id}/wallet/adjustments`: a correction against the tenant's platform
/// account; the balance never goes below zero.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAdjustment {
    pub account: AdjustedAccount,
    /// Signed, not zero, at most 10^12 either way.
    pub amount: i64,
    /// Why (1 to 500 characters).
    pub reason: String,
}

/// Filters of `GET /v1/transactions` (and paging of both transaction lists).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TransactionListParams {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only transactions about this user (as the payer/credited user or the creator paid).
    pub user_id: Option<String>,
    /// Only this source.
    pub source: Option<LedgerSource>,
    /// Only transactions at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only transactions before this time (RFC 3339).
    pub until: Option<String>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`).
    pub format: Option<String>,
}

/// Paging of one user's history (`GET /v1/users/{user_id}/transactions`, `GET /v1/me/transactions`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct WalletHistoryParams {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `json` (default) or `csv` (also chosen by `Accept: text/csv`): CSV has every transaction
    /// selected, without paging.
    pub format: Option<String>,
}

/// An account whose kept balance differs from the sum of its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BalanceMismatch {
    pub account: String,
    pub kept: i64,
    pub derived: i64,
}

/// `GET /v1/ledger/check`: the tenant's balances recomputed from its entries and compared with
/// the kept ones. `ok` when every list is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerCheck {
    pub ok: bool,
    /// Transactions checked.
    pub transactions: u64,
    pub balance_mismatches: Vec<BalanceMismatch>,
    /// Transactions whose entries do not sum to zero.
    pub unbalanced_transactions: Vec<String>,
    /// Wallets or earnings below zero.
    pub negative_accounts: Vec<String>,
}

/// `POST /v1/me/tips` and the gateway's `send-tip` (which adds `idempotencyKey`): the caller
/// tips a creator of their tenant from their wallet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTip {
    /// The tenant's id of the creator tipped.
    pub creator_id: String,
    /// Minor units of the tenant's currency, at least the creator's `tip_minimum`.
    pub amount: i64,
    /// Shown to the creator: at most 200 characters (may be empty).
    #[serde(default)]
    pub message: String,
    /// A live stream of the creator's whose chat shows the tip (the tipper must be let into it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

/// A tip: one ledger transaction (its id is the tip's), the fan's wallet paying the creator's
/// earnings with the tenant's fee split off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Tip {
    /// The ledger transaction's id (`txn_…`).
    pub id: String,
    pub sender_id: String,
    pub creator_id: String,
    /// What the fan paid, in minor units of `currency`.
    pub amount: i64,
    /// The tenant's commission (rounded down).
    pub fee: i64,
    /// What the creator's earnings received: `amount - fee`.
    pub net: i64,
    pub currency: String,
    pub message: String,
    /// RFC 3339.
    pub created_at: String,
}

/// What one source brought a creator on one day: `gross` paid by fans, `fee` kept by the tenant,
/// `net` to the creator's earnings (`gross - fee`); refunds made that day are subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EarningsFigures {
    pub gross: i64,
    pub fee: i64,
    pub net: i64,
    /// Transactions counted (payments and refunds).
    pub transactions: u64,
}

/// One UTC day of a creator's earnings, by source (only the sources that moved that day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EarningsDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub sources: std::collections::BTreeMap<String, EarningsFigures>,
    /// The day's sum over its sources.
    pub total: EarningsFigures,
}

/// `GET /v1/users/{user_id}/earnings` and `GET /v1/me/earnings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EarningsReport {
    pub user_id: String,
    pub currency: String,
    /// First day, inclusive (`YYYY-MM-DD`).
    pub from: String,
    /// Last day, inclusive (`YYYY-MM-DD`).
    pub to: String,
    /// Days with earnings movements, oldest first.
    pub days: Vec<EarningsDay>,
    /// The whole range.
    pub total: EarningsFigures,
}

/// Days of an earnings report: `from` and `to` are UTC days (`YYYY-MM-DD`), both inclusive;
/// the default is the 30 days ending today, and a range is at most 366 days.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct EarningsParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Where a payout stands. It is decided once: `requested`, then `paid` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Requested,
    Paid,
    Rejected,
}

impl PayoutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Requested => "requested",
            PayoutStatus::Paid => "paid",
            PayoutStatus::Rejected => "rejected",
        }
    }
}

impl std::str::FromStr for PayoutStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            PayoutStatus::Requested,
            PayoutStatus::Paid,
            PayoutStatus::Rejected,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not a payout status"))
    }
}

/// A creator's payout: requested from their earnings (held in `payouts_pending` meanwhile),
/// then paid by the tenant's payment provider or rejected (the amount returns to earnings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Payout {
    /// `pyt_…`
    pub id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: PayoutStatus,
    /// The provider's reference, once paid.
    pub reference: Option<String>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// The ledger transaction that moved the amount out of earnings.
    pub request_transaction_id: String,
    /// The ledger transaction of the decision (paid: to external; rejected: back to earnings).
    pub decision_transaction_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub decided_at: Option<String>,
}

/// `POST /v1/me/payouts`: pay out `amount` of the caller's earnings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    /// 1 to 10^12 minor units, at most the earnings.
    pub amount: i64,
}

/// `POST /v1/payouts/{id}/paid`: the tenant's payment provider paid it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkPayoutPaid {
    /// The provider's reference of the transfer (1 to 200 characters).
    pub reference: String,
}

/// `POST /v1/payouts/{id}/rejected`: the tenant will not pay it; the amount returns to the
/// creator's earnings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RejectPayout {
    /// Why (1 to 500 characters), told to the creator.
    pub reason: String,
}

/// `GET /v1/payouts` (tenant) and `GET /v1/me/payouts` (creator): newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct PayoutListParams {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only payouts in this state.
    pub status: Option<PayoutStatus>,
    /// Only this creator's payouts (tenant list).
    pub user_id: Option<String>,
}

/// `POST /v1/me/subscriptions`: subscribe to a creator from the wallet at their price.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateSubscription {
    pub creator_id: String,
}

/// `PUT /v1/creators/{id}/subscribers/{user_id}`: the tenant declares a subscriber it bills
/// itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeclareSubscriber {
    /// RFC 3339: when access ends.
    pub ends_at: String,
}

/// A fan's subscription to a creator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// `sub_…`, one per (creator, subscriber).
    pub id: String,
    pub creator_id: String,
    pub user_id: String,
    /// `wallet` (bought from the wallet, renewed from it) or `tenant` (declared by the tenant).
    pub kind: String,
    /// `active` (running: a wallet one renews at its end), `canceled` (a wallet one that runs
    /// to its end without renewal) or `ended`.
    pub status: String,
    /// Wallet subscriptions: the price of each 30-day period, in minor units of `currency`.
    pub price: Option<i64>,
    pub currency: String,
    pub renews: bool,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: access lasts until then.
    pub ends_at: String,
    /// The ledger transaction of the last period paid (wallet subscriptions).
    pub transaction_id: Option<String>,
    /// RFC 3339: when a renewal failed for want of funds and the subscription lapsed.
    pub lapsed_at: Option<String>,
}

/// A pay-per-view stream bought once: one ledger transaction (source `purchase`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Purchase {
    /// The ledger transaction's id (`txn_…`).
    pub id: String,
    pub stream_id: String,
    pub buyer_id: String,
    pub creator_id: String,
    pub amount: i64,
    /// The tenant's commission (rounded down).
    pub fee: i64,
    /// What the creator's earnings received.
    pub net: i64,
    pub currency: String,
    /// RFC 3339.
    pub created_at: String,
}
