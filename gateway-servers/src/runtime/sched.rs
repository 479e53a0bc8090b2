//! The scheduling policy of the event loop's threads ([`Config::batch_scheduling`]).
//!
//! A server behind a front end on the same host shares its cores with it, and its event loop
//! shares them with the worker pool. Under Linux's default policy a thread that wakes up
//! preempts the one running: when a pool thread hands a finished response to the event loop,
//! the event loop takes the core at once, writes that one response and sleeps again, and the
//! pool thread resumes for the next one; the front end's writes do the same. `SCHED_BATCH`
//! runs a woken thread when the running one sleeps or its time slice ends, never at the
//! wake-up itself, so work changes hands in batches. How much that saves depends on whether
//! the front end and the server are in one scheduling group: measured behind nginx on one
//! shared core (FastCGI, keep-alive, the hello app on the pool), about 27,000 requests a second
//! under the default policy and 59,000 under `SCHED_BATCH` with both started from one session
//! (one autogroup), and 55,000 against 60,600 with each in a session of its own, as services
//! and the benchmark run them (see ARCHITECTURE.md).
//!
//! [`Config::batch_scheduling`]: super::Config::batch_scheduling
#![allow(unsafe_code)]

use std::io;

/// Puts the calling thread under Linux's `SCHED_BATCH` scheduling policy: the kernel treats it
/// as a throughput thread, and it no longer preempts the running thread when it wakes up (it
/// runs when that one sleeps or ends its time slice). Its share of the CPU is unchanged (same
/// nice value, no privilege needed).
///
/// The launcher calls it on each thread of the tokio runtime it starts, unless
/// [`Config::batch_scheduling`](super::Config::batch_scheduling) is off. A program that builds
/// its own runtime can do the same in `tokio::runtime::Builder::on_thread_start`. On systems
/// other than Linux, it fails with [`io::ErrorKind::Unsupported`].
///
/// ```
/// let runtime = tokio::runtime::Builder::new_multi_thread()
///     .enable_all()
///     .on_thread_start(|| {
///         let _ = gateway_servers::runtime::batch_scheduling();
///     })
///     .build()
///     .unwrap();
/// # drop(runtime);
/// ```
pub fn batch_scheduling() -> io::Result<()> {
    set_batch()
}

#[cfg(target_os = "linux")]
fn set_batch() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the
    // calling thread, and SCHED_BATCH with priority 0 needs no privilege.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SCHED_BATCH is a Linux scheduling policy",
    ))
}

/// A thread's scheduling policy, taken from one thread to give to others: the worker pool's
/// threads are started by the event loop's, and take the policy of the thread that made the
/// pool instead (the program's own, not `SCHED_BATCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    #[cfg(target_os = "linux")]
    policy: libc::c_int,
    #[cfg(target_os = "linux")]
    priority: libc::c_int,
}

impl Policy {
    /// The calling thread's policy, or `None` where it cannot be read (or is not Linux's).
    pub(crate) fn current() -> Option<Policy> {
        #[cfg(target_os = "linux")]
        {
            let mut param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` is valid for the call to write.
            let policy = unsafe { libc::sched_getscheduler(0) };
            // SAFETY: as above.
            if policy < 0 || unsafe { libc::sched_getparam(0, &mut param) } != 0 {
                return None;
            }
            Some(Policy {
                policy,
                priority: param.sched_priority,
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Gives the calling thread this policy, if it has another.
    pub(crate) fn apply(self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if Policy::current() != Some(self) {
            let param = libc::sched_param {
                sched_priority: self.priority,
            };
            // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is
            // the calling thread. A policy that needs a privilege the process lost fails.
            if unsafe { libc::sched_setscheduler(0, self.policy, &param) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Whether the calling thread runs under `SCHED_BATCH` (Linux).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn is_batch() -> bool {
    // SAFETY: no arguments but the calling thread's pid 0.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_BATCH }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_calling_thread_and_only_it_runs_under_sched_batch() {
        let before = Policy::current();
        let other = std::thread::spawn(|| {
            batch_scheduling().unwrap();
            is_batch()
        });
        assert!(other.join().unwrap());
        assert_eq!(Policy::current(), before);
    }

    #[test]
    fn a_policy_taken_from_one_thread_is_given_to_another() {
        let (batch, other) = std::thread::spawn(|| {
            batch_scheduling().unwrap();
            let batch = Policy::current().unwrap();
            Policy {
                policy: libc::SCHED_OTHER,
                priority: 0,
            }
            .apply()
            .unwrap();
            (batch, Policy::current().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(batch.policy, libc::SCHED_BATCH);
        assert_eq!(other.policy, libc::SCHED_OTHER);
        let (was, now) = std::thread::spawn(move || {
            batch.apply().unwrap();
            let was = is_batch();
            other.apply().unwrap();
            (was, Policy::current())
        })
        .join()
        .unwrap();
        assert!(was);
        assert_eq!(now, Some(other));
    }
}
