//! Shutdown: graceful (stop accepting, let requests in progress finish within a deadline) and
//! immediate, from signals or from code.

use std::sync::Arc;

use tokio::sync::watch;

/// A shutdown switch shared by a server's tasks. Cloning gives another handle to the same
/// switch.
///
/// ```
/// use gateway_servers::runtime::Shutdown;
///
/// let shutdown = Shutdown::new();
/// assert!(!shutdown.is_graceful());
/// shutdown.graceful();
/// assert!(shutdown.is_graceful() && !shutdown.is_immediate());
/// shutdown.immediate();
/// assert!(shutdown.is_immediate());
/// ```
#[derive(Debug, Clone)]
pub struct Shutdown {
    state: Arc<watch::Sender<u8>>,
}

const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const IMMEDIATE: u8 = 2;

impl Shutdown {
    /// A switch that is off.
    pub fn new() -> Self {
        Shutdown {
            state: Arc::new(watch::channel(RUNNING).0),
        }
    }

    /// Asks for a graceful shutdown.
    pub fn graceful(&self) {
        self.state.send_if_modified(|s| {
            let changed = *s < GRACEFUL;
            *s = (*s).max(GRACEFUL);
            changed
        });
    }

    /// Asks for an immediate shutdown.
    pub fn immediate(&self) {
        self.state.send_replace(IMMEDIATE);
    }

    /// Whether a shutdown (graceful or immediate) was asked for.
    pub fn is_graceful(&self) -> bool {
        *self.state.borrow() >= GRACEFUL
    }

    /// Whether an immediate shutdown was asked for.
    pub fn is_immediate(&self) -> bool {
        *self.state.borrow() >= IMMEDIATE
    }

    async fn reached(&self, level: u8) {
        let mut receiver = self.state.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = receiver.wait_for(|s| *s >= level).await;
    }

    /// Waits until a shutdown is asked for.
    pub async fn wait_graceful(&self) {
        self.reached(GRACEFUL).await;
    }

    /// Waits until an immediate shutdown is asked for.
    pub async fn wait_immediate(&self) {
        self.reached(IMMEDIATE).await;
    }

    /// Listens for SIGTERM and SIGINT (in a task of the current tokio runtime): the first asks
    /// for a graceful shutdown, the second for an immediate one.
    pub fn on_signals(&self) -> std::io::Result<()> {
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
                    shutdown.graceful();
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

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}
