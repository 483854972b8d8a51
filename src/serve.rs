//! Serving one listener's connections over HTTP/1.1, with the limits `axum::serve` lacks: a
//! time for each request's headers, a time a connection may idle between requests, a bound on
//! connections open at once, and a graceful stop.
//!
//! The two timeouts are kept by a watchdog beside each connection rather than by hyper's own
//! header timer, which starts as soon as hyper waits for a request and so would close idle
//! keep-alive connections at the header timeout too. Here a connection waits for headers from
//! its opening, or from the first byte of a later request, and idles from the end of a
//! response; while a request is being answered neither clock runs (the request timeout bounds
//! that).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::HttpSettings;

/// The limits every listener applies to its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl ConnectionLimits {
    pub(crate) fn from_settings(http: &HttpSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(http.idle_timeout_seconds),
            max_connections: http.max_connections,
        }
    }
}

/// Serves `listener` with `router` until `stop` turns true, then stops accepting and waits for
/// the open connections to finish their requests (idle ones close at once).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer serves hyper's other waits; the header timeout is the watchdog's (see above).
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let mut warned_full = false;
    loop {
        // A slot first, then accept: beyond the bound, connections wait in the kernel's queue
        // (and are refused once it is full) instead of costing memory here.
        let slot = if let Ok(slot) = slots.clone().try_acquire_owned() {
            slot
        } else {
            if !warned_full {
                tracing::warn!(
                    listener = name,
                    limit = limits.max_connections,
                    "connection limit reached; new connections wait (http.max_connections)"
                );
                warned_full = true;
            }
            tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                () = stopped(&mut stop) => break,
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    pause_after_accept_error(name, &err).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        if slots.available_permits() > 0 {
            warned_full = false;
        }
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(WatchedStream { stream, activity: activity.clone() });
        let service = RequestService { router: router.clone(), activity: activity.clone(), peer };
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                result = connection => {
                    if let Err(err) = result {
                        tracing::debug!(listener = name, error = %err, "connection ended with an error");
                    }
                }
                reason = activity.watch(limits) => {
                    tracing::debug!(listener = name, reason, "connection closed");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The borrow ends before each wait: a watch guard must not be held across an await.
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Errors that concern one connection are skipped; others (out of file descriptors) get a
/// pause, so that the loop does not spin while they last.
async fn pause_after_accept_error(name: &'static str, err: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(err.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(listener = name, error = %err, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Waiting for a request's headers (from the opening or a later request's first byte).
const HEADERS: u8 = 0;
/// Between requests: a response was sent, nothing of the next request has come.
const IDLE: u8 = 1;
/// A request is being answered.
const BUSY: u8 = 2;

/// What a connection is doing and since when, shared by its stream, its service and its
/// watchdog.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    phase: AtomicU8,
    /// Milliseconds from `origin` to the start of the phase.
    since: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            phase: AtomicU8::new(HEADERS),
            since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: u8) {
        self.since.store(self.now(), Ordering::SeqCst);
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Bytes came in: an idle connection starts a request.
    fn received(&self) {
        if self.phase.load(Ordering::SeqCst) == IDLE {
            self.enter(HEADERS);
        }
    }

    /// Bytes went out: a response still being written keeps an idle connection alive.
    fn sent(&self) {
        if self.phase.load(Ordering::SeqCst) == IDLE {
            self.since.store(self.now(), Ordering::SeqCst);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.enter(BUSY);
    }

    fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.enter(IDLE);
        }
    }

    /// Returns when the connection has waited too long for headers or idled too long.
    async fn watch(&self, limits: ConnectionLimits) -> &'static str {
        loop {
            let phase = self.phase.load(Ordering::SeqCst);
            let since = self.origin + Duration::from_millis(self.since.load(Ordering::SeqCst));
            let (limit, reason) = match phase {
                HEADERS => {
                    (limits.header_read_timeout, "no complete request headers within http.header_read_timeout_seconds")
                }
                IDLE => (limits.idle_timeout, "idle for http.idle_timeout_seconds"),
                _ => {
                    tokio::time::sleep(limits.header_read_timeout.min(limits.idle_timeout)).await;
                    continue;
                }
            };
            if Instant::now() >= since + limit {
                return reason;
            }
            tokio::time::sleep_until(since + limit).await;
        }
    }
}

/// Marks a request finished however its future ends (answered, or dropped with its connection).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The router as hyper calls it, telling the connection's activity when a request starts and ends.
#[derive(Clone)]
struct RequestService {
    router: Router,
    activity: Arc<Activity>,
    /// The connection's peer, given to each request as axum's `ConnectInfo`.
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let in_flight = InFlight(self.activity.clone());
        let router = self.router.clone();
        let peer = self.peer;
        Box::pin(async move {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = router.oneshot(request).await;
            drop(in_flight);
            response
        })
    }
}

/// A TCP stream that reports its traffic to the connection's activity.
struct WatchedStream {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.received();
        }
        poll
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.sent();
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.sent();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
