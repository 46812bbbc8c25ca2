//! Serving the admin API on a socket, with limits on connections as well as on calls.
//!
//! The per-call limits ([`super::AdminConfig::request_timeout`], body sizes) start once a
//! request's head has arrived. This module bounds what comes before: how long a client may take
//! to send a complete request head, and how many connections are open at once, so that slow or
//! idle clients (no token needed to open a socket) cannot use up the process's file
//! descriptors and keep `/healthz` and uploads from being answered.
//!
//! Connections are HTTP/1.1, driven by hyper's connection builder with tokio's timer:
//!
//! - [`ConnectionLimits::header_read_timeout`]: the time from the moment the server starts
//!   waiting for a request head (the connection is accepted, or the previous answer on a
//!   keep-alive connection is sent) to the end of that head. A client that sends half its
//!   headers, one header line a second, or nothing at all after a keep-alive answer is
//!   disconnected when it runs out. So this is also the idle keep-alive timeout.
//! - [`ConnectionLimits::max_connections`]: connections open at once. At the cap the listener
//!   stops accepting; further clients wait in the kernel's backlog until a connection closes
//!   (at the latest when its header timeout or request timeout runs out).
//!
//! An answer that streams for as long as its client stays (a followed function log) would
//! hold a graceful stop forever: every request carries a [`ServerStop`] extension, and such
//! an answer ends when it fires.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The default [`ConnectionLimits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`ConnectionLimits::max_connections`]: well under the usual limit of 1,024 open
/// files, which the pipelines (broker sockets, cache connections) share.
pub const MAX_CONNECTIONS: usize = 256;

/// The highest [`ConnectionLimits::max_connections`] accepted.
pub const MAX_CONNECTIONS_CAP: usize = 65_536;

/// The limits on the admin API's connections (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The longest a client may take to send a complete request head, counted from the
    /// connection's opening or from the previous answer; also the idle keep-alive timeout.
    /// Default [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// The most connections open at once. Default [`MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { header_read_timeout: HEADER_READ_TIMEOUT, max_connections: MAX_CONNECTIONS }
    }
}

/// Fires when the server stops: a request extension of every call [`serve`] serves, so that an
/// answer streaming without end (a followed log) ends then and lets the connection close.
#[derive(Clone, Debug)]
pub struct ServerStop(watch::Receiver<bool>);

impl ServerStop {
    /// Completes once the server is told to stop.
    pub async fn stopped(mut self) {
        stop_requested(&mut self.0).await;
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets every
/// call in progress finish (within its request timeout), closes idle connections and returns
/// when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits.max_connections.clamp(1, MAX_CONNECTIONS_CAP);
    let slots = Arc::new(Semaphore::new(max));
    let (stop, stopped) = watch::channel(false);
    let router = router.layer(axum::Extension(ServerStop(stopped.clone())));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // A slot first, so the process never holds more than `max` admin sockets.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // go on after a pause rather than end the API.
                    tracing::warn!("admin API cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop_requested(&mut stopped) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "admin API connection closed: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it is closed.
    let _all = slots.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
    Ok(())
}

/// Completes once the server is told to stop (or is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped at once; it must not live across an await.
    let _ = stopped.wait_for(|stop| *stop).await.map(|_| ());
}
