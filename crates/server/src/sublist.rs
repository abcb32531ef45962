//! The subject index: a trie of subject tokens with a bounded match cache, as nats-server's
//! sublist. Insert, remove and match cost grows with the number of tokens in the subject,
//! not with the number of subscriptions.
//!
//! Entries are `Arc<T>`, identified by pointer, so the same index serves client and route
//! subscriptions. Every change bumps a generation counter, so callers may keep lock-free
//! caches of match results and drop them when the generation moves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

/// The subscriptions matching one subject: every plain subscription, and per queue name the
/// members of that queue group (groups with the same name from different patterns merged).
pub struct SubResult<T> {
    pub plain: Vec<Arc<T>>,
    pub queues: Vec<QueueGroup<T>>,
}

pub struct QueueGroup<T> {
    pub name: Box<[u8]>,
    pub members: Vec<Arc<T>>,
}

impl<T> SubResult<T> {
    fn empty() -> Self {
        SubResult {
            plain: Vec::new(),
            queues: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }
}

struct Node<T> {
    next: Option<Box<Level<T>>>,
    plain: Vec<Arc<T>>,
    queues: Vec<QueueGroup<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            next: None,
            plain: Vec::new(),
            queues: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty()
            && self.queues.is_empty()
            && self.next.as_ref().is_none_or(|l| l.is_empty())
    }

    fn collect_into(&self, out: &mut SubResult<T>) {
        out.plain.extend(self.plain.iter().cloned());
        for group in &self.queues {
            match out.queues.iter_mut().find(|g| g.name == group.name) {
                Some(existing) => existing.members.extend(group.members.iter().cloned()),
                None => out.queues.push(QueueGroup {
                    name: group.name.clone(),
                    members: group.members.clone(),
                }),
            }
        }
    }
}

struct Level<T> {
    literal: FastMap<Box<[u8]>, Node<T>>,
    pwc: Option<Box<Node<T>>>,
    fwc: Option<Box<Node<T>>>,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            literal: FastMap::default(),
            pwc: None,
            fwc: None,
        }
    }
}

impl<T> Level<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.pwc.is_none() && self.fwc.is_none()
    }

    fn node_mut(&mut self, token: &[u8]) -> &mut Node<T> {
        match token {
            b"*" => self.pwc.get_or_insert_with(Default::default),
            b">" => self.fwc.get_or_insert_with(Default::default),
            _ => {
                if !self.literal.contains_key(token) {
                    self.literal.insert(token.into(), Node::default());
                }
                self.literal.get_mut(token).expect("inserted above")
            }
        }
    }

    fn match_into(&self, subject: &[u8], out: &mut SubResult<T>) {
        let (token, rest) = split_first_token(subject);
        if let Some(fwc) = &self.fwc {
            fwc.collect_into(out);
        }
        // Literal before `*`: the order the reference delivers in.
        if let Some(node) = self.literal.get(token) {
            Self::descend(node, rest, out);
        }
        if let Some(pwc) = &self.pwc {
            Self::descend(pwc, rest, out);
        }
    }

    fn descend(node: &Node<T>, rest: Option<&[u8]>, out: &mut SubResult<T>) {
        match rest {
            None => node.collect_into(out),
            Some(rest) => {
                if let Some(next) = &node.next {
                    next.match_into(rest, out);
                }
            }
        }
    }

    /// Removes `sub` under `subject`; prunes nodes left empty. Returns whether it was found.
    fn remove(&mut self, subject: &[u8], queue: Option<&[u8]>, sub: &Arc<T>) -> bool {
        let (token, rest) = split_first_token(subject);
        let (found, now_empty) = {
            let node = match token {
                b"*" => self.pwc.as_deref_mut(),
                b">" => self.fwc.as_deref_mut(),
                _ => self.literal.get_mut(token),
            };
            let Some(node) = node else { return false };
            let found = match rest {
                Some(rest) => node
                    .next
                    .as_mut()
                    .is_some_and(|next| next.remove(rest, queue, sub)),
                None => remove_from_node(node, queue, sub),
            };
            if node.next.as_ref().is_some_and(|n| n.is_empty()) {
                node.next = None;
            }
            (found, node.is_empty())
        };
        if now_empty {
            match token {
                b"*" => self.pwc = None,
                b">" => self.fwc = None,
                _ => {
                    self.literal.remove(token);
                }
            }
        }
        found
    }

    fn for_each(&self, f: &mut impl FnMut(&Arc<T>)) {
        let nodes = self
            .literal
            .values()
            .chain(self.pwc.as_deref())
            .chain(self.fwc.as_deref());
        for node in nodes {
            node.plain.iter().for_each(&mut *f);
            node.queues
                .iter()
                .flat_map(|g| g.members.iter())
                .for_each(&mut *f);
            if let Some(next) = &node.next {
                next.for_each(f);
            }
        }
    }
}

fn remove_from_node<T>(node: &mut Node<T>, queue: Option<&[u8]>, sub: &Arc<T>) -> bool {
    match queue {
        None => match node.plain.iter().position(|s| Arc::ptr_eq(s, sub)) {
            Some(i) => {
                node.plain.swap_remove(i);
                true
            }
            None => false,
        },
        Some(queue) => {
            let Some(gi) = node.queues.iter().position(|g| &*g.name == queue) else {
                return false;
            };
            let group = &mut node.queues[gi];
            let Some(i) = group.members.iter().position(|s| Arc::ptr_eq(s, sub)) else {
                return false;
            };
            group.members.swap_remove(i);
            if group.members.is_empty() {
                node.queues.swap_remove(gi);
            }
            true
        }
    }
}

fn split_first_token(subject: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr_dot(subject) {
        Some(i) => (&subject[..i], Some(&subject[i + 1..])),
        None => (subject, None),
    }
}

fn memchr_dot(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'.')
}

/// Most cached subjects; past it the cache is emptied (subjects are cheap to re-match).
const CACHE_MAX: usize = 1024;

/// Maps on the publish path use foldhash: much faster than SipHash on short subjects, and
/// still seeded per process, so subjects chosen by clients cannot be made to collide.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Match results by subject.
pub type MatchCache<T> = FastMap<Box<[u8]>, Arc<SubResult<T>>>;

pub struct Sublist<T> {
    root: RwLock<Level<T>>,
    cache: Mutex<MatchCache<T>>,
    generation: AtomicU64,
    count: AtomicU64,
    counters: Counters,
}

/// Cumulative counts for monitoring (`/subsz`).
#[derive(Default)]
struct Counters {
    inserts: AtomicU64,
    removes: AtomicU64,
    matches: AtomicU64,
    cache_hits: AtomicU64,
}

/// What `/subsz` reports about the index, nats-server's `SublistStats`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SublistStats {
    pub num_subscriptions: u64,
    pub num_cache: u64,
    pub num_inserts: u64,
    pub num_removes: u64,
    pub num_matches: u64,
    pub cache_hit_rate: f64,
    pub max_fanout: u64,
    pub avg_fanout: f64,
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Sublist {
            root: RwLock::new(Level::default()),
            cache: Mutex::new(MatchCache::default()),
            generation: AtomicU64::new(0),
            count: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }
}

impl<T> Sublist<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes whenever the set of subscriptions changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of subscriptions held.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds `sub` under a valid `subject` (callers validate first).
    pub fn insert(&self, subject: &[u8], queue: Option<&[u8]>, sub: Arc<T>) {
        let mut root = self.root.write();
        let mut level = &mut *root;
        let mut tokens = subject.split(|&b| b == b'.').peekable();
        let node = loop {
            let token = tokens.next().unwrap_or_default();
            let node = level.node_mut(token);
            if tokens.peek().is_none() {
                break node;
            }
            level = node.next.get_or_insert_with(Default::default);
        };
        match queue {
            None => node.plain.push(sub),
            Some(queue) => match node.queues.iter_mut().find(|g| &*g.name == queue) {
                Some(group) => group.members.push(sub),
                None => node.queues.push(QueueGroup {
                    name: queue.into(),
                    members: vec![sub],
                }),
            },
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        self.changed();
        drop(root);
    }

    /// Removes `sub`; returns whether it was there.
    pub fn remove(&self, subject: &[u8], queue: Option<&[u8]>, sub: &Arc<T>) -> bool {
        let mut root = self.root.write();
        let found = root.remove(subject, queue, sub);
        if found {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.counters.removes.fetch_add(1, Ordering::Relaxed);
            self.changed();
        }
        found
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.lock().clear();
    }

    /// All subscriptions matching a literal `subject`.
    pub fn matches(&self, subject: &[u8]) -> Arc<SubResult<T>> {
        self.counters.matches.fetch_add(1, Ordering::Relaxed);
        if let Some(hit) = self.cache.lock().get(subject) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit.clone();
        }
        let root = self.root.read();
        let generation = self.generation();
        let mut out = SubResult::empty();
        // A subject with an empty token (`foo..bar`) matches nothing, not even `>`.
        if !subject.is_empty()
            && !subject.starts_with(b".")
            && !subject.ends_with(b".")
            && memchr::memmem::find(subject, b"..").is_none()
        {
            root.match_into(subject, &mut out);
        }
        let out = Arc::new(out);
        drop(root);
        let mut cache = self.cache.lock();
        // Only cache if nothing changed since the match, or a stale result could stick.
        if self.generation() == generation {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(subject.into(), out.clone());
        }
        out
    }

    /// Counters and cache figures for monitoring. Fan-out is measured over the cached
    /// results (plain subscriptions plus queue groups), as nats-server does.
    pub fn stats(&self) -> SublistStats {
        let c = &self.counters;
        let matches = c.matches.load(Ordering::Relaxed);
        let hits = c.cache_hits.load(Ordering::Relaxed);
        let (num_cache, total_fanout, max_fanout) = {
            let cache = self.cache.lock();
            let mut total = 0u64;
            let mut max = 0u64;
            for result in cache.values() {
                let fanout = (result.plain.len() + result.queues.len()) as u64;
                total += fanout;
                max = max.max(fanout);
            }
            (cache.len() as u64, total, max)
        };
        SublistStats {
            num_subscriptions: self.count(),
            num_cache,
            num_inserts: c.inserts.load(Ordering::Relaxed),
            num_removes: c.removes.load(Ordering::Relaxed),
            num_matches: matches,
            cache_hit_rate: if matches > 0 {
                hits as f64 / matches as f64
            } else {
                0.0
            },
            max_fanout,
            avg_fanout: if num_cache > 0 {
                total_fanout as f64 / num_cache as f64
            } else {
                0.0
            },
        }
    }

    /// Visits every subscription (for monitoring and for sending interest to new routes).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<T>)) {
        self.root.read().for_each(&mut f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(result: &SubResult<u32>) -> (Vec<u32>, Vec<(String, Vec<u32>)>) {
        let mut plain: Vec<u32> = result.plain.iter().map(|s| **s).collect();
        plain.sort();
        let mut queues: Vec<(String, Vec<u32>)> = result
            .queues
            .iter()
            .map(|g| {
                let mut m: Vec<u32> = g.members.iter().map(|s| **s).collect();
                m.sort();
                (String::from_utf8_lossy(&g.name).into_owned(), m)
            })
            .collect();
        queues.sort();
        (plain, queues)
    }

    #[test]
    fn literal_and_wildcards() {
        let sl = Sublist::new();
        let subs: Vec<(&str, Arc<u32>)> = vec![
            ("foo.bar", Arc::new(1)),
            ("foo.*", Arc::new(2)),
            ("foo.>", Arc::new(3)),
            (">", Arc::new(4)),
            ("*.bar", Arc::new(5)),
            ("foo.bar.baz", Arc::new(6)),
            ("foo", Arc::new(7)),
        ];
        for (s, sub) in &subs {
            sl.insert(s.as_bytes(), None, sub.clone());
        }
        assert_eq!(ids(&sl.matches(b"foo.bar")).0, vec![1, 2, 3, 4, 5]);
        assert_eq!(ids(&sl.matches(b"foo.bar.baz")).0, vec![3, 4, 6]);
        assert_eq!(ids(&sl.matches(b"foo")).0, vec![4, 7]);
        assert_eq!(ids(&sl.matches(b"bar")).0, vec![4]);
        assert!(sl.matches(b"foo..bar").is_empty());
        assert!(sl.matches(b".foo").is_empty());
        assert_eq!(sl.count(), 7);
        for (s, sub) in &subs {
            assert!(sl.remove(s.as_bytes(), None, sub));
            assert!(!sl.remove(s.as_bytes(), None, sub));
        }
        assert_eq!(sl.count(), 0);
        assert!(sl.matches(b"foo.bar").is_empty());
        assert!(sl.root.read().is_empty(), "pruned");
    }

    #[test]
    fn stats_for_monitoring() {
        let sl = Sublist::new();
        let a = Arc::new(1u32);
        sl.insert(b"foo.*", None, a.clone());
        sl.insert(b"foo.bar", Some(b"q"), Arc::new(2));
        sl.matches(b"foo.bar");
        sl.matches(b"foo.bar");
        sl.matches(b"foo.baz");
        sl.remove(b"foo.*", None, &a);
        sl.matches(b"foo.bar");
        let st = sl.stats();
        assert_eq!(
            (st.num_subscriptions, st.num_inserts, st.num_removes),
            (1, 2, 1)
        );
        assert_eq!((st.num_matches, st.num_cache, st.max_fanout), (4, 1, 1));
        assert_eq!(st.cache_hit_rate, 0.25);
        assert_eq!(st.avg_fanout, 1.0);
    }

    #[test]
    fn queue_groups_merge_by_name() {
        let sl = Sublist::new();
        sl.insert(b"foo.*", Some(b"q1"), Arc::new(1u32));
        sl.insert(b"foo.bar", Some(b"q1"), Arc::new(2));
        sl.insert(b"foo.bar", Some(b"q2"), Arc::new(3));
        sl.insert(b"foo.bar", None, Arc::new(4));
        let (plain, queues) = ids(&sl.matches(b"foo.bar"));
        assert_eq!(plain, vec![4]);
        assert_eq!(
            queues,
            vec![("q1".into(), vec![1, 2]), ("q2".into(), vec![3])]
        );
    }

    #[test]
    fn cache_is_invalidated_by_changes() {
        let sl = Sublist::new();
        let a = Arc::new(1u32);
        sl.insert(b"a.b", None, a.clone());
        let g = sl.generation();
        assert_eq!(ids(&sl.matches(b"a.b")).0, vec![1]);
        sl.insert(b"a.*", None, Arc::new(2));
        assert_ne!(sl.generation(), g);
        assert_eq!(ids(&sl.matches(b"a.b")).0, vec![1, 2]);
        sl.remove(b"a.b", None, &a);
        assert_eq!(ids(&sl.matches(b"a.b")).0, vec![2]);
    }

    /// The reference semantics, token by token.
    fn naive_match(pattern: &str, subject: &str) -> bool {
        let p: Vec<&str> = pattern.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, pt) in p.iter().enumerate() {
            if *pt == ">" {
                return s.len() > i;
            }
            match s.get(i) {
                None => return false,
                Some(st) if *pt != "*" && pt != st => return false,
                _ => {}
            }
        }
        p.len() == s.len()
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof!["a", "b", "c", Just("*".to_string())], 1..4)
            .prop_flat_map(|tokens| {
                let joined = tokens.join(".");
                prop_oneof![
                    Just(joined.clone()),
                    Just(format!("{joined}.>")),
                    Just(">".to_string())
                ]
            })
    }

    fn subject() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof!["a", "b", "c"], 1..5).prop_map(|t| t.join("."))
    }

    proptest! {
        #[test]
        fn agrees_with_naive_matcher(
            patterns in prop::collection::vec(pattern(), 0..30),
            removals in prop::collection::vec(any::<bool>(), 30),
            subjects in prop::collection::vec(subject(), 1..20),
        ) {
            let sl = Sublist::new();
            let subs: Vec<Arc<u32>> = (0..patterns.len() as u32).map(Arc::new).collect();
            for (p, s) in patterns.iter().zip(&subs) {
                sl.insert(p.as_bytes(), None, s.clone());
            }
            let mut live = vec![true; patterns.len()];
            for (i, (p, s)) in patterns.iter().zip(&subs).enumerate() {
                if removals[i] {
                    prop_assert!(sl.remove(p.as_bytes(), None, s));
                    live[i] = false;
                }
            }
            for subject in &subjects {
                let mut expected: Vec<u32> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| live[*i] && naive_match(p, subject))
                    .map(|(i, _)| i as u32)
                    .collect();
                expected.sort();
                prop_assert_eq!(ids(&sl.matches(subject.as_bytes())).0, expected, "subject {}", subject);
            }
        }
    }
}
