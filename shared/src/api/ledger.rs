//! Wire types of the money API (docs/money.md): wallets, ledger transactions and their entries,
//! and the requests that move value. Amounts are integers in minor units of the tenant's
//! `currency` (cents for USD), never fractions.

use serde::{Deserialize, Serialize};

/// Why a transaction moved value. Today's routes write `credit`, `refund` and `adjustment`; the
/// others are the fan-to-creator payments and payouts built on the same posting function.
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
