//! The worker pool that runs blocking apps: threads started on demand up to `threads`, one
//! queue, and as few wake-ups as keep every queued request moving.
//!
//! tokio's `spawn_blocking` wakes (or starts) a thread for every call, so a server under load
//! pays a thread switch or two per request. Here a job is queued, and a thread is woken only
//! once the runtime's thread has polled every task that is ready (the requests that came in
//! together), and only when no thread is awake and looking at the queue: one thread switch
//! then serves the whole batch. While jobs wait, a watcher on the runtime checks every
//! [`STALL`] that some job started: when none did (every awake thread is held by its job), it
//! wakes or starts one more thread, so a job that blocks for seconds holds up the jobs behind
//! it for one or two `STALL`s at most (as long as threads are left).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A job of the pool: one request's app call and the polls of its body. Jobs are queued by
/// value, so that a job costs the pool no allocation of its own.
pub(crate) trait Job: Send + 'static {
    /// Does the job, on a thread of the pool.
    fn run(self);
}

impl Job for Box<dyn FnOnce() + Send> {
    fn run(self) {
        self()
    }
}

/// How long a thread waits for work before it ends.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long queued jobs may wait while no job starts before the pool wakes one more thread.
pub(crate) const STALL: Duration = Duration::from_millis(1);

/// The pool. Dropping it lets its threads finish their jobs and end.
pub(crate) struct Pool<J> {
    shared: Arc<Shared<J>>,
}

impl<J> std::fmt::Debug for Pool<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("state", &*self.shared.lock())
            .finish_non_exhaustive()
    }
}

struct Shared<J> {
    state: Mutex<State<J>>,
    wake: Condvar,
    max_threads: usize,
    idle_timeout: Duration,
    /// The scheduling policy of the thread that made the pool, for its threads (they are
    /// started by the event loop's, which may run under `SCHED_BATCH`).
    policy: Option<super::sched::Policy>,
}

struct State<J> {
    queue: VecDeque<J>,
    /// Threads alive.
    threads: usize,
    /// Threads awake and not running a job: they look at the queue before they sleep.
    looking: usize,
    /// Threads asleep.
    sleeping: usize,
    /// Wake-ups sent and not yet taken by a sleeping thread.
    wakeups: usize,
    /// A [`Flush`] is owed: its holder will make sure a thread looks at the queue.
    flush_pending: bool,
    /// The watcher runs.
    watched: bool,
    /// Jobs started so far (wrapping), for the watcher.
    started: u64,
    closed: bool,
}

impl<J> Default for State<J> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            threads: 0,
            looking: 0,
            sleeping: 0,
            wakeups: 0,
            flush_pending: false,
            watched: false,
            started: 0,
            closed: false,
        }
    }
}

impl<J> std::fmt::Debug for State<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("threads", &self.threads)
            .field("looking", &self.looking)
            .field("sleeping", &self.sleeping)
            .finish_non_exhaustive()
    }
}

impl<J: Job> Pool<J> {
    /// A pool of at most `max_threads` threads (at least one); none is started yet.
    pub(crate) fn new(max_threads: usize) -> Pool<J> {
        Pool::with_idle_timeout(max_threads, IDLE_TIMEOUT)
    }

    fn with_idle_timeout(max_threads: usize, idle_timeout: Duration) -> Pool<J> {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                max_threads: max_threads.max(1),
                idle_timeout,
                policy: super::sched::Policy::current(),
            }),
        }
    }

    /// Runs `job` on a thread of the pool. A job that panics ends only itself.
    ///
    /// The first job of a batch returns the wake-up the batch is owed: the caller drops it
    /// once the tasks that are ready now have been polled (and have queued their jobs), which
    /// costs no task of its own ([`AppRun`](super::AppRun) holds it across one yield of its
    /// task). Dropping it at once is always correct; only the batching is lost. Called outside
    /// a tokio runtime, a thread is woken at once, no watcher runs, and nothing is returned.
    pub(crate) fn spawn(&self, job: J) -> Option<Flush<J>> {
        let mut state = self.shared.lock();
        state.queue.push_back(job);
        if state.flush_pending {
            return None;
        }
        state.flush_pending = true;
        drop(state);
        let flush = Flush(self.shared.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(_) => Some(flush),
            Err(_) => {
                drop(flush);
                None
            }
        }
    }
}

/// A wake-up owed to the queue. Dropping it makes sure a thread looks at the queue, and that
/// the watcher runs while jobs wait: in the drop, so that it happens however its holder ends
/// (a task dropped unpolled as the runtime shuts down included), and no job is left waiting
/// for a wake-up that never comes.
#[must_use = "dropping it wakes the pool: hold it until the tasks ready now have run"]
pub(crate) struct Flush<J: Job>(Arc<Shared<J>>);

impl<J: Job> Drop for Flush<J> {
    fn drop(&mut self) {
        let shared = &self.0;
        let mut state = shared.lock();
        state.flush_pending = false;
        let wake = Shared::wake_one_if_none_looking(shared, &mut state);
        let runtime = tokio::runtime::Handle::try_current();
        let watch_now = !(state.queue.is_empty() || state.watched || runtime.is_err());
        state.watched |= watch_now;
        drop(state);
        wake.send(shared);
        // Not under the lock: a runtime that is shutting down drops the task at once.
        if let (true, Ok(runtime)) = (watch_now, runtime) {
            let watching = Watching {
                shared: shared.clone(),
                cleared: false,
            };
            drop(runtime.spawn(watch(watching)));
        }
    }
}

/// The watcher's mark in the pool's state, cleared however the watcher ends: by the watcher
/// itself, under the lock in which it sees nothing left to watch (so that a wake-up owed at
/// that moment starts a new watcher), or here when its task is dropped unfinished.
struct Watching<J> {
    shared: Arc<Shared<J>>,
    cleared: bool,
}

impl<J> Drop for Watching<J> {
    fn drop(&mut self) {
        if !self.cleared {
            self.shared.lock().watched = false;
        }
    }
}

/// Every [`STALL`] while jobs wait: if no job started since the last look, every awake thread
/// is held by its job; wakes or starts another.
async fn watch<J: Job>(mut watching: Watching<J>) {
    let shared = watching.shared.clone();
    let mut started = shared.lock().started;
    loop {
        tokio::time::sleep(STALL).await;
        let mut state = shared.lock();
        if state.queue.is_empty() || state.closed {
            state.watched = false;
            watching.cleared = true;
            return;
        }
        let wake = match state.started == started {
            true => Shared::wake_one_if_none_looking(&shared, &mut state),
            false => Wake::None,
        };
        started = state.started;
        drop(state);
        wake.send(&shared);
    }
}

impl<J> Drop for Pool<J> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// A wake-up of a sleeping thread, owed under the lock and sent once it is released: sent
/// under the lock, on a machine where the pool's threads and the runtime's share a core, the
/// woken thread runs at once, finds the lock still held and sleeps again, and the runtime's
/// thread wakes it a second time as it unlocks (two more thread switches per wake-up).
#[must_use = "a wake-up owed is sent with `send`, after the lock is released"]
enum Wake {
    None,
    One,
}

impl Wake {
    fn send<J>(self, shared: &Shared<J>) {
        if let Wake::One = self {
            shared.wake.notify_one();
        }
    }
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        // A job never runs under the lock, so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<J: Job> Shared<J> {
    /// Makes sure a thread will look at the queue: when none is awake and looking (or about
    /// to be), owes a sleeping one a wake-up (sent by the caller once it has released the
    /// lock), or starts one while there is room.
    fn wake_one_if_none_looking(shared: &Arc<Shared<J>>, state: &mut State<J>) -> Wake {
        if state.queue.is_empty() || state.looking + state.wakeups > 0 {
            return Wake::None;
        }
        if state.sleeping > state.wakeups {
            state.wakeups += 1;
            return Wake::One;
        } else if state.threads < shared.max_threads {
            state.threads += 1;
            state.looking += 1;
            let shared = shared.clone();
            // Apps may use the server's tokio runtime (timers, sockets) from the pool.
            let runtime = tokio::runtime::Handle::try_current().ok();
            let started = std::thread::Builder::new()
                .name("gateway-app".into())
                .spawn(move || {
                    if let Some(Err(error)) = shared.policy.map(super::sched::Policy::apply) {
                        tracing::debug!(%error, "cannot set a worker thread's scheduling policy");
                    }
                    let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    shared.work();
                });
            if let Err(error) = started {
                tracing::error!(%error, "cannot start a worker thread");
                state.threads -= 1;
                state.looking -= 1;
            }
        }
        // Otherwise every thread is running a job; the first to finish takes the next.
        Wake::None
    }

    /// A thread's life: take jobs while there are some, sleep when there are none, end after
    /// `IDLE_TIMEOUT` without work or when the pool is dropped.
    fn work(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                state.looking -= 1;
                state.started = state.started.wrapping_add(1);
                drop(state);
                // The driver catches the app's panics; this keeps the thread for anything else.
                let _ = catch_unwind(AssertUnwindSafe(|| job.run()));
                state = self.lock();
                state.looking += 1;
                continue;
            }
            if state.closed {
                break;
            }
            state.looking -= 1;
            state.sleeping += 1;
            let (woken, timeout) = self
                .wake
                .wait_timeout_while(state, self.idle_timeout, |s| s.wakeups == 0 && !s.closed)
                .unwrap_or_else(|e| e.into_inner());
            state = woken;
            state.sleeping -= 1;
            state.looking += 1;
            if state.wakeups > 0 {
                state.wakeups -= 1;
            } else if timeout.timed_out() && state.queue.is_empty() {
                break;
            }
        }
        state.looking -= 1;
        state.threads -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    type Boxed = Box<dyn FnOnce() + Send>;

    impl Pool<Boxed> {
        /// Queues a closure; the wake-up it may owe goes after the tasks ready now.
        fn run(&self, job: impl FnOnce() + Send + 'static) {
            if let Some(flush) = self.spawn(Box::new(job)) {
                drop(tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    drop(flush);
                }));
            }
        }
    }

    /// A runtime for the tasks that hold the pool's wake-ups, as the server's.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn every_job_runs() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let pool = Pool::new(4);
        let (tx, rx) = mpsc::channel();
        for n in 0..1000 {
            let tx = tx.clone();
            pool.run(move || tx.send(n).unwrap());
        }
        let mut seen: Vec<i32> = (0..1000).map(|_| rx.recv().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_blocked_job_does_not_hold_up_the_next() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let pool = Pool::new(4);
        let (running_tx, running_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        pool.run(move || {
            running_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        running_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the first job ran");
        pool.run(move || done_tx.send(()).unwrap());
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the second job ran while the first was blocked");
        release_tx.send(()).unwrap();
    }

    #[test]
    fn no_more_threads_than_the_limit_run_at_once() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let pool = Pool::new(3);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        for _ in 0..30 {
            let (running, most, tx) = (running.clone(), most.clone(), tx.clone());
            pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            });
        }
        for _ in 0..30 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} jobs at once");
        assert!(pool.shared.lock().threads <= 3);
    }

    #[test]
    fn jobs_from_many_threads_all_run_while_threads_come_and_go() {
        let runtime = runtime();
        let _entered = runtime.enter();
        // Short idle timeout: threads retire and start all the time, racing the spawns.
        let pool = Arc::new(Pool::with_idle_timeout(4, Duration::from_millis(2)));
        let done = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let (pool, done) = (pool.clone(), done.clone());
                let runtime = runtime.handle().clone();
                std::thread::spawn(move || {
                    let _entered = runtime.enter();
                    for n in 0..500u64 {
                        let done = done.clone();
                        pool.run(move || {
                            if (n + p) % 7 == 0 {
                                std::thread::sleep(Duration::from_micros(300));
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                        });
                        if n % 50 == 0 {
                            // A pause long enough for idle threads to retire.
                            std::thread::sleep(Duration::from_millis(3));
                        }
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.join().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.load(Ordering::SeqCst) < 2000 {
            assert!(
                Instant::now() < deadline,
                "{} of 2000 jobs ran; {:?}",
                done.load(Ordering::SeqCst),
                pool.shared.lock()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_job_queued_as_the_runtime_shuts_down_still_gets_a_thread() {
        let pool = Pool::new(2);
        let (tx, rx) = mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        {
            let _entered = runtime.enter();
            // The task that owes the wake-up is spawned, but nothing drives this runtime.
            pool.run(move || tx.send(()).unwrap());
        }
        drop(runtime);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the job ran once its wake-up task was dropped");
        // Outside any runtime, a job gets a thread at once.
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_panicking_job_leaves_the_pool_working() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let pool = Pool::new(1);
        pool.run(|| panic!("job failed"));
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn threads_end_when_the_pool_is_dropped() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let pool = Pool::new(2);
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let shared = pool.shared.clone();
        drop(pool);
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.lock().threads > 0 {
            assert!(Instant::now() < deadline, "threads still alive");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
