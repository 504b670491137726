//! The accept loop: a task per connection, its timeouts enforced by one sweep over the
//! connections, and the drain when the listener unloads.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::payload::Body;

use super::*;

/// The accept loop: one task per connection, each tracked so that unloading can wait for
/// them, and a sweep over the open connections that closes the ones that
/// waited too long (see [`Watch::look`]).
pub(super) async fn serve(
    listener: TcpListener,
    served: Arc<ArcSwap<Served>>,
    meters: Arc<Meters>,
    handed_over: Arc<AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) {
    let (limits, tls) = {
        let now = served.load();
        let this = listener_of(&now.place.graph, now.place.node);
        (this.limits, this.tls.clone())
    };
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    // Every connection task holds a receiver; unloading waits until all are dropped.
    let (open, tracked) = watch::channel(());
    // The timeouts are enforced by this one sweep rather than by a timer per connection or per
    // request: a request then costs no timer registration and its connection no select.
    let period = limits.header_timeout.min(limits.idle_timeout) / SWEEPS_PER_TIMEOUT;
    let mut sweeps = tokio::time::interval(period.max(Duration::from_millis(1)));
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched: Vec<Watch> = Vec::new();
    // Gone when the one unloading stops waiting for the connections to finish.
    let mut unloader = stopped.clone();
    // Made once, so the stop signal's waiter stays registered instead of being added and
    // removed (a lock each way) on every accept.
    let stop = stopped.changed();
    tokio::pin!(stop);
    // Failed accepts in a row.
    let mut failures: u64 = 0;
    loop {
        // Not biased: under a flood of connections a biased accept would starve the sweep and
        // the stop signal.
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    if failures > 0 {
                        tracing::info!(failures, "accepting connections again");
                        failures = 0;
                    }
                    conn
                }
                Err(e) => {
                    // Running out of file descriptors must not spin the loop, nor fill the
                    // log: a streak of failures is told once, and its end.
                    if failures == 0 {
                        tracing::warn!(
                            error = %e,
                            "accept failed; retrying every 10 ms (at the limit on open files, connections wait until one closes)"
                        );
                    }
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            now = sweeps.tick() => {
                let now = now.into_std();
                watched.retain_mut(|w| w.look(now, &limits));
                continue;
            }
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // Whether the graph has a gateway, as it runs now: a reload that adds one reaches
        // the connections accepted after it.
        let upgrades = served.load().features.upgrades;
        let conn = Arc::new(Conn {
            served: Arc::clone(&served),
            meters: Arc::clone(&meters),
            limits,
            peer: crate::exchange::Peer {
                addr: remote,
                tls: tls.is_some(),
            },
            activity: Activity::default(),
        });
        // Closed connections leave the list at the next sweep, or here once it is full, so
        // that a burst of short connections does not hold their memory until then.
        if watched.len() == watched.capacity() {
            watched.retain(|w| w.conn.strong_count() > 0);
        }
        watched.push(Watch::new(&conn));
        let builder = Arc::clone(&builder);
        let tracked = tracked.clone();
        let io = Watched {
            inner: stream,
            conn: Arc::clone(&conn),
        };
        // Each kind of connection is its own task type: a task's future is moved whole when
        // it is spawned and when it finishes, so a plain connection must not carry the space
        // of a TLS stream or of the other kind of hyper connection (that tripled the bytes
        // copied per connection).
        match (tls.clone(), upgrades) {
            (None, false) => tokio::spawn(async move {
                let _tracked = tracked;
                let _open = conn.meters.open();
                serve_http(Arc::clone(&conn), io, &builder).await;
            }),
            (None, true) => tokio::spawn(async move {
                let _tracked = tracked;
                let _open = conn.meters.open();
                serve_upgradable(Arc::clone(&conn), io, &builder).await;
            }),
            (Some(acceptor), _) => tokio::spawn(async move {
                let _tracked = tracked;
                let _open = conn.meters.open();
                let handshake =
                    tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await;
                match handshake {
                    Ok(Ok(io)) if upgrades => {
                        serve_upgradable(Arc::clone(&conn), io, &builder).await;
                    }
                    Ok(Ok(io)) => serve_http(Arc::clone(&conn), io, &builder).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }),
        };
    }
    drop(listener);
    drop(tracked);
    let close_all = |how| {
        for w in &watched {
            if let Some(conn) = w.conn.upgrade() {
                conn.activity.close(how);
            }
        }
    };
    // When a new version of the listener took the socket over (a reload), a connection
    // accepted here just before the stop may not have sent its first request yet (or it is
    // still unread): closing it now would reset a client that did nothing wrong, though the
    // port never stopped listening. Such a connection is closed once its first request has
    // started (that request is answered, with `Connection: close`), or when its header timeout
    // runs out. A listener that stops for good closes it at once, as it does every idle one.
    let keep_fresh = handed_over.load(Ordering::Acquire);
    let mut fresh: Vec<(Weak<Conn>, Instant)> = Vec::new();
    let stopping = Instant::now();
    for w in &watched {
        if let Some(conn) = w.conn.upgrade() {
            if keep_fresh && conn.activity.started.load(Ordering::Relaxed) == 0 {
                fresh.push((Arc::downgrade(&conn), stopping));
            } else {
                conn.activity.close(Close::Graceful);
            }
        }
    }
    let mut looks = tokio::time::interval(Duration::from_millis(5));
    // In-flight requests finish, however long that takes, unless the one unloading gives up
    // on them (a shutdown timeout, `--shutdown-timeout`): it drops the stop signal's sender,
    // and what is still open is cut.
    loop {
        tokio::select! {
            () = open.closed() => break,
            _ = unloader.wait_for(|_| false) => {
                tracing::warn!("in-flight requests did not finish in time; dropping them");
                close_all(Close::Abort);
                break;
            }
            _ = looks.tick(), if !fresh.is_empty() => {
                fresh.retain(|(conn, since)| {
                    let Some(conn) = conn.upgrade() else { return false };
                    let started = conn.activity.started.load(Ordering::Relaxed) > 0;
                    if started || since.elapsed() >= limits.header_timeout {
                        conn.activity.close(Close::Graceful);
                        return false;
                    }
                    true
                });
            }
        }
    }
}

/// How many sweeps run per shortest timeout: a timeout fires between 1 and 1¼ times its
/// length after the connection went quiet.
pub(super) const SWEEPS_PER_TIMEOUT: u32 = 4;

/// One accepted connection: what its requests need, and what the sweep looks at.
pub(super) struct Conn {
    /// The listener's place in the graph that runs now: each request reads it when it
    /// starts.
    pub(super) served: Arc<ArcSwap<Served>>,
    /// The listener's counters.
    pub(super) meters: Arc<Meters>,
    pub(super) limits: Limits,
    pub(super) peer: crate::exchange::Peer,
    pub(super) activity: Activity,
}

/// Serves HTTP on an accepted (and, with TLS, handshaken) stream until the connection ends.
pub(super) async fn serve_http<I>(conn: Arc<Conn>, io: I, builder: &auto::Builder<TokioExecutor>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = builder.serve_connection(TokioIo::new(io), service(Arc::clone(&conn)));
    drive(served, &conn.activity).await;
}

/// [`serve_http`] for a graph with a gateway: requests may upgrade the connection.
pub(super) async fn serve_upgradable<I>(
    conn: Arc<Conn>,
    io: I,
    builder: &auto::Builder<TokioExecutor>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served =
        builder.serve_connection_with_upgrades(TokioIo::new(io), service(Arc::clone(&conn)));
    drive(served, &conn.activity).await;
}

/// The per-request service of a connection.
pub(super) fn service(
    conn: Arc<Conn>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Send
+ 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        // One reference count per request: the future must own what it uses (HTTP/2 spawns
        // it), and the connection's `Arc` carries the graph, the node and the counters.
        handle(Arc::clone(&conn), req)
    })
}

/// Runs a connection until it ends, shutting it down gracefully once the sweep (or the
/// listener's unloading) asks it to close, and dropping it when asked to abort.
pub(super) async fn drive<C>(served: C, activity: &Activity)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut served = std::pin::pin!(served);
    // The close level seen at the last poll; `u8::MAX` before the first.
    let (mut seen, mut closing) = (u8::MAX, false);
    let done = std::future::poll_fn(|cx| {
        // This future is its task's root future, so the task's waker never changes; a wake
        // consumes the registration, and wakes come only with a new close level. So the
        // waker is registered on the first poll and again after each change, not on every
        // poll of every request.
        let mut level = activity.closing.load(Ordering::Acquire);
        if level != seen {
            activity.waker.register(cx.waker());
            // A close that raced with the registration is seen here.
            level = activity.closing.load(Ordering::Acquire);
            seen = level;
        }
        match level {
            CLOSE_NONE => {}
            CLOSE_GRACEFUL => {
                if !closing {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
            }
            _ => return Poll::Ready(Ok(())),
        }
        served.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = done {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a connection did since the sweep last looked, and the sweep's request to close it.
/// Requests and reads and writes only store flags and bump counters on it.
#[derive(Default)]
pub(super) struct Activity {
    /// Bytes were read.
    read: AtomicBool,
    /// Bytes were written.
    wrote: AtomicBool,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Requests started (wrapping), so the sweep sees a request that came and went between
    /// two looks.
    started: AtomicUsize,
    /// The connection speaks HTTP/2, which has no header timeout between requests.
    h2: AtomicBool,
    /// How the connection was asked to close: one of the `CLOSE_*` levels.
    closing: AtomicU8,
    /// Wakes the connection's task when `closing` is set.
    waker: futures_util::task::AtomicWaker,
}

impl Activity {
    pub(super) fn start(&self, version: http::Version) -> Busy<'_> {
        let shared = version == http::Version::HTTP_2;
        if shared && !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
        add(&self.started, 1, shared);
        add(&self.in_flight, 1, shared);
        Busy {
            activity: self,
            shared,
        }
    }

    fn close(&self, how: Close) {
        self.closing.fetch_max(how as u8, Ordering::Release);
        self.waker.wake();
    }

    /// Records that bytes moved, writing the flag only when it changes.
    fn note(flag: &AtomicBool) {
        if !flag.load(Ordering::Relaxed) {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

pub(super) const CLOSE_NONE: u8 = 0;
pub(super) const CLOSE_GRACEFUL: u8 = Close::Graceful as u8;

/// How a connection is asked to close.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Close {
    /// Finish the requests in flight, then close (HTTP/2 says goodbye first).
    Graceful = 1,
    /// Drop the connection now: an HTTP/1 client stuck in the middle of its headers does not
    /// give up on a graceful close.
    Abort = 2,
}

/// Counts a request as in flight until dropped.
pub(super) struct Busy<'a> {
    activity: &'a Activity,
    /// Whether other tasks count on the same connection (HTTP/2 streams).
    shared: bool,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        add(&self.activity.in_flight, usize::MAX, self.shared);
    }
}

/// Adds `delta` (wrapping; `usize::MAX` subtracts one) to a connection's counter. An HTTP/1
/// connection's requests all run one after another in the connection's task, so only that
/// task writes its counters (the sweep only reads them) and a plain load and store suffice;
/// HTTP/2 streams run in tasks of their own and need the atomic read-modify-write, a locked
/// instruction.
pub(super) fn add(counter: &AtomicUsize, delta: usize, shared: bool) {
    if shared {
        counter.fetch_add(delta, Ordering::Relaxed);
    } else {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }
}

/// The sweep's view of one connection.
pub(super) struct Watch {
    conn: Weak<Conn>,
    /// Since when no request has been in flight, none has started and nothing was written:
    /// the connection waits for a request's headers.
    waiting_since: Instant,
    /// Since when no byte moved while no request was in flight.
    silent_since: Instant,
    /// `Activity::started` at the last look.
    started: usize,
    /// How the connection was last asked to close.
    closing: Option<Close>,
}

impl Watch {
    fn new(conn: &Arc<Conn>) -> Watch {
        let now = Instant::now();
        Watch {
            conn: Arc::downgrade(conn),
            waiting_since: now,
            silent_since: now,
            started: 0,
            closing: None,
        }
    }

    /// Looks at the connection's activity since the last look and asks it to close when it
    /// has waited for a request's headers longer than `header_timeout` (HTTP/1: a slow client,
    /// or a keep-alive connection idle that long) or has been silent with no request in
    /// flight longer than `idle_timeout`; a connection still open one look after it was asked
    /// to close gracefully is dropped. Returns whether the connection is still open.
    fn look(&mut self, now: Instant, limits: &Limits) -> bool {
        let Some(conn) = self.conn.upgrade() else {
            return false;
        };
        let activity = &conn.activity;
        let started = activity.started.load(Ordering::Relaxed);
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        let wrote = activity.wrote.swap(false, Ordering::Relaxed);
        let read = activity.read.swap(false, Ordering::Relaxed);
        if busy || wrote || started != self.started {
            self.started = started;
            self.waiting_since = now;
        }
        if busy || wrote || read {
            self.silent_since = now;
        }
        let headers_late = !activity.h2.load(Ordering::Relaxed)
            && now.duration_since(self.waiting_since) >= limits.header_timeout;
        let silent = now.duration_since(self.silent_since) >= limits.idle_timeout;
        let how = match self.closing {
            None if headers_late || silent => {
                tracing::debug!(headers_late, silent, "closing a connection");
                Close::Graceful
            }
            Some(Close::Graceful) if headers_late || silent => Close::Abort,
            _ => return true,
        };
        self.closing = Some(how);
        activity.close(how);
        true
    }
}

/// A stream that records that bytes moved.
pub(super) struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            Activity::note(&this.conn.activity.read);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            Activity::note(&this.conn.activity.wrote);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            Activity::note(&this.conn.activity.wrote);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Assert that the stream types used above stay `Unpin` (the wrapper relies on it).
const _: fn() = || {
    fn unpin<T: Unpin>() {}
    unpin::<Watched<TcpStream>>();
    unpin::<tokio_rustls::server::TlsStream<Watched<TcpStream>>>();
};
