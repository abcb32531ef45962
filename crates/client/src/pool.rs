//! The server pool and the reconnect backoff: plain state, no I/O, unit-tested.
//!
//! The pool is shuffled once (unless the order is to be kept). [`ServerPool::next`] takes the
//! front server and moves it to the back, so after a disconnect the other servers are tried
//! before the one that just failed. Servers announced in INFO `connect_urls` are added (and ones
//! discovered earlier that the cluster no longer lists are dropped; configured ones stay).

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::options::ServerAddr;

#[derive(Debug, Clone)]
struct Entry {
    addr: ServerAddr,
    discovered: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ServerPool {
    entries: Vec<Entry>,
    randomize: bool,
}

impl ServerPool {
    pub fn new(addrs: Vec<ServerAddr>, randomize: bool, rng: &mut impl Rng) -> ServerPool {
        let mut entries: Vec<Entry> = Vec::new();
        for addr in addrs {
            if !entries.iter().any(|e| e.addr == addr) {
                entries.push(Entry {
                    addr,
                    discovered: false,
                });
            }
        }
        if randomize {
            entries.shuffle(rng);
        }
        ServerPool { entries, randomize }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The server to try next; it moves to the back of the pool.
    pub fn next(&mut self) -> Option<ServerAddr> {
        if self.entries.is_empty() {
            return None;
        }
        let e = self.entries.remove(0);
        let addr = e.addr.clone();
        self.entries.push(e);
        Some(addr)
    }

    /// Merges INFO `connect_urls` (`host:port`). Returns the newly added servers. `current`
    /// supplies credentials for discovered servers and is never removed.
    pub fn update_discovered(
        &mut self,
        urls: &[String],
        current: &ServerAddr,
        rng: &mut impl Rng,
    ) -> Vec<ServerAddr> {
        let mut listed = Vec::new();
        for url in urls {
            let Ok(mut addr) = url.parse::<ServerAddr>() else {
                continue;
            };
            if addr.user.is_none() {
                addr.user.clone_from(&current.user);
                addr.password.clone_from(&current.password);
            }
            addr.tls = current.tls;
            listed.push(addr);
        }
        let same = |a: &ServerAddr, b: &ServerAddr| a.host == b.host && a.port == b.port;
        self.entries.retain(|e| {
            !e.discovered || same(&e.addr, current) || listed.iter().any(|l| same(l, &e.addr))
        });
        let mut added = Vec::new();
        for addr in listed {
            if !self.entries.iter().any(|e| same(&e.addr, &addr)) {
                added.push(addr.clone());
                self.entries.push(Entry {
                    addr,
                    discovered: true,
                });
            }
        }
        if !added.is_empty() {
            // The current server goes last, so that a reconnect tries the others first.
            if let Some(i) = self.entries.iter().position(|e| same(&e.addr, current)) {
                let e = self.entries.remove(i);
                self.entries.push(e);
            }
            let n = self.entries.len();
            if self.randomize && n > 2 {
                self.entries[..n - 1].shuffle(rng);
            }
        }
        added
    }

    #[cfg(test)]
    fn addrs(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.addr.host_port()).collect()
    }
}

/// The delay before reconnect attempt number `attempt` (0-based, counting failed attempts
/// since the disconnect): none for the first, then `base` doubling up to `max`, plus a random
/// jitter of up to `jitter`.
pub(crate) fn backoff(
    attempt: usize,
    base: Duration,
    max: Duration,
    jitter: Duration,
    rng: &mut impl Rng,
) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let shift = (attempt - 1).min(20) as u32;
    let delay = base.saturating_mul(1u32 << shift).min(max);
    let jitter = if jitter.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_nanos(rng.random_range(0..=jitter.as_nanos() as u64))
    };
    delay + jitter
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn addrs(list: &[&str]) -> Vec<ServerAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn next_rotates_and_dedups() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut pool = ServerPool::new(addrs(&["a:1", "b:2", "a:1", "c:3"]), false, &mut rng);
        assert_eq!(pool.len(), 3);
        let order: Vec<String> = (0..4).map(|_| pool.next().unwrap().host_port()).collect();
        assert_eq!(order, ["a:1", "b:2", "c:3", "a:1"]);
    }

    #[test]
    fn shuffle_keeps_every_server() {
        let mut rng = StdRng::seed_from_u64(7);
        let list: Vec<String> = (0..20).map(|i| format!("h{i}:1")).collect();
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        let pool = ServerPool::new(addrs(&refs), true, &mut rng);
        let mut got = pool.addrs();
        assert_ne!(got, list, "shuffled");
        got.sort();
        let mut want = list.clone();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn discovery_adds_drops_and_inherits_credentials() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut pool = ServerPool::new(addrs(&["nats://u:p@a:1"]), false, &mut rng);
        let current = pool.next().unwrap();
        let added = pool.update_discovered(
            &["a:1".into(), "b:2".into(), "c:3".into()],
            &current,
            &mut rng,
        );
        assert_eq!(
            added.iter().map(ServerAddr::host_port).collect::<Vec<_>>(),
            ["b:2", "c:3"]
        );
        assert_eq!(added[0].user.as_deref(), Some("u"));
        assert_eq!(pool.len(), 3);
        // c leaves the cluster; a (configured) stays even when not listed.
        let added = pool.update_discovered(&["b:2".into()], &current, &mut rng);
        assert!(added.is_empty());
        let mut left = pool.addrs();
        left.sort();
        assert_eq!(left, ["a:1", "b:2"]);
        // The next server after a discovery is not the current one.
        assert_eq!(pool.next().unwrap().host_port(), "b:2");
    }

    #[test]
    fn backoff_grows_to_max_with_bounded_jitter() {
        let mut rng = StdRng::seed_from_u64(3);
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let j = Duration::from_millis(50);
        assert_eq!(backoff(0, base, max, j, &mut rng), Duration::ZERO);
        for (attempt, want) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let d = backoff(attempt, base, max, j, &mut rng);
            let want = Duration::from_millis(want);
            assert!(d >= want && d <= want + j, "attempt {attempt}: {d:?}");
        }
        assert_eq!(
            backoff(3, base, max, Duration::ZERO, &mut rng),
            Duration::from_millis(400)
        );
    }
}
