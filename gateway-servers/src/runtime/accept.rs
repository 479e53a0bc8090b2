//! The accept loop of the adapters that own their connections (uwsgi, FastCGI): the connection
//! limit, and graceful shutdown that waits for the connections in progress.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Config, Connection, Listener, Shutdown};

/// Accepts connections on `listener` and runs `handle` for each, as a task, at most
/// `max_connections` at once (more wait in the listen backlog), until `shutdown` asks to stop;
/// then stops accepting and waits for the connections still open, within `shutdown_timeout`
/// or until an immediate shutdown.
pub async fn serve_connections<H, F>(
    listener: Listener,
    config: &Config,
    shutdown: Shutdown,
    handle: H,
) -> io::Result<()>
where
    H: Fn(Connection) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.wait_graceful() => break,
        };
        let connection = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait_graceful() => break,
        };
        let connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait
                // a little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let task = handle(connection);
        tokio::spawn(async move {
            task.await;
            drop(permit);
        });
    }
    drop(listener);
    if shutdown.is_immediate() {
        return Ok(());
    }
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!("shutdown timeout: closing the connections still open");
        }
        () = shutdown.wait_immediate() => {}
    }
    Ok(())
}
