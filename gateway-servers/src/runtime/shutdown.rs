//! Shutdown: graceful (stop accepting, let requests in progress finish within a deadline) and
//! immediate, from signals or from code; and the drain of a worker process, which stops
//! accepting before it lets its connections wind down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::watch;

/// A shutdown switch shared by a server's tasks. Cloning gives another handle to the same
/// switch.
///
/// ```
/// use gateway_servers::runtime::Shutdown;
///
/// let shutdown = Shutdown::new();
/// assert!(!shutdown.is_graceful());
/// shutdown.stop_accepting();
/// assert!(shutdown.is_not_accepting() && !shutdown.is_graceful());
/// shutdown.graceful();
/// assert!(shutdown.is_graceful() && !shutdown.is_immediate());
/// shutdown.immediate();
/// assert!(shutdown.is_immediate());
/// ```
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// The level, for waiting on it.
    state: Arc<watch::Sender<u8>>,
    /// The same level, for reading it without a lock: raised before `state`.
    level: Arc<AtomicU8>,
    /// Connections accepted that have not yet delivered their first bytes.
    unread: Arc<watch::Sender<usize>>,
}

const RUNNING: u8 = 0;
const NOT_ACCEPTING: u8 = 1;
const GRACEFUL: u8 = 2;
const IMMEDIATE: u8 = 3;

/// Counts a connection as unread until dropped (see [`Shutdown::drain`]).
#[derive(Debug)]
pub(crate) struct UnreadGuard(Arc<watch::Sender<usize>>);

impl Drop for UnreadGuard {
    fn drop(&mut self) {
        // Only the drain waits on the count, for zero: other changes wake nobody (waking
        // costs a lock per shard of the channel's notifier, for every connection).
        self.0.send_if_modified(|n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl Shutdown {
    /// A switch that is off.
    pub fn new() -> Self {
        Shutdown {
            state: Arc::new(watch::channel(RUNNING).0),
            level: Arc::new(AtomicU8::new(RUNNING)),
            unread: Arc::new(watch::channel(0).0),
        }
    }

    fn raise(&self, level: u8) {
        // Before the waiters are woken: a woken `Reached` reads it.
        self.level.fetch_max(level, Ordering::Release);
        self.state.send_if_modified(|s| {
            let changed = *s < level;
            *s = (*s).max(level);
            changed
        });
    }

    /// Asks for a graceful shutdown.
    pub fn graceful(&self) {
        self.raise(GRACEFUL);
    }

    /// Stops the accept loops (connections already accepted go on as if nothing happened).
    pub fn stop_accepting(&self) {
        self.raise(NOT_ACCEPTING);
    }

    /// Whether the accept loops were asked to stop (by [`Shutdown::stop_accepting`] or any
    /// shutdown).
    pub fn is_not_accepting(&self) -> bool {
        self.level() >= NOT_ACCEPTING
    }

    /// Waits until the accept loops are asked to stop.
    pub async fn wait_stop_accepting(&self) {
        self.reached(NOT_ACCEPTING).await;
    }

    /// A graceful shutdown that loses no request a client already sent: stops accepting, then
    /// waits (at most `grace`, or until an immediate shutdown) until every connection accepted
    /// so far has delivered its first bytes, and only then asks for the graceful shutdown, in
    /// which a connection closes once its request in progress is answered. Without the wait, a
    /// connection accepted an instant before, whose request is in the socket but not read yet,
    /// would count as idle and be closed unanswered. Connections still silent after `grace`
    /// count as idle. The launcher gives its `header_read_timeout` (after which such a connection
    /// would be closed anyway), within half its `shutdown_timeout`.
    pub async fn drain(&self, grace: Duration) {
        self.stop_accepting();
        let mut unread = self.unread.subscribe();
        tokio::select! {
            _ = unread.wait_for(|n| *n == 0) => {}
            () = tokio::time::sleep(grace) => {}
            () = self.wait_immediate() => {}
        }
        self.graceful();
    }

    /// The connections accepted that have not delivered their first bytes yet.
    #[cfg(test)]
    pub(crate) fn unread(&self) -> usize {
        *self.unread.borrow()
    }

    /// Counts an accepted connection as unread until the guard is dropped.
    pub(crate) fn unread_connection(&self) -> UnreadGuard {
        self.unread.send_if_modified(|n| {
            *n += 1;
            false
        });
        UnreadGuard(self.unread.clone())
    }

    /// Asks for an immediate shutdown.
    pub fn immediate(&self) {
        self.raise(IMMEDIATE);
    }

    /// Whether a shutdown (graceful or immediate) was asked for.
    pub fn is_graceful(&self) -> bool {
        self.level() >= GRACEFUL
    }

    /// Whether an immediate shutdown was asked for.
    pub fn is_immediate(&self) -> bool {
        self.level() >= IMMEDIATE
    }

    fn level(&self) -> u8 {
        self.level.load(Ordering::Acquire)
    }

    fn reached(&self, level: u8) -> Reached<'_> {
        Reached {
            shutdown: self,
            level,
            wait: None,
            registered: None,
        }
    }

    /// Waits until a shutdown is asked for. Cheap to poll again and again, as a branch of a
    /// connection's `select!` is.
    pub fn wait_graceful(&self) -> impl Future<Output = ()> + Send + '_ {
        self.reached(GRACEFUL)
    }

    /// Waits until an immediate shutdown is asked for.
    pub fn wait_immediate(&self) -> impl Future<Output = ()> + Send + '_ {
        self.reached(IMMEDIATE)
    }

    /// Listens for SIGTERM and SIGINT (in a task of the current tokio runtime): the first
    /// [drains](Shutdown::drain) (with `drain_grace`: the launcher passes the shorter of the
    /// config's `header_read_timeout` and half its `shutdown_timeout`), the second asks for an
    /// immediate shutdown.
    pub fn on_signals(&self, drain_grace: Duration) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = self.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                seen += 1;
                if seen == 1 {
                    tracing::info!(
                        "shutting down: finishing requests in progress (signal again to stop at once)"
                    );
                    // The drain ends early on the second signal (an immediate shutdown).
                    tokio::spawn({
                        let shutdown = shutdown.clone();
                        async move { shutdown.drain(drain_grace).await }
                    });
                } else {
                    tracing::warn!("stopping at once");
                    shutdown.immediate();
                    return;
                }
            }
        });
        Ok(())
    }
}

/// Resolves once the shutdown level reaches `level`. The wait on the channel is made at the
/// first poll; later polls with the same waker, while the level has not moved since the wait
/// last registered, return at once: the channel wakes that waker on any change, and a change
/// below `level` (which used up the registration) makes the next poll register again. A
/// connection's task polls this at every wake-up, and the channel's own poll takes a lock.
struct Reached<'a> {
    shutdown: &'a Shutdown,
    level: u8,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>,
    /// The level seen, and the waker given, when the wait last registered.
    registered: Option<(u8, Waker)>,
}

impl Future for Reached<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let now = this.shutdown.level();
        if now >= this.level {
            return Poll::Ready(());
        }
        if let Some((seen, waker)) = &this.registered
            && *seen == now
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let (shutdown, level) = (this.shutdown, this.level);
        let wait = this.wait.get_or_insert_with(|| {
            Box::pin(async move {
                let mut receiver = shutdown.state.subscribe();
                // The sender lives as long as `shutdown`, so waiting cannot fail.
                let _ = receiver.wait_for(|s| *s >= level).await;
            })
        });
        if wait.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.registered = Some((now, cx.waker().clone()));
        Poll::Pending
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wait_is_woken_by_every_raise_and_ends_at_its_own_level() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let shutdown = Shutdown::new();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(shutdown.wait_graceful());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // Polled again with nothing changed: still waiting, nothing woken.
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        // A level below its own wakes it, and it waits on.
        shutdown.stop_accepting();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // Its own level wakes it again (the wait registered anew), and it ends.
        shutdown.graceful();
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        // Made after the level was reached, a wait ends at its first poll.
        assert!(
            std::pin::pin!(shutdown.wait_graceful())
                .poll(&mut cx)
                .is_ready()
        );
    }
}
