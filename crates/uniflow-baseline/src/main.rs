//! `uniflow-baseline`: a bare hyper 1.x server that answers `GET /ping` with `pong`.
//!
//! It is the yardstick for `scripts/bench-ping`, which serves the same request
//! from the uniflow engine (`uniflow start --from-specs examples/ping.yaml`) and
//! from this binary side by side and compares throughput, latency and CPU per
//! request; `GET /sleep` answers the same after 4 seconds, for `scripts/bench-held` (memory
//! per request held in flight). The server therefore does nothing but HTTP, and it sets up its
//! connections exactly like the engine's HTTP listener does, so that the
//! difference between the two measures only the engine:
//!
//! - jemalloc as the global allocator (`tikv-jemallocator`, the workspace's
//!   build of it);
//! - tokio multi-thread runtime with the default worker count, the accept loop
//!   running in a spawned task;
//! - a `socket2` listener with `SO_REUSEADDR` (and dual-stack when bound to an
//!   IPv6 address such as `::`), a listen backlog of 4096, set nonblocking and
//!   converted into a `tokio::net::TcpListener`; on an accept error it sleeps
//!   10 ms and goes on;
//! - `TCP_NODELAY` on every accepted stream, served on its own spawned task by
//!   one shared `hyper_util::server::conn::auto::Builder` (HTTP/1.1 and h2c)
//!   with `serve_connection(..).into_owned()` on a `service_fn`.
//!
//! What the engine does on top (graceful-shutdown tracking of connections,
//! tracing, the flow graph itself) is deliberately left out: that is the cost
//! being measured.
//!
//! With `--sqlite PATH` it also answers `GET /todos/:id` with the row of that id in the
//! `todos` table of the SQLite file at `PATH` (`{"done":..,"id":..,"title":..}`, or 404), one
//! sqlx query per request from a pool: the yardstick of `scripts/bench-sql`, which serves the
//! same through a listener, a router and a `sql` node.
//!
//! Usage: `uniflow-baseline [--host H] [--port N] [--sqlite PATH]` (defaults `0.0.0.0`,
//! `8001`). It exits with status 0 on SIGINT or SIGTERM.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use socket2::{Domain, Protocol, Socket, Type};
// The engine's allocator, so that the comparison does not measure allocators.
use tikv_jemallocator::Jemalloc;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::OnceCell;

#[global_allocator]
static ALLOCATOR: Jemalloc = Jemalloc;

/// Listen backlog; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;
const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_PORT: u16 = 8001;
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const USAGE: &str = "usage: uniflow-baseline [--host H] [--port N] [--sqlite PATH]\n\n\
    Bare hyper server answering GET /ping with `pong` (benchmark baseline).\n\n\
    options:\n  --host H  address to bind (default 0.0.0.0)\n  --port N  port to bind (default 8001)\n\
    \x20 --sqlite PATH  also answer GET /todos/:id from the todos table of this SQLite file\n";

/// The pool of `--sqlite`, when given.
static TODOS: OnceCell<sqlx::SqlitePool> = OnceCell::const_new();

/// Command-line options.
#[derive(Debug)]
struct Args {
    host: String,
    port: u16,
    sqlite: Option<String>,
}

/// Parses `--host H`, `--port N` (also `--host=H`, `--port=N`) and `-h`/`--help`.
/// Returns `Ok(None)` when help was asked for.
fn parse_args(mut words: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        host: DEFAULT_HOST.to_owned(),
        port: DEFAULT_PORT,
        sqlite: None,
    };
    while let Some(arg) = words.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--host" | "--port" | "--sqlite" => {
                let value = match inline.or_else(|| words.next()) {
                    Some(value) if !value.is_empty() => value,
                    _ => return Err(format!("{flag} needs a value")),
                };
                if flag == "--host" {
                    args.host = value;
                } else if flag == "--sqlite" {
                    args.sqlite = Some(value);
                } else {
                    args.port = value
                        .parse()
                        .map_err(|_| format!("invalid --port {value:?}: expected 0..=65535"))?;
                }
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Some(args))
}

/// Resolves `host:port` to the first matching socket address.
fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{host} resolves to no address"),
        )
    })
}

/// Binds the listener the same way the engine's HTTP listener does.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `::` serves IPv4 too, like the engine's listener.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, TEXT_PLAIN);
    response
}

/// How long `GET /sleep` waits before it answers: what `scripts/bench-held` holds requests
/// in flight with, as the engine's `sleep` node does (a timer, no thread).
const SLEEP: Duration = Duration::from_secs(4);

/// `GET /ping` -> 200 `pong`; `GET /sleep` -> 200 `pong` after [`SLEEP`]; `/ping` with
/// another method -> 405; anything else -> 404.
async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/ping") => text(StatusCode::OK, "pong"),
        (&Method::GET, "/sleep") => {
            tokio::time::sleep(SLEEP).await;
            text(StatusCode::OK, "pong")
        }
        (_, "/ping") => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            response
        }
        (&Method::GET, path) if path.starts_with("/todos/") && TODOS.initialized() => {
            todo(&path["/todos/".len()..]).await
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    };
    Ok(response)
}

/// The todo `id` as JSON, read with one query; 404 when there is none.
async fn todo(id: &str) -> Response<Full<Bytes>> {
    let pool = TODOS.get().expect("checked by the caller");
    let row: Result<Option<(i64, String, bool)>, _> =
        sqlx::query_as("SELECT id, title, done FROM todos WHERE id = ?")
            .bind(id)
            .fetch_optional(pool)
            .await;
    match row {
        Ok(Some((id, title, done))) => {
            let body = serde_json::json!({"done": done, "id": id, "title": title});
            let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            response
        }
        Ok(None) => text(StatusCode::NOT_FOUND, "Not Found"),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

/// Accepts connections forever. Runs as a spawned task, like the engine's
/// listener, so accepting and serving share the runtime's worker threads (the
/// future given to `block_on` would run on the main thread instead, and every
/// accepted connection would then wake a worker).
async fn serve(listener: TcpListener) {
    // One builder for all connections; each connection takes an owned copy.
    let builder = Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of file descriptors or memory must not spin the loop.
                eprintln!("uniflow-baseline: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Best effort, like the engine: a failure here only costs latency.
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service_fn(handle))
            .into_owned();
        tokio::spawn(async move {
            // Errors are the peer's doing (resets, malformed requests); the
            // benchmark counts failures on the client side.
            let _ = conn.await;
        });
    }
}

/// Listens for SIGTERM and SIGINT; the returned future ends when one arrives.
fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprint!("uniflow-baseline: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match resolve(&args.host, args.port).and_then(bind) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "uniflow-baseline: cannot listen on {}:{}: {err}",
                args.host, args.port
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(err) => {
            eprintln!("uniflow-baseline: cannot listen for signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.sqlite {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(8)
            .connect_lazy_with(options);
        let _ = TODOS.set(pool);
    }
    if let Ok(addr) = listener.local_addr() {
        eprintln!("uniflow-baseline: listening on http://{addr}");
    }
    tokio::spawn(serve(listener));
    shutdown.await;
    // Returning drops the runtime, which cancels the accept loop and any
    // connections still open.
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap().unwrap();
        assert_eq!((args.host.as_str(), args.port), ("0.0.0.0", 8001));
    }

    #[test]
    fn host_and_port() {
        let args = parse(&["--port", "9000", "--host=127.0.0.1"])
            .unwrap()
            .unwrap();
        assert_eq!((args.host.as_str(), args.port), ("127.0.0.1", 9000));
        let args = parse(&["--sqlite", "/tmp/t.db"]).unwrap().unwrap();
        assert_eq!(args.sqlite.as_deref(), Some("/tmp/t.db"));
    }

    #[test]
    fn help_and_errors() {
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--port"]).is_err());
        assert!(parse(&["--port", "http"]).is_err());
        assert!(parse(&["--port", "70000"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
    }

    #[test]
    fn resolves_ipv4_and_ipv6() {
        assert_eq!(
            resolve("127.0.0.1", 80).unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(resolve("[::1]", 80).unwrap(), "[::1]:80".parse().unwrap());
    }
}
