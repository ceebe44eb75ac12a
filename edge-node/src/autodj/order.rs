//! Which track plays next: sequential, shuffle (every track once per round, no immediate
//! repeat across rounds) and weighted random (no immediate repeat). Pure over an injected random
//! number generator, so orders are testable.

use onda_shared::domain::PlayOrder;
use rand::RngExt as _;
use rand::seq::SliceRandom as _;

#[derive(Debug, Default)]
pub(crate) struct Picker {
    cursor: usize,
    bag: Vec<usize>,
    last: Option<usize>,
}

impl Picker {
    /// The index of the next track among `weights.len()` tracks (`None` when there are none).
    pub(crate) fn next<R: rand::Rng + ?Sized>(
        &mut self,
        order: PlayOrder,
        weights: &[u32],
        rng: &mut R,
    ) -> Option<usize> {
        let n = weights.len();
        if n == 0 {
            return None;
        }
        let pick = match order {
            PlayOrder::Sequential => {
                let i = self.cursor % n;
                self.cursor = i + 1;
                i
            }
            PlayOrder::Shuffle => {
                // A changed playlist invalidates the round.
                self.bag.retain(|&i| i < n);
                if self.bag.is_empty() {
                    self.bag = (0..n).collect();
                    self.bag.shuffle(rng);
                    // Picked from the end: keep the one just played away from the start of the
                    // new round.
                    if n > 1 && self.bag.last() == self.last.as_ref() {
                        self.bag.swap(0, n - 1);
                    }
                }
                self.bag.pop()?
            }
            PlayOrder::Random => {
                let avoid = self.last.filter(|_| n > 1);
                let total: u64 = weights
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != avoid)
                    .map(|(_, &w)| u64::from(w.max(1)))
                    .sum();
                let mut x = rng.random_range(0..total.max(1));
                let mut chosen = 0;
                for (i, &w) in weights.iter().enumerate() {
                    if Some(i) == avoid {
                        continue;
                    }
                    let w = u64::from(w.max(1));
                    if x < w {
                        chosen = i;
                        break;
                    }
                    x -= w;
                }
                chosen
            }
        };
        self.last = Some(pick);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    fn run(order: PlayOrder, weights: &[u32], k: usize, seed: u64) -> Vec<usize> {
        let mut p = Picker::default();
        let mut rng = StdRng::seed_from_u64(seed);
        (0..k)
            .map(|_| p.next(order, weights, &mut rng).expect("a track"))
            .collect()
    }

    #[test]
    fn sequential_cycles_in_list_order() {
        assert_eq!(
            run(PlayOrder::Sequential, &[1, 1, 1], 7, 0),
            [0, 1, 2, 0, 1, 2, 0]
        );
        assert_eq!(
            Picker::default().next(PlayOrder::Sequential, &[], &mut rand::rng()),
            None
        );
    }

    #[test]
    fn shuffle_plays_each_track_once_per_round_and_never_twice_in_a_row() {
        for seed in 0..200 {
            let picks = run(PlayOrder::Shuffle, &[1; 5], 50, seed);
            for round in picks.chunks(5) {
                let mut r = round.to_vec();
                r.sort_unstable();
                assert_eq!(r, [0, 1, 2, 3, 4], "seed {seed}: {picks:?}");
            }
            assert!(
                picks.windows(2).all(|w| w[0] != w[1]),
                "seed {seed}: {picks:?}"
            );
        }
        // A shrinking playlist never yields a track that no longer exists.
        let mut p = Picker::default();
        let mut rng = StdRng::seed_from_u64(1);
        p.next(PlayOrder::Shuffle, &[1; 5], &mut rng);
        for _ in 0..10 {
            assert!(p.next(PlayOrder::Shuffle, &[1; 2], &mut rng).expect("pick") < 2);
        }
    }

    #[test]
    fn random_follows_weights_without_immediate_repeats() {
        let picks = run(PlayOrder::Random, &[1, 3, 6], 10_000, 7);
        assert!(picks.windows(2).all(|w| w[0] != w[1]));
        let mut counts = [0usize; 3];
        for p in &picks {
            counts[*p] += 1;
        }
        // Heavier tracks play more often.
        assert!(counts[0] < counts[1] && counts[1] < counts[2], "{counts:?}");
        // One track: it repeats (there is nothing else).
        assert_eq!(run(PlayOrder::Random, &[4], 3, 0), [0, 0, 0]);
    }
}
