use super::*;
use proptest::prelude::*;

fn record(state: CallState, billing: CallBilling) -> Record {
    Record {
        id: "call_1".into(),
        tenant_id: "ten_1".into(),
        caller_id: "fan".into(),
        callee_id: "star".into(),
        state,
        reason: None,
        price_per_minute: 120,
        billing,
        currency: "USD".into(),
        created_ms: 1_000_000,
        accepted_ms: None,
        ended_ms: None,
        units_charged: 0,
        amount_charged: 0,
        next_charge_ms: None,
        warn_at_ms: None,
        warned_ms: None,
        caller_gone_ms: None,
        callee_gone_ms: None,
        setup_ms: None,
    }
}

#[test]
fn a_minute_costs_its_price_by_the_minute_or_by_the_second() {
    assert_eq!(cost(120, CallBilling::Minute, 0, 1), 120);
    assert_eq!(cost(120, CallBilling::Minute, 3, 2), 240);
    assert_eq!(cost(120, CallBilling::Second, 0, 60), 120);
    assert_eq!(cost(120, CallBilling::Second, 0, 1), 2);
    // 7 a minute by the second: seconds cost 1 or 0, a minute exactly 7.
    let per_second: Vec<i64> = (0..60)
        .map(|k| cost(7, CallBilling::Second, k, 1))
        .collect();
    assert_eq!(per_second.iter().sum::<i64>(), 7);
    assert!(per_second.iter().all(|c| *c == 0 || *c == 1));
    assert_eq!(ring_minimum(120, CallBilling::Minute), 120);
    assert_eq!(ring_minimum(7, CallBilling::Second), 7);
}

#[test]
fn what_a_balance_pays() {
    assert_eq!(affordable(120, CallBilling::Minute, 0, 0), 0);
    assert_eq!(affordable(120, CallBilling::Minute, 0, 119), 0);
    assert_eq!(affordable(120, CallBilling::Minute, 5, 360), 3);
    assert_eq!(affordable(120, CallBilling::Second, 0, 120), 60);
    // By the second, 7 a minute: unit 0 costs 1, then several cost 0.
    let n = affordable(7, CallBilling::Second, 0, 1);
    assert_eq!(cost(7, CallBilling::Second, 0, n), 1);
    assert!(cost(7, CallBilling::Second, 0, n + 1) > 1);
}

proptest! {
    #[test]
    fn affordable_is_the_most_units_the_balance_covers(
        price in 1i64..100_000,
        per_second in any::<bool>(),
        from in 0i64..10_000,
        balance in 0i64..10_000_000,
    ) {
        let billing = if per_second { CallBilling::Second } else { CallBilling::Minute };
        let n = affordable(price, billing, from, balance);
        prop_assert!(cost(price, billing, from, n) <= balance);
        prop_assert!(cost(price, billing, from, n + 1) > balance);
        // Units charged one by one add up to the units charged at once.
        let one_by_one: i64 = (0..5).map(|k| cost(price, billing, from + k, 1)).sum();
        prop_assert_eq!(one_by_one, cost(price, billing, from, 5));
    }
}

#[test]
fn units_start_at_their_first_millisecond() {
    assert_eq!(started_units(0, 60_000, 0), 1);
    assert_eq!(started_units(0, 60_000, 59_999), 1);
    assert_eq!(started_units(0, 60_000, 60_000), 2);
    assert_eq!(owed_units(0, 60_000, 0), 1);
    assert_eq!(owed_units(0, 60_000, 60_000), 1);
    assert_eq!(owed_units(0, 60_000, 60_001), 2);
    assert_eq!(owed_units(0, 1000, 12_300), 13);
}

#[test]
fn each_action_in_each_state() {
    use CallState::*;
    let ok = |s, p, a| act(s, p, a).expect("allowed");
    assert_eq!(ok(Ringing, Party::Callee, Act::Accept), Outcome::Answered);
    assert_eq!(ok(InProgress, Party::Callee, Act::Accept), Outcome::Already);
    assert!(act(Ringing, Party::Caller, Act::Accept).is_err());
    assert_eq!(
        ok(Ringing, Party::Callee, Act::Reject),
        Outcome::Ended(CallEndReason::Rejected)
    );
    assert!(act(Ringing, Party::Caller, Act::Reject).is_err());
    assert!(act(InProgress, Party::Callee, Act::Reject).is_err());
    assert_eq!(
        ok(Calling, Party::Caller, Act::End),
        Outcome::Ended(CallEndReason::Cancelled)
    );
    assert_eq!(
        ok(Ringing, Party::Callee, Act::End),
        Outcome::Ended(CallEndReason::Rejected)
    );
    assert_eq!(
        ok(InProgress, Party::Caller, Act::End),
        Outcome::Ended(CallEndReason::HungUp)
    );
    for a in [Act::Accept, Act::Reject, Act::End] {
        for p in [Party::Caller, Party::Callee] {
            assert_eq!(ok(Ended, p, a), Outcome::Already);
        }
    }
}

fn open(call: Record, caller_online: bool, callee_online: bool) -> Open {
    Open {
        call,
        caller_online,
        callee_online,
    }
}

#[test]
fn an_unanswered_call_is_missed_after_thirty_seconds() {
    let c = record(CallState::Ringing, CallBilling::Minute);
    let t = c.created_ms;
    assert_eq!(plan(&open(c.clone(), true, true), t + 29_999).end, None);
    assert_eq!(
        plan(&open(c, true, true), t + 30_000).end,
        Some((CallEndReason::Missed, t + 30_000))
    );
}

#[test]
fn a_party_away_fifteen_seconds_ends_the_call_and_one_back_sooner_keeps_it() {
    let mut c = record(CallState::InProgress, CallBilling::Minute);
    c.accepted_ms = Some(c.created_ms);
    c.next_charge_ms = Some(c.created_ms + 60_000);
    let t = c.created_ms + 5_000;
    let p = plan(&open(c.clone(), true, false), t);
    assert_eq!(p.callee_gone, Some(Some(t)));
    assert_eq!(p.end, None);
    c.callee_gone_ms = Some(t);
    assert_eq!(plan(&open(c.clone(), true, false), t + 14_999).end, None);
    assert_eq!(
        plan(&open(c.clone(), true, true), t + 10_000).callee_gone,
        Some(None),
        "back within the grace"
    );
    assert_eq!(
        plan(&open(c, true, false), t + 15_000).end,
        Some((CallEndReason::ConnectionLost, t + 15_000))
    );
}

#[test]
fn the_clock_charges_started_units_and_looks_at_the_warning_once() {
    let mut c = record(CallState::InProgress, CallBilling::Minute);
    let a = c.created_ms + 2_000;
    c.accepted_ms = Some(a);
    c.units_charged = 1;
    c.next_charge_ms = Some(a + 60_000);
    c.warn_at_ms = Some(a + 30_000);
    let p = plan(&open(c.clone(), true, true), a + 59_999);
    assert_eq!(p.charge_to, None);
    assert!(p.check_warning);
    let p = plan(&open(c.clone(), true, true), a + 60_000);
    assert_eq!(p.charge_to, Some(2));
    // A clock that was away (a replica died) charges every unit started meanwhile.
    assert_eq!(
        plan(&open(c.clone(), true, true), a + 185_000).charge_to,
        Some(4)
    );
    c.warned_ms = Some(a + 30_000);
    assert!(!plan(&open(c, true, true), a + 60_000).check_warning);
}

#[test]
fn the_balance_pays_until_a_unit_boundary() {
    let mut c = record(CallState::InProgress, CallBilling::Minute);
    c.accepted_ms = Some(0);
    assert_eq!(paid_until(&c, 1, 0), 60_000);
    assert_eq!(paid_until(&c, 1, 250), 180_000);
    c.billing = CallBilling::Second;
    // 120 a minute by the second: 2 a second; 1 charged, 9 left → 4 more seconds.
    assert_eq!(paid_until(&c, 1, 9), 5_000);
}
