//! Worker processes (`--workers N`): a master process that holds the listening sockets and keeps
//! N forked worker processes serving on them, and what a worker does besides serving (its
//! signals, recycling after `--max-requests` or past `--max-rss`, `--harakiri`).
//!
//! The master binds every socket, then forks, before any runtime or other thread exists; it
//! never serves. It waits for signals synchronously (they are blocked, and taken with
//! `sigtimedwait`), so it needs no runtime and no signal handler:
//!
//! - SIGCHLD: a worker exited; its exit status is logged and, unless it was asked to stop, a
//!   new worker replaces it (after a second if it failed within a second of its start);
//! - SIGTERM: graceful stop: TERM to every worker, SIGKILL to any still alive a second after
//!   the shutdown timeout, then exit;
//! - SIGINT, SIGQUIT: fast stop: SIGINT to every worker (which stops at once), SIGKILL after a
//!   second;
//! - SIGHUP: graceful reload: N new workers are forked, and once all are serving the old ones
//!   get TERM (the sockets stay open in the master all along, so no connection is refused);
//! - SIGTTIN, SIGTTOU: one worker more, one fewer (never fewer than one; the oldest goes).
//!
//! A worker tells the master with real-time signals that it serves (`SIGRTMIN`) and that it
//! retires on its own (`SIGRTMIN+1`: max requests or max RSS reached), so the master forks its
//! replacement at once. A worker stops gracefully on SIGTERM with [`Shutdown::drain`], at once
//! on SIGINT or SIGQUIT, and gets SIGTERM when the master dies (`PR_SET_PDEATHSIG`).
//!
//! `--harakiri`: a thread of the worker watches the requests in progress; one running past the
//! limit is logged with its method and path, and the worker kills itself with SIGKILL (the
//! master logs the signal and replaces it). The same thread reads `/proc/self/statm` for
//! `--max-rss`.
//!
//! `--stats`: each worker counts into its slot of the shared region of [`super::stats`]; the
//! master folds an exited worker's slot into the retired total, and keeps one more child, the
//! stats process, that serves the endpoint ([`run_master_with_stats`]).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use gateway_core::Environ;
use tokio::sync::watch;

use super::Shutdown;
use super::stats::{self, Limit};

/// What the master does with its workers; see [`run_master`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Supervision {
    /// Worker processes (at least one).
    pub workers: usize,
    /// Requests a worker serves before it retires (`0`: no limit).
    pub max_requests: u64,
    /// Up to this many more requests, chosen at random per worker, so that workers started
    /// together do not all retire together.
    pub max_requests_jitter: u64,
    /// The longest a request may run before its worker is killed.
    pub harakiri: Option<Duration>,
    /// The resident memory, in bytes, past which a worker retires.
    pub max_rss: Option<u64>,
    /// How long a stopping worker has for its requests in progress.
    pub shutdown_timeout: Duration,
}

impl Supervision {
    /// One worker, no limit.
    pub fn new(shutdown_timeout: Duration) -> Self {
        Supervision {
            workers: 1,
            max_requests: 0,
            max_requests_jitter: 0,
            harakiri: None,
            max_rss: None,
            shutdown_timeout,
        }
    }
}

/// How long past its deadline the master lets a stopping worker exit by itself before SIGKILL.
const KILL_MARGIN: Duration = Duration::from_secs(1);

/// A worker that fails within this long after its start is replaced only this long after.
const RESPAWN_DELAY: Duration = Duration::from_secs(1);

/// The signal a worker sends the master once it serves.
fn sig_ready() -> libc::c_int {
    libc::SIGRTMIN()
}

/// The signal a worker sends the master when it retires on its own.
fn sig_retiring() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

// ---------------------------------------------------------------------------------------------
// The master.

#[derive(Debug)]
struct Worker {
    pid: libc::pid_t,
    generation: u64,
    started: Instant,
    ready: bool,
    /// When the worker was asked to stop (or said it retires): the time it gets SIGKILL.
    kill_at: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Running,
    Stopping,
}

struct Master<'a> {
    supervision: &'a Supervision,
    target: usize,
    generation: u64,
    workers: Vec<Worker>,
    state: State,
    respawn_after: Option<Instant>,
    /// The signal mask to give back to each worker.
    old_mask: libc::sigset_t,
    /// The stats process (`--stats`), when it runs: its pid and start.
    stats: Option<(libc::pid_t, Instant)>,
    stats_respawn_after: Option<Instant>,
}

/// The master process: forks `supervision.workers` workers, each running `worker` (which
/// serves on the sockets bound before, and returns its exit code), and supervises them until a
/// stop signal and the exit of the last worker. Must be called while the process has a single
/// thread (no runtime started): it fails otherwise. The master never serves; it takes its
/// signals synchronously (blocked, then `sigtimedwait`):
///
/// - SIGCHLD: a worker exited; its exit status is logged and, unless it was asked to stop, a
///   new worker replaces it (a second later if it failed within a second of its start);
/// - SIGTERM: graceful stop: TERM to every worker, SIGKILL to any still alive a second after
///   the shutdown timeout, then exit;
/// - SIGINT, SIGQUIT: fast stop: SIGINT to every worker (which stops at once), SIGKILL a
///   second later;
/// - SIGHUP: graceful reload: N new workers are forked, and once all serve, the old ones get
///   TERM (the sockets stay open in the master, so no connection is refused meanwhile);
/// - SIGTTIN, SIGTTOU: one worker more, one fewer (never fewer than one; the oldest goes).
///
/// In each worker, `worker` calls [`serve_as_worker`] once its servers run.
pub fn run_master(supervision: &Supervision, worker: impl FnMut() -> i32) -> ExitCode {
    master(supervision, worker, None::<fn() -> i32>)
}

/// [`run_master`], and one more child process that runs `stats` (it serves the stats endpoint
/// of `--stats`: the master itself runs no runtime and serves nothing): started with the
/// workers, replaced if it dies, killed when the master stops. It keeps the signal mask and
/// dispositions of the master's parent (TERM kills it), and gets SIGTERM when the master dies.
pub fn run_master_with_stats(
    supervision: &Supervision,
    worker: impl FnMut() -> i32,
    stats: impl FnMut() -> i32,
) -> ExitCode {
    master(supervision, worker, Some(stats))
}

fn master(
    supervision: &Supervision,
    mut worker: impl FnMut() -> i32,
    mut stats: Option<impl FnMut() -> i32>,
) -> ExitCode {
    match thread_count() {
        Ok(1) => {}
        Ok(n) => {
            eprintln!("error: --workers needs a single-threaded process to fork, and it has {n}");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("error: cannot count the threads of the process: {error}");
            return ExitCode::FAILURE;
        }
    }
    // An ignored SIGCHLD, inherited from whoever started the process, would have the kernel
    // reap the workers itself: the master would never learn that one ended, nor replace it.
    // SAFETY: setting a standard signal's disposition to its default, in a process with one
    // thread (checked above); `signal` has no other effect.
    if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
        eprintln!(
            "error: cannot reset SIGCHLD: {}",
            io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    let set = master_signals();
    // SAFETY: an all-zero sigset_t is a valid value for sigprocmask to write into.
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid sigset_t values for the duration of the call.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old_mask) } != 0 {
        eprintln!(
            "error: cannot block signals: {}",
            io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    tracing::info!(
        pid = std::process::id(),
        workers = supervision.workers,
        "master started"
    );
    let mut master = Master {
        supervision,
        target: supervision.workers.max(1),
        generation: 0,
        workers: Vec::new(),
        state: State::Running,
        respawn_after: None,
        old_mask,
        stats: None,
        stats_respawn_after: None,
    };
    master.reconcile(&mut worker);
    loop {
        master.reap();
        if master.state == State::Stopping && master.workers.is_empty() && master.stats.is_none() {
            break;
        }
        master.kill_overdue();
        master.reconcile(&mut worker);
        if let Some(stats) = stats.as_mut() {
            master.keep_stats(stats);
        }
        master.finish_reload();
        let timeout = master.next_timeout();
        let Some((signal, from)) = wait_signal(&set, timeout) else {
            continue;
        };
        master.on_signal(signal, from);
    }
    // SAFETY: `old_mask` is the valid mask saved above.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &master.old_mask, std::ptr::null_mut()) };
    tracing::info!("master: every worker stopped, exiting");
    ExitCode::SUCCESS
}

impl Master<'_> {
    fn on_signal(&mut self, signal: libc::c_int, from: libc::pid_t) {
        let now = Instant::now();
        match signal {
            libc::SIGCHLD => {}
            libc::SIGTERM if self.state == State::Running => {
                tracing::info!("master: SIGTERM: stopping the workers gracefully");
                self.state = State::Stopping;
                self.stop_stats();
                let kill_at = now + self.supervision.shutdown_timeout + KILL_MARGIN;
                for worker in &mut self.workers {
                    send(worker.pid, libc::SIGTERM);
                    worker.kill_at = Some(worker.kill_at.map_or(kill_at, |t| t.min(kill_at)));
                }
            }
            libc::SIGINT | libc::SIGQUIT => {
                tracing::warn!("master: stopping the workers at once");
                self.state = State::Stopping;
                self.stop_stats();
                for worker in &mut self.workers {
                    send(worker.pid, libc::SIGINT);
                    let kill_at = now + KILL_MARGIN;
                    worker.kill_at = Some(worker.kill_at.map_or(kill_at, |t| t.min(kill_at)));
                }
            }
            libc::SIGHUP if self.state == State::Running => {
                self.generation += 1;
                tracing::info!(
                    generation = self.generation,
                    "master: SIGHUP: reloading (new workers first, then the old ones stop)"
                );
            }
            libc::SIGTTIN if self.state == State::Running => {
                self.target += 1;
                tracing::info!(workers = self.target, "master: SIGTTIN: one worker more");
            }
            libc::SIGTTOU if self.state == State::Running => {
                if self.target > 1 {
                    self.target -= 1;
                    tracing::info!(workers = self.target, "master: SIGTTOU: one worker fewer");
                    let generation = self.generation;
                    let surplus = self
                        .workers
                        .iter_mut()
                        .filter(|w| w.generation == generation && w.kill_at.is_none())
                        .min_by_key(|w| w.started);
                    if let Some(worker) = surplus {
                        stop(worker, self.supervision.shutdown_timeout);
                    }
                } else {
                    tracing::info!("master: SIGTTOU ignored: one worker is the least");
                }
            }
            s if s == sig_ready() => {
                if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == from) {
                    worker.ready = true;
                    tracing::debug!(pid = from, "master: worker serving");
                }
            }
            s if s == sig_retiring() => {
                if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == from) {
                    tracing::info!(
                        pid = from,
                        "master: worker retiring, starting its successor"
                    );
                    if worker.kill_at.is_none() {
                        worker.kill_at =
                            Some(now + self.supervision.shutdown_timeout + KILL_MARGIN);
                    }
                }
            }
            _ => {}
        }
    }

    /// Collects the workers that exited.
    fn reap(&mut self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is valid for a write; WNOHANG makes the call return at once.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if let Some((stats_pid, started)) = self.stats
                && stats_pid == pid
            {
                self.stats = None;
                if self.state == State::Running {
                    let status = ExitStatus::from_raw(status);
                    tracing::warn!(pid, %status, "master: the stats process died; replacing it");
                    if started.elapsed() < RESPAWN_DELAY {
                        self.stats_respawn_after = Some(Instant::now() + RESPAWN_DELAY);
                    }
                }
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.swap_remove(index);
            stats::release(pid);
            let status = ExitStatus::from_raw(status);
            let lived = worker.started.elapsed();
            if worker.kill_at.is_some() {
                tracing::info!(pid, %status, "master: worker exited");
            } else if self.state == State::Running {
                tracing::warn!(pid, %status, lived = ?lived, "master: worker died; replacing it");
                if lived < RESPAWN_DELAY && !status.success() {
                    self.respawn_after = Some(Instant::now() + RESPAWN_DELAY);
                }
            } else {
                tracing::info!(pid, %status, "master: worker stopped");
            }
        }
    }

    /// SIGKILL to the workers past their deadline.
    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for worker in &mut self.workers {
            if worker.kill_at.is_some_and(|t| t <= now) {
                tracing::warn!(pid = worker.pid, "master: worker still running: SIGKILL");
                send(worker.pid, libc::SIGKILL);
                worker.kill_at = Some(now + Duration::from_secs(3600));
            }
        }
    }

    /// Forks workers until the current generation has `target` serving (not stopping) ones,
    /// and stops the surplus.
    fn reconcile(&mut self, worker: &mut impl FnMut() -> i32) {
        if self.state != State::Running {
            return;
        }
        if self.respawn_after.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.respawn_after = None;
        let generation = self.generation;
        let live = |workers: &[Worker]| {
            workers
                .iter()
                .filter(|w| w.generation == generation && w.kill_at.is_none())
                .count()
        };
        while live(&self.workers) < self.target {
            match self.fork(worker) {
                Ok(pid) => {
                    tracing::info!(pid, generation, "master: worker started");
                    self.workers.push(Worker {
                        pid,
                        generation,
                        started: Instant::now(),
                        ready: false,
                        kill_at: None,
                    });
                }
                Err(error) => {
                    tracing::error!(%error, "master: cannot fork a worker; trying again in a second");
                    self.respawn_after = Some(Instant::now() + RESPAWN_DELAY);
                    return;
                }
            }
        }
    }

    /// After a reload: once the new generation serves, stops the workers of the old ones.
    fn finish_reload(&mut self) {
        if self.state != State::Running {
            return;
        }
        let generation = self.generation;
        let ready = self
            .workers
            .iter()
            .filter(|w| w.generation == generation && w.kill_at.is_none() && w.ready)
            .count();
        if ready < self.target {
            return;
        }
        for worker in &mut self.workers {
            if worker.generation < generation && worker.kill_at.is_none() {
                tracing::info!(pid = worker.pid, "master: reload: stopping an old worker");
                stop(worker, self.supervision.shutdown_timeout);
            }
        }
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(1);
        for t in self.workers.iter().filter_map(|w| w.kill_at) {
            next = next.min(t);
        }
        // Respawns wait only while running: a stopping master forks nothing, and a timer past
        // due would make every wait return at once.
        let respawns = [self.respawn_after, self.stats_respawn_after];
        for t in respawns.into_iter().flatten() {
            if self.state == State::Running {
                next = next.min(t);
            }
        }
        next.saturating_duration_since(now)
    }

    fn fork(&mut self, worker: &mut impl FnMut() -> i32) -> io::Result<libc::pid_t> {
        let supervision = self.supervision;
        self.fork_child(
            |mask, master| worker_setup(mask, master, supervision),
            worker,
        )
    }

    /// Forks a child that runs `prepare` (with the master's saved signal mask and pid), then
    /// `run`, and exits with `run`'s code (70 if it panicked).
    fn fork_child(
        &self,
        prepare: impl FnOnce(&libc::sigset_t, libc::pid_t),
        run: &mut impl FnMut() -> i32,
    ) -> io::Result<libc::pid_t> {
        // Checked before each fork too: the master must never have started a thread.
        if thread_count()? != 1 {
            return Err(io::Error::other(
                "the master process has more than one thread",
            ));
        }
        let master = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
        // SAFETY: the process has a single thread (checked just above, and the master starts
        // none: no runtime, no thread pool), so the child is a complete copy of it, with no lock
        // held by a thread that does not exist there, and may run any code, allocator and
        // runtime included. The child never returns from this block: it runs the worker and
        // exits, so no destructor of the master's state (which would remove socket files) runs
        // in it, and a panic is caught before it could unwind into the master's code.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    prepare(&self.old_mask, master);
                    run()
                }))
                .unwrap_or(70);
                std::process::exit(code)
            }
            pid => Ok(pid),
        }
    }
}

impl Master<'_> {
    /// Starts the stats process if it is not running (and the master is not stopping).
    fn keep_stats(&mut self, stats: &mut impl FnMut() -> i32) {
        if self.state != State::Running || self.stats.is_some() {
            return;
        }
        if self.stats_respawn_after.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.stats_respawn_after = None;
        match self.fork_stats(stats) {
            Ok(pid) => {
                tracing::info!(pid, "master: stats process started");
                self.stats = Some((pid, Instant::now()));
            }
            Err(error) => {
                tracing::error!(%error, "master: cannot fork the stats process; trying again in a second");
                self.stats_respawn_after = Some(Instant::now() + RESPAWN_DELAY);
            }
        }
    }

    /// Kills the stats process: it has nothing to finish.
    fn stop_stats(&mut self) {
        if let Some((pid, _)) = self.stats {
            send(pid, libc::SIGKILL);
        }
    }

    fn fork_stats(&mut self, stats: &mut impl FnMut() -> i32) -> io::Result<libc::pid_t> {
        self.fork_child(child_signals, stats)
    }
}

/// Asks `worker` to stop gracefully.
fn stop(worker: &mut Worker, shutdown_timeout: Duration) {
    send(worker.pid, libc::SIGTERM);
    worker.kill_at = Some(Instant::now() + shutdown_timeout + KILL_MARGIN);
}

fn send(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions; a pid that is gone makes it fail harmlessly
    // (our own children stay zombies, so their pids are not reused, until we reap them).
    unsafe { libc::kill(pid, signal) };
}

fn master_signals() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage, and sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for each call.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            sig_ready(),
            sig_retiring(),
        ] {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

/// Waits up to `timeout` for one of the blocked signals of `set`: the signal and its sender.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<(libc::c_int, libc::pid_t)> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: an all-zero siginfo_t is valid storage for the call to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: all three pointers are valid for the duration of the call.
    let signal = unsafe { libc::sigtimedwait(set, &mut info, &timeout) };
    if signal <= 0 {
        return None; // EAGAIN (the timeout) or EINTR
    }
    // SAFETY: the kernel filled `info` for `signal`; `si_pid` is meaningful for signals sent
    // with kill (and for SIGCHLD), and a plain integer otherwise.
    let from = unsafe { info.si_pid() };
    Some((signal, from))
}

/// The number of threads of this process.
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

// ---------------------------------------------------------------------------------------------
// The worker.

/// What this process is, when it is a worker.
struct WorkerState {
    master: libc::pid_t,
    /// Requests after which the worker retires (`u64::MAX`: never).
    limit: u64,
    served: AtomicU64,
    harakiri: Option<Duration>,
    max_rss: Option<u64>,
    /// Why the worker retires, once it does.
    retire: watch::Sender<Option<&'static str>>,
    next_id: AtomicU64,
    /// The requests in progress (with `--harakiri` only): when each started, and what it is.
    in_flight: Mutex<HashMap<u64, (Instant, String)>>,
}

static WORKER: OnceLock<WorkerState> = OnceLock::new();

/// In the child, right after the fork: the signal mask and dispositions of a worker, death
/// with the master, and the worker's state.
/// What every child of the master does first: the master's signal mask back, the master's
/// signals ignored, and a SIGTERM when the master dies.
fn child_signals(old_mask: &libc::sigset_t, master: libc::pid_t) {
    // SAFETY: plain calls with valid arguments; `old_mask` is the mask saved by the master.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
        // The master's business: a hang-up or a job-control signal sent to the whole process
        // group must not stop or kill a worker.
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        // The master died before the line above: nobody would be told.
        if libc::getppid() != master {
            libc::_exit(0);
        }
    }
}

fn worker_setup(old_mask: &libc::sigset_t, master: libc::pid_t, supervision: &Supervision) {
    child_signals(old_mask, master);
    let limit = match supervision.max_requests {
        0 => u64::MAX,
        n => n.saturating_add(jitter(supervision.max_requests_jitter)),
    };
    let state = WorkerState {
        master,
        limit,
        served: AtomicU64::new(0),
        harakiri: supervision.harakiri,
        max_rss: supervision.max_rss,
        retire: watch::channel(None).0,
        next_id: AtomicU64::new(0),
        in_flight: Mutex::new(HashMap::new()),
    };
    let _ = WORKER.set(state);
    stats::claim();
}

/// A random number in `0..=max`.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    match max.checked_add(1) {
        Some(modulus) => hasher.finish() % modulus,
        None => hasher.finish(),
    }
}

/// Whether this process is a worker of a master.
pub fn is_worker() -> bool {
    WORKER.get().is_some()
}

/// In a worker, inside its runtime, once its servers are started: handles the worker's
/// signals (SIGTERM: [`Shutdown::drain`] with `drain_grace`, which the launcher makes the
/// shorter of the config's `header_read_timeout` and half its `shutdown_timeout`; SIGINT,
/// SIGQUIT: an immediate shutdown), retires it (a drain) when it
/// reaches its request limit or its memory bound, starts the watchdog of `--harakiri` and
/// `--max-rss`, and tells the master it serves. Does nothing in a process that is not a worker.
pub fn serve_as_worker(shutdown: &Shutdown, drain_grace: Duration) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let Some(state) = WORKER.get() else {
        return Ok(());
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut retire = state.retire.subscribe();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let pid = std::process::id();
        let draining = tokio::select! {
            _ = term.recv() => {
                tracing::info!(pid, "worker: SIGTERM: finishing the requests in progress");
                true
            }
            reason = retire.wait_for(Option::is_some) => {
                let reason = reason.ok().and_then(|r| *r).unwrap_or("asked");
                tracing::info!(pid, reason, "worker: retiring");
                send(state.master, sig_retiring());
                true
            }
            _ = int.recv() => false,
            _ = quit.recv() => false,
        };
        if draining {
            tokio::select! {
                // Then the servers return once their connections are done; a fast signal
                // still stops the worker at once.
                () = shutdown.drain(drain_grace) => tokio::select! {
                    _ = int.recv() => {}
                    _ = quit.recv() => {}
                },
                _ = int.recv() => {}
                _ = quit.recv() => {}
            }
        }
        tracing::warn!(pid, "worker: stopping at once");
        shutdown.immediate();
    });
    if state.harakiri.is_some() || state.max_rss.is_some() {
        std::thread::Builder::new()
            .name("gateway-watchdog".into())
            .spawn(move || watchdog(state))?;
    }
    send(state.master, sig_ready());
    Ok(())
}

/// The watchdog thread of a worker: harakiri and the memory bound.
fn watchdog(state: &'static WorkerState) {
    let tick = match state.harakiri {
        Some(limit) => (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        None => Duration::from_secs(1),
    };
    loop {
        std::thread::sleep(tick);
        if let Some(limit) = state.harakiri {
            let overdue = {
                let in_flight = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                in_flight
                    .values()
                    .find(|(started, _)| started.elapsed() > limit)
                    .map(|(started, what)| (started.elapsed(), what.clone()))
            };
            if let Some((elapsed, request)) = overdue {
                tracing::error!(
                    pid = std::process::id(),
                    request,
                    elapsed = ?elapsed,
                    limit = ?limit,
                    "harakiri: a request ran past the limit: killing the worker"
                );
                stats::count(Limit::Harakiri);
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        }
        if let Some(max) = state.max_rss {
            match resident_bytes() {
                Ok(rss) if rss > max => {
                    if state.retire.borrow().is_none() {
                        tracing::warn!(
                            pid = std::process::id(),
                            rss,
                            max,
                            "worker: resident memory past --max-rss"
                        );
                    }
                    retire("max-rss");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot read /proc/self/statm"),
            }
        }
    }
}

/// Asks the worker to retire (once).
fn retire(reason: &'static str) {
    if let Some(state) = WORKER.get() {
        state.retire.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(reason);
                stats::retiring();
                match reason {
                    "max-rss" => stats::count(Limit::MaxRss),
                    "max-requests" => stats::count(Limit::MaxRequests),
                    _ => {}
                }
            }
            first
        });
    }
}

/// The resident memory of this process, in bytes.
fn resident_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages = resident_pages(&statm)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected statm"))?;
    // SAFETY: sysconf has no memory preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

/// The second field of `/proc/PID/statm`: resident pages.
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// A request in progress in a worker, as harakiri sees it: removed when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(u64);

impl InFlight {
    /// Runs `wait` with the request out of harakiri's watch: the request waits for its client
    /// to take what the app produced, not for the app, and a slow client must not get the
    /// worker killed. Its time counts again from the end of the wait.
    pub(crate) fn waiting<T>(&mut self, wait: impl FnOnce() -> T) -> T {
        let aside = set_aside(self.0);
        let result = wait();
        if let Some(what) = aside {
            resume(self.0, what);
        }
        result
    }

    /// Starts the request's time again from now, and watches it on this thread until the
    /// returned guard is dropped: the app's call and body polls on a pool thread. The time the
    /// request waited in the pool's queue is not the app's; the time the app then waits for
    /// the client's body is not either (see [`client_wait`]).
    pub(crate) fn run_here(&self) -> RunHere {
        if let Some(what) = set_aside(self.0) {
            resume(self.0, what);
        }
        RunHere(WATCHED.replace(Some(self.0)))
    }
}

/// The request watched on this thread while [`InFlight::run_here`]'s guard lives.
pub(crate) struct RunHere(Option<u64>);

impl Drop for RunHere {
    fn drop(&mut self) {
        // The request's `InFlight` is gone by now (or goes with the job): a wait still set
        // aside is not put back.
        ASIDE.set(None);
        WATCHED.set(self.0);
    }
}

thread_local! {
    /// The request whose app runs on this thread (harakiri's id).
    static WATCHED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// That request, out of the watch while its app waits for the client's body.
    static ASIDE: std::cell::RefCell<Option<(u64, String)>> = const { std::cell::RefCell::new(None) };
}

/// Tells harakiri that the app running on this thread begins (`true`) or ends (`false`) a wait
/// for its client's request body: the wait is the client's, not the app's, and a client that
/// sends its body slowly must not get the worker killed (the body read timeout bounds it).
pub(crate) fn client_wait(begins: bool) {
    let Some(id) = WATCHED.get() else {
        return;
    };
    if begins {
        if let Some(what) = set_aside(id) {
            ASIDE.set(Some((id, what)));
        }
    } else if let Some((id, what)) = ASIDE.take() {
        resume(id, what);
    }
}

/// Takes request `id` out of harakiri's watch: what it was doing, if it was watched.
fn set_aside(id: u64) -> Option<String> {
    let state = WORKER.get()?;
    let mut in_flight = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
    in_flight.remove(&id).map(|(_, what)| what)
}

/// Puts request `id` back under harakiri's watch, its time counted from now.
fn resume(id: u64, what: String) {
    if let Some(state) = WORKER.get() {
        let mut in_flight = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.insert(id, (Instant::now(), what));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(state) = WORKER.get() {
            let mut in_flight = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight.remove(&self.0);
        }
    }
}

/// Counts a request that starts in a worker (retiring the worker at its limit) and, with
/// `--harakiri`, watches it until the returned value is dropped. Nothing outside a worker.
pub(crate) fn request_started(environ: &Environ) -> Option<InFlight> {
    let state = WORKER.get()?;
    let served = state.served.fetch_add(1, Ordering::Relaxed) + 1;
    if served == state.limit {
        tracing::info!(
            pid = std::process::id(),
            served,
            "worker: served its --max-requests"
        );
        retire("max-requests");
    }
    state.harakiri?;
    let what = format!(
        "{} {}{}",
        environ.request_method(),
        String::from_utf8_lossy(environ.script_name()),
        String::from_utf8_lossy(environ.path_info())
    );
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let mut in_flight = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
    in_flight.insert(id, (Instant::now(), what));
    Some(InFlight(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(resident_pages("1234 567 89 1 0 100 0\n"), Some(567));
        assert_eq!(resident_pages("1234"), None);
        assert_eq!(resident_pages("a b c"), None);
        assert!(resident_bytes().unwrap() > 0);
    }

    #[test]
    fn jitter_stays_in_its_range() {
        assert_eq!(jitter(0), 0);
        // The largest bound the flag takes: any number, and no overflow.
        let _ = jitter(u64::MAX);
        for _ in 0..100 {
            assert!(jitter(3) <= 3);
        }
        let seen: std::collections::HashSet<u64> = (0..200).map(|_| jitter(3)).collect();
        assert!(seen.len() > 1, "not random: {seen:?}");
    }

    #[test]
    fn outside_a_worker_nothing_is_counted() {
        assert!(!is_worker());
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "GET");
        assert!(request_started(&environ).is_none());
    }
}
