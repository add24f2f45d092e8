//! Failed authentications, limited per client address.
//!
//! A client that presented `limit` bad tokens within `window` is answered 429 (with
//! `Retry-After`) on every route that needs a token until the oldest of those failures
//! leaves the window, without its token even being looked up: guessing stays slow however
//! fast the client asks. Successful authentications do not count, and neither do requests
//! that carry no token at all (nothing was guessed). IPv6 clients are counted per /64, the
//! block one host usually holds, so rotating addresses inside it does not help.
//!
//! Memory is bounded: at most `limit` timestamps per client and at most `max_clients`
//! clients; when full, clients whose failures all left the window are dropped, then the
//! one whose last failure is oldest.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct AuthLimiter {
    limit: usize,
    window: Duration,
    max_clients: usize,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AuthLimiter {
    /// `limit` 0 turns the limiter off.
    pub fn new(limit: u32, window: Duration, max_clients: usize) -> Self {
        Self { limit: limit as usize, window, max_clients: max_clients.max(1), failures: Mutex::default() }
    }

    /// How long `client` must wait, if it is blocked now.
    pub fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let mut failures = self.failures.lock().expect("limiter lock");
        let key = bucket(client);
        let times = failures.get_mut(&key)?;
        while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.is_empty() {
            failures.remove(&key);
            return None;
        }
        (times.len() >= self.limit).then(|| {
            let free_at = times[times.len() - self.limit] + self.window;
            free_at.saturating_duration_since(now)
        })
    }

    /// Count one failed authentication by `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut failures = self.failures.lock().expect("limiter lock");
        let key = bucket(client);
        if !failures.contains_key(&key) && failures.len() >= self.max_clients {
            let window = self.window;
            failures.retain(|_, t| t.back().is_some_and(|last| now.saturating_duration_since(*last) < window));
            if failures.len() >= self.max_clients {
                let oldest = failures.iter().min_by_key(|(_, t)| t.back().copied()).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    failures.remove(&k);
                }
            }
        }
        let times = failures.entry(key).or_default();
        times.push_back(now);
        while times.len() > self.limit {
            times.pop_front();
        }
    }

    /// Clients tracked now (for tests and the metrics page).
    pub fn tracked(&self) -> usize {
        self.failures.lock().expect("limiter lock").len()
    }
}

/// IPv4 addresses count alone; IPv6 addresses by their /64 (IPv4-mapped ones as IPv4).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_the_limit_until_the_window_passes() {
        let l = AuthLimiter::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..2 {
            l.failed(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(2)), None, "two failures are not three");
        l.failed(a, t0 + Duration::from_secs(10));
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)), "until the first failure is a minute old");
        assert_eq!(l.blocked(ip("192.0.2.2"), t0), None, "other clients are not affected");
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(59)), Some(Duration::from_secs(1)));
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(60)), None, "the first failure left the window");
        l.failed(a, t0 + Duration::from_secs(60));
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(60)), Some(Duration::from_secs(1)), "sliding, not fixed, windows");
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(200)), None);
        assert_eq!(l.tracked(), 0, "expired clients are forgotten when looked at");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = AuthLimiter::new(2, Duration::from_secs(60), 100);
        let t = Instant::now();
        l.failed(ip("2001:db8:1:2::1"), t);
        l.failed(ip("2001:db8:1:2:ffff::9"), t);
        assert!(l.blocked(ip("2001:db8:1:2::77"), t).is_some(), "one /64");
        assert!(l.blocked(ip("2001:db8:1:3::1"), t).is_none(), "the next /64 is someone else");
        l.failed(ip("::ffff:198.51.100.4"), t);
        l.failed(ip("198.51.100.4"), t);
        assert!(l.blocked(ip("198.51.100.4"), t).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let l = AuthLimiter::new(5, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for i in 0..50u32 {
            l.failed(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(u64::from(i)));
            for _ in 0..10 {
                l.failed(ip("203.0.113.9"), t0 + Duration::from_millis(u64::from(i)));
            }
            assert!(l.tracked() <= 3);
        }
        assert!(l.blocked(ip("203.0.113.9"), t0 + Duration::from_millis(50)).is_some(), "the busiest client is kept");
        let l = AuthLimiter::new(1, Duration::from_secs(1), 2);
        l.failed(ip("192.0.2.1"), t0);
        l.failed(ip("192.0.2.2"), t0);
        l.failed(ip("192.0.2.3"), t0 + Duration::from_secs(5));
        assert_eq!(l.tracked(), 1, "expired clients go first");
    }

    #[test]
    fn a_limit_of_zero_is_off() {
        let l = AuthLimiter::new(0, Duration::from_secs(60), 10);
        let t = Instant::now();
        for _ in 0..100 {
            l.failed(ip("192.0.2.1"), t);
        }
        assert_eq!((l.blocked(ip("192.0.2.1"), t), l.tracked()), (None, 0));
    }
}
