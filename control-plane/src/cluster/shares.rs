//! Cluster-wide listener limits: a station's plan limit split into one share per node carrying
//! it (origin, relays, a node it is leaving), from the listeners each node reported. Each node
//! refuses listeners beyond its share on its own (the edge's listener group), so the limit holds
//! without a round trip per listener.
//!
//! Shares always add up to the limit (unless the nodes already hold more): each node gets what
//! it carries plus an even part of the free places. They are kept from one round to the next
//! while every node still has room, so a desired state is not rewritten on every heartbeat; a
//! node that runs short of room while another has plenty makes the leader split again.
//!
//! The bound: a node admits up to the share it has applied. While nodes apply a new split, one
//! may still admit up to its old share as another already admits up to its new, larger one, so
//! the cluster can exceed the limit by at most the places the split moved between nodes
//! (`sum over nodes of max(0, new - old)`), and only until the slower node has applied its
//! share (one desired-state delivery). [`overshoot_bound`] computes it for a split.

use std::collections::BTreeMap;

/// Shares of `limit` for the nodes in `counts` (node → listeners it reported). `previous` are
/// the shares the nodes have now; they are kept when still good.
pub fn split(
    limit: u64,
    counts: &BTreeMap<String, u64>,
    previous: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let n = counts.len() as u64;
    if n == 0 {
        return BTreeMap::new();
    }
    if n == 1 {
        return counts.keys().map(|k| (k.clone(), limit)).collect();
    }
    let used: u64 = counts.values().sum();
    let free = limit.saturating_sub(used);
    let same_nodes =
        previous.len() == counts.len() && counts.keys().all(|k| previous.contains_key(k));
    if same_nodes && previous.values().sum::<u64>() == limit {
        // Keep the split unless a node is over its share, or one is short of room (less than
        // half its even part of what is free, at least one place) while another has twice
        // that: moving places when only a few are left would move them back and forth as
        // listeners come and go.
        let want = (free / n / 2).max(1);
        let room = |k: &String, c: &u64| previous[k].checked_sub(*c);
        let over = counts.iter().any(|(k, c)| room(k, c).is_none());
        let short = counts
            .iter()
            .any(|(k, c)| room(k, c).is_some_and(|r| r < want));
        let spare = counts
            .iter()
            .any(|(k, c)| room(k, c).is_some_and(|r| r >= 2 * want));
        if !(over || (short && spare)) {
            return previous.clone();
        }
    }
    // Each node: what it carries plus an even part of the free places; the remainder goes
    // first to nodes that filled their previous share (they are the ones refusing listeners),
    // then to the busiest, then by name, so the result is deterministic. Without the first
    // rule a single free place could go to a node with room to spare while a full one keeps
    // refusing.
    let full = |k: &String, c: u64| previous.get(k).is_some_and(|p| c >= *p);
    let mut order: Vec<(&String, u64, bool)> =
        counts.iter().map(|(k, c)| (k, *c, full(k, *c))).collect();
    order.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(b.0)));
    let rest = free % n;
    order
        .into_iter()
        .enumerate()
        .map(|(i, (k, c, _))| (k.clone(), c + free / n + u64::from((i as u64) < rest)))
        .collect()
}

/// How far over the limit the cluster can go while its nodes move from `old` to `new` shares.
pub fn overshoot_bound(old: &BTreeMap<String, u64>, new: &BTreeMap<String, u64>) -> u64 {
    new.iter()
        .map(|(k, v)| v.saturating_sub(old.get(k).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, c)| (k.to_string(), *c)).collect()
    }

    #[test]
    fn free_places_are_split_evenly_and_kept_while_there_is_room() {
        let counts = map(&[("a", 2), ("b", 0), ("c", 0)]);
        let s = split(9, &counts, &BTreeMap::new());
        assert_eq!(s, map(&[("a", 5), ("b", 2), ("c", 2)]));
        // One more listener on b: every node still has room, nothing changes.
        let s2 = split(9, &map(&[("a", 2), ("b", 1), ("c", 0)]), &s);
        assert_eq!(s2, s);
        // b is full while places are free elsewhere: split again.
        let s3 = split(9, &map(&[("a", 2), ("b", 2), ("c", 0)]), &s);
        assert_eq!(s3.values().sum::<u64>(), 9);
        assert!(s3["b"] > 2, "{s3:?}");
        // Everything taken: shares are what each carries.
        let full = split(9, &map(&[("a", 5), ("b", 2), ("c", 2)]), &BTreeMap::new());
        assert_eq!(full, map(&[("a", 5), ("b", 2), ("c", 2)]));
        // Over the limit after a storm (shares = counts), then two listeners leave a: the one
        // free place goes to a full node, not back to a although a is as busy.
        let over = map(&[("a", 4), ("b", 2), ("c", 1)]);
        let after = split(6, &map(&[("a", 2), ("b", 2), ("c", 1)]), &over);
        assert_eq!(after, map(&[("a", 2), ("b", 3), ("c", 1)]));
        // One node: the whole limit.
        assert_eq!(
            split(9, &map(&[("a", 3)]), &BTreeMap::new()),
            map(&[("a", 9)])
        );
    }

    proptest! {
        #[test]
        fn shares_add_up_to_the_limit_and_never_below_what_a_node_carries(
            limit in 0u64..500,
            counts in proptest::collection::btree_map("[a-e]", 0u64..200, 1..5),
            prev in proptest::collection::btree_map("[a-e]", 0u64..300, 0..5),
        ) {
            let s = split(limit, &counts, &prev);
            prop_assert_eq!(s.len(), counts.len());
            let used: u64 = counts.values().sum();
            let expected = if counts.len() == 1 { limit } else { limit.max(used) };
            prop_assert_eq!(s.values().sum::<u64>(), expected);
            for (k, c) in &counts {
                if counts.len() > 1 {
                    prop_assert!(s[k] >= *c, "{k}: share {} below its {c} listeners", s[k]);
                }
            }
            // Deterministic, and a fixed point once applied.
            prop_assert_eq!(&split(limit, &counts, &prev), &s);
            prop_assert_eq!(&split(limit, &counts, &s), &s);
        }
    }
}
