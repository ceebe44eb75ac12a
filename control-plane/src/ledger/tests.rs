use super::*;
use proptest::prelude::*;

fn sum(p: &Posting) -> i128 {
    p.entries().iter().map(|(_, v)| i128::from(*v)).sum()
}

#[test]
fn the_fee_rounds_down_and_the_creator_gets_the_rest() {
    assert_eq!(fee_split(1000, 2000), (200, 800));
    assert_eq!(fee_split(999, 2000), (199, 800));
    assert_eq!(fee_split(1, 2000), (0, 1));
    assert_eq!(fee_split(7, 0), (0, 7));
    assert_eq!(fee_split(7, 10_000), (7, 0));
    assert_eq!(fee_split(MAX_AMOUNT, 9_999), (999_900_000_000, 100_000_000));
}

#[test]
fn a_payment_splits_the_fee_in_the_same_posting() {
    let p = payment(LedgerSource::Tip, "fan", "star", 999, 2000).expect("payment");
    assert_eq!(
        p.entries(),
        &[
            (Account::Earnings("star".into()), 800),
            (Account::Platform, 199),
            (Account::Wallet("fan".into()), -999),
        ]
    );
    // No fee: no platform entry at all.
    let p = payment(LedgerSource::Tip, "fan", "star", 5, 0).expect("payment");
    assert_eq!(p.entries().len(), 2);
    assert!(payment(LedgerSource::Credit, "fan", "star", 5, 0).is_err());
}

#[test]
fn a_payout_goes_through_payouts_pending_and_is_decided_by_a_new_posting() {
    let req = payout_request("star", 700, "pyt_1").expect("request");
    assert_eq!(
        req.entries(),
        &[
            (Account::Earnings("star".into()), -700),
            (Account::PayoutsPending, 700),
        ]
    );
    assert_eq!(req.reference.as_deref(), Some("pyt_1"));
    assert_eq!(req.source, LedgerSource::Payout);
    let paid = PayoutDecision::Paid {
        reference: "psp_tr_1".into(),
    };
    let p = payout_decision("star", 700, &paid).expect("paid");
    assert_eq!(
        p.entries(),
        &[(Account::External, 700), (Account::PayoutsPending, -700)]
    );
    assert_eq!(p.reference.as_deref(), Some("psp_tr_1"));
    let rejected = PayoutDecision::Rejected {
        reason: "no bank account".into(),
    };
    let p = payout_decision("star", 700, &rejected).expect("rejected");
    assert_eq!(
        p.entries(),
        &[
            (Account::Earnings("star".into()), 700),
            (Account::PayoutsPending, -700),
        ]
    );
    assert_eq!(p.reason.as_deref(), Some("no bank account"));
    for bad in [0, -1, MAX_AMOUNT + 1] {
        assert!(payout_request("star", bad, "pyt_1").is_err(), "{bad}");
        assert!(payout_decision("star", bad, &paid).is_err(), "{bad}");
    }
}

#[test]
fn idempotency_keys_are_visible_ascii() {
    assert!(idempotency_key_ok("tip-1"));
    assert!(idempotency_key_ok(&"k".repeat(MAX_IDEMPOTENCY_KEY)));
    for bad in ["", "a b", "é", "a\n"] {
        assert!(!idempotency_key_ok(bad), "{bad:?}");
    }
    assert!(!idempotency_key_ok(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1)));
}

#[test]
fn unbalanced_or_empty_postings_cannot_be_made() {
    let h = Header::default;
    assert_eq!(
        Posting::new(
            LedgerSource::Credit,
            "u",
            1,
            h(),
            [(Account::External, -1), (Account::Wallet("u".into()), 2)]
        ),
        Err(RuleError::Unbalanced { sum: 1 })
    );
    assert_eq!(
        Posting::new(LedgerSource::Credit, "u", 1, h(), []),
        Err(RuleError::Unbalanced { sum: 0 })
    );
    assert_eq!(
        Posting::new(
            LedgerSource::Credit,
            "u",
            1,
            h(),
            [(Account::External, -1), (Account::External, 1)]
        ),
        Err(RuleError::Unbalanced { sum: 0 })
    );
}

#[test]
fn amounts_are_positive_and_bounded() {
    assert!(credit("u", 0, "r").is_err());
    assert!(credit("u", -5, "r").is_err());
    assert!(credit("u", MAX_AMOUNT + 1, "r").is_err());
    assert!(credit("u", MAX_AMOUNT, "r").is_ok());
    assert!(adjustment("u", AdjustedAccount::Wallet, 0, "x").is_err());
    assert!(adjustment("u", AdjustedAccount::Wallet, -MAX_AMOUNT, "x").is_ok());
    assert!(adjustment("u", AdjustedAccount::Wallet, i64::MIN, "x").is_err());
}

#[test]
fn account_keys_round_trip() {
    for a in [
        Account::Wallet("fan@example.com".into()),
        Account::Earnings("a:b".into()),
        Account::Platform,
        Account::External,
        Account::PayoutsPending,
    ] {
        assert_eq!(Account::parse(&a.key()), Some(a));
    }
    assert!(Account::PayoutsPending.floored());
    assert!(!Account::External.floored());
    assert_eq!(Account::parse("wallet:"), None);
    assert_eq!(Account::parse("bank"), None);
}

fn original(amount: i64, fee_bps: u32) -> Original {
    Original {
        id: "txn_1".into(),
        source: LedgerSource::Purchase,
        user_id: "fan".into(),
        counterparty_id: Some("star".into()),
        amount,
        fee: fee_split(amount, fee_bps).0,
    }
}

#[test]
fn refunds_are_bounded_by_what_remains() {
    let o = original(1000, 2000);
    assert!(refund(&o, 0, Some(1001), "x").is_err());
    assert!(refund(&o, 1000, None, "x").is_err());
    let r = refund(&o, 400, None, "x").expect("rest");
    assert_eq!(r.amount, 600);
    assert_eq!(r.refund_of.as_deref(), Some("txn_1"));
    let mut adj = o.clone();
    adj.source = LedgerSource::Adjustment;
    assert!(matches!(
        refund(&adj, 0, None, "x"),
        Err(RuleError::NotRefundable(_))
    ));
}

/// A batch pays in order: a wallet pays what it still holds after the payments before it, and a
/// payment it cannot make changes nothing for the ones after.
#[test]
fn a_batch_pays_in_order_what_each_wallet_still_holds() {
    let pay = |payer: &str, amount| {
        payment(LedgerSource::Tip, payer, "star", amount, 2_000).expect("payment")
    };
    let ps = [
        pay("ana", 6),
        pay("ana", 6),
        pay("bo", 3),
        pay("ana", 4),
        pay("cy", 1),
    ];
    let held: BTreeMap<String, i64> =
        [("wallet:ana".to_string(), 10), ("wallet:bo".to_string(), 3)]
            .into_iter()
            .collect();
    let refs: Vec<&Posting> = ps.iter().collect();
    // ana: 6 of 10, then 6 > 4 left (refused), then 4 of 4; bo: all 3; cy holds nothing.
    assert_eq!(affordable(&held, &refs), [true, false, true, true, false]);
    assert_eq!(affordable(&BTreeMap::new(), &[]), Vec::<bool>::new());
}

proptest! {
    /// Any split of a payment into partial refunds gives back exactly the amount, takes back
    /// exactly the fee, and every posting sums to zero.
    #[test]
    fn partial_refunds_take_back_exactly_the_fee(
        amount in 1i64..=1_000_000,
        fee_bps in 0u32..=10_000,
        cuts in proptest::collection::vec(1i64..=1_000_000, 0..6),
    ) {
        let o = original(amount, fee_bps);
        let p = payment(LedgerSource::Purchase, "fan", "star", amount, fee_bps).expect("payment");
        prop_assert_eq!(sum(&p), 0);
        let mut refunded = 0;
        let mut all = vec![p];
        for c in cuts {
            let remaining = amount - refunded;
            if remaining == 0 { break; }
            let r = refund(&o, refunded, Some(c.min(remaining)), "x").expect("refund");
            refunded += r.amount;
            all.push(r);
        }
        if refunded < amount {
            let r = refund(&o, refunded, None, "x").expect("rest");
            refunded += r.amount;
            all.push(r);
        }
        prop_assert_eq!(refunded, amount);
        let b = balances(all.iter().flat_map(|p| p.entries().iter().map(|(a, v)| (a.key(), *v))).collect::<Vec<_>>().iter().map(|(a, v)| (a.as_str(), *v)));
        for p in &all { prop_assert_eq!(sum(p), 0); }
        for (account, v) in b {
            prop_assert_eq!(v, 0, "{} is not back to zero", account);
        }
    }

    /// Whatever the balances and the batch, the payments that pass never take a wallet below
    /// zero, and a payment refused would have.
    #[test]
    fn a_batch_never_takes_a_wallet_below_zero(
        held in proptest::collection::vec(0i64..50, 3),
        tips in proptest::collection::vec((0usize..3, 1i64..30), 0..20),
    ) {
        let names = ["ana", "bo", "cy"];
        let start: BTreeMap<String, i64> =
            names.iter().zip(&held).map(|(n, v)| (format!("wallet:{n}"), *v)).collect();
        let ps: Vec<Posting> = tips
            .iter()
            .map(|(who, amount)| payment(LedgerSource::Tip, names[*who], "star", *amount, 2_000).expect("payment"))
            .collect();
        let refs: Vec<&Posting> = ps.iter().collect();
        let pass = affordable(&start, &refs);
        let mut left = start.clone();
        for ((who, amount), ok) in tips.iter().zip(&pass) {
            let w = left.get_mut(&format!("wallet:{}", names[*who])).expect("wallet");
            prop_assert_eq!(*ok, *w >= *amount);
            if *ok {
                *w -= amount;
            }
            prop_assert!(*w >= 0);
        }
    }

    #[test]
    fn fee_plus_share_is_the_amount(amount in 1i64..=MAX_AMOUNT, fee_bps in 0u32..=10_000) {
        let (fee, share) = fee_split(amount, fee_bps);
        prop_assert_eq!(fee + share, amount);
        prop_assert!(fee >= 0 && share >= 0);
        prop_assert!(i128::from(fee) * 10_000 <= i128::from(amount) * i128::from(fee_bps));
    }
}
