//! Idle connections kept for the next request to the same backend.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A stack of idle connections, the most recently used on top (it is the likeliest to be
/// alive, and the others age out). Bounded in number and in idle time.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    idle: Mutex<Vec<(T, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl<T> Pool<T> {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently returned connection that `usable` accepts and that has not been idle
    /// too long; the others met on the way are dropped (closed).
    pub(crate) fn take(&self, usable: impl Fn(&T) -> bool) -> Option<T> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // The oldest are at the bottom: drop every expired one at once.
        idle.retain(|(_, since)| now.duration_since(*since) < self.idle_timeout);
        while let Some((conn, _)) = idle.pop() {
            if usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for a later request, unless the pool is full (then it is closed).
    pub(crate) fn put(&self, conn: T) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_recent_first_bounded_and_filtered() {
        let pool = Pool::new(2, Duration::from_secs(60));
        pool.put(1);
        pool.put(2);
        pool.put(3); // over the bound: closed
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.take(|&c| c != 2), Some(1), "2 is refused and dropped");
        assert_eq!(pool.take(|_| true), None);
    }

    #[test]
    fn expired_connections_are_dropped() {
        let pool = Pool::new(4, Duration::from_millis(1));
        pool.put(1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(pool.take(|_| true), None);
        assert_eq!(pool.len(), 0);
    }
}
