//! [`SeqMap`]: a map keyed by message sequence, for the messages a subscription has in flight.
//!
//! Those arrive in order (deliveries) and mostly leave in order (acks), so while they are dense
//! they live in a window of slots indexed by `sequence - base`: insert, remove and lookup are
//! O(1) with no allocation per entry. When the window would be mostly holes (a message never
//! acked while the channel moves on, members of a queue group sharing a channel), the map
//! switches to a `BTreeMap`, and back to the window once it is empty. Iteration is in
//! sequence order either way.

use std::collections::{BTreeMap, VecDeque};

/// A window may be at most this much larger than twice its number of entries.
const MAX_HOLES: usize = 64;

#[derive(Debug, Clone)]
enum Repr<V> {
    /// `slots[i]` holds sequence `base + i`; the first and last slots are occupied (or none).
    Dense {
        base: u64,
        slots: VecDeque<Option<V>>,
    },
    Sparse(BTreeMap<u64, V>),
}

/// A map from sequences to `V` (see the module documentation).
#[derive(Debug, Clone)]
pub struct SeqMap<V> {
    repr: Repr<V>,
    len: usize,
}

impl<V> Default for SeqMap<V> {
    fn default() -> Self {
        SeqMap {
            repr: Repr::Dense {
                base: 0,
                slots: VecDeque::new(),
            },
            len: 0,
        }
    }
}

impl<V> SeqMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts; returns the value `seq` had.
    pub fn insert(&mut self, seq: u64, value: V) -> Option<V> {
        if let Repr::Dense { base, slots } = &mut self.repr {
            if slots.is_empty() {
                *base = seq;
                slots.push_back(Some(value));
                self.len = 1;
                return None;
            }
            let span_after = if seq < *base {
                (*base - seq) as u128 + slots.len() as u128
            } else {
                (u128::from(seq - *base) + 1).max(slots.len() as u128)
            };
            if span_after <= (2 * (self.len + 1) + MAX_HOLES) as u128 {
                let old = if seq < *base {
                    for _ in seq + 1..*base {
                        slots.push_front(None);
                    }
                    slots.push_front(Some(value));
                    *base = seq;
                    None
                } else {
                    let i = (seq - *base) as usize;
                    while slots.len() <= i {
                        slots.push_back(None);
                    }
                    slots[i].replace(value)
                };
                if old.is_none() {
                    self.len += 1;
                }
                return old;
            }
            self.make_sparse();
        }
        let Repr::Sparse(map) = &mut self.repr else {
            unreachable!("made sparse above")
        };
        let old = map.insert(seq, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, seq: u64) -> Option<V> {
        let old = match &mut self.repr {
            Repr::Dense { base, slots } => {
                let i = usize::try_from(seq.checked_sub(*base)?).ok()?;
                let old = slots.get_mut(i)?.take()?;
                while let Some(None) = slots.front() {
                    slots.pop_front();
                    *base = base.wrapping_add(1);
                }
                while let Some(None) = slots.back() {
                    slots.pop_back();
                }
                old
            }
            Repr::Sparse(map) => map.remove(&seq)?,
        };
        self.len -= 1;
        // Empty: back to a window. An empty window (slots trimmed above) keeps its allocation
        // for the next burst of deliveries.
        if self.len == 0 && matches!(self.repr, Repr::Sparse(_)) {
            *self = Self::default();
        }
        Some(old)
    }

    pub fn get(&self, seq: u64) -> Option<&V> {
        match &self.repr {
            Repr::Dense { base, slots } => {
                let i = usize::try_from(seq.checked_sub(*base)?).ok()?;
                slots.get(i)?.as_ref()
            }
            Repr::Sparse(map) => map.get(&seq),
        }
    }

    /// The entries in sequence order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (u64, &V)> + '_> {
        match &self.repr {
            Repr::Dense { base, slots } => Box::new(
                slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, v)| Some((*base + i as u64, v.as_ref()?))),
            ),
            Repr::Sparse(map) => Box::new(map.iter().map(|(k, v)| (*k, v))),
        }
    }

    /// The sequences in order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(k, _)| k)
    }

    fn make_sparse(&mut self) {
        let repr = std::mem::replace(&mut self.repr, Repr::Sparse(BTreeMap::new()));
        if let Repr::Dense { base, slots } = repr {
            let map = slots
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| Some((base + i as u64, v?)))
                .collect();
            self.repr = Repr::Sparse(map);
        }
    }
}

impl<V: 'static> IntoIterator for SeqMap<V> {
    type Item = (u64, V);
    type IntoIter = Box<dyn Iterator<Item = (u64, V)>>;

    /// The entries in sequence order.
    fn into_iter(self) -> Self::IntoIter {
        match self.repr {
            Repr::Dense { base, slots } => Box::new(
                slots
                    .into_iter()
                    .enumerate()
                    .filter_map(move |(i, v)| Some((base + i as u64, v?))),
            ),
            Repr::Sparse(map) => Box::new(map.into_iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        RemoveFirst,
        Get(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Mostly near the front of a moving window, sometimes far away.
        let seq = prop_oneof![8 => 0u64..200, 1 => 0u64..100_000, 1 => Just(u64::MAX)];
        prop_oneof![
            5 => (seq.clone(), any::<u32>()).prop_map(|(s, v)| Op::Insert(s, v)),
            3 => seq.clone().prop_map(Op::Remove),
            3 => Just(Op::RemoveFirst),
            2 => seq.prop_map(Op::Get),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
            let mut m = SeqMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(s, v) => prop_assert_eq!(m.insert(s, v), model.insert(s, v)),
                    Op::Remove(s) => prop_assert_eq!(m.remove(s), model.remove(&s)),
                    Op::RemoveFirst => {
                        let first = model.keys().next().copied();
                        if let Some(s) = first {
                            prop_assert_eq!(m.remove(s), model.remove(&s));
                        }
                    }
                    Op::Get(s) => prop_assert_eq!(m.get(s), model.get(&s)),
                }
                prop_assert_eq!(m.len(), model.len());
                prop_assert_eq!(m.is_empty(), model.is_empty());
            }
            let got: Vec<(u64, u32)> = m.iter().map(|(k, v)| (k, *v)).collect();
            let want: Vec<(u64, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(m.into_iter().collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn in_order_traffic_stays_dense_and_a_straggler_goes_sparse() {
        let mut m = SeqMap::new();
        for s in 1..=10_000u64 {
            m.insert(s, ());
            if s > 100 {
                m.remove(s - 100);
            }
        }
        assert!(matches!(m.repr, Repr::Dense { .. }));
        assert_eq!(m.len(), 100);
        // One message never acked while the rest move on: no window of a million slots.
        m.insert(1_000_000, ());
        assert!(matches!(m.repr, Repr::Sparse(_)));
        for s in 9_901..=10_000 {
            m.remove(s);
        }
        m.remove(1_000_000);
        assert!(m.is_empty());
        assert!(
            matches!(m.repr, Repr::Dense { .. }),
            "empty goes back to a window"
        );
    }
}
