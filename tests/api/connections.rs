//! Connections a stranger opens and does not use: raw TCP sockets that send nothing, trickle
//! their headers or idle after a request are closed after `http.header_read_timeout_seconds`
//! and `http.idle_timeout_seconds`; beyond `http.max_connections` a listener stops accepting
//! while the others (management's health) still answer.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::support::process::{BrokerProcess, Ports, Stderr};

/// The tests' timeouts: one second for headers, two of idling.
const TIMEOUTS: &str = "header_read_timeout_seconds = 1\nidle_timeout_seconds = 2";
/// Slack for a loaded machine; the defaults (10 s, 75 s) are far from these.
const CLOSED_WITHIN: Duration = Duration::from_secs(6);

fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes the connection; returns when, and everything it sent.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<(Instant, Vec<u8>)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some((Instant::now(), received)),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = TestApp::builder(Backend::Sqlite).http(TIMEOUTS).spawn().await;
    for listener in [&app.public, &app.internal, &app.management] {
        let opened = Instant::now();
        let mut stream = TcpStream::connect(address(listener)).await.expect("connect");

        let closed = until_closed(&mut stream, CLOSED_WITHIN).await;

        let (at, received) = closed.unwrap_or_else(|| panic!("{listener}: a silent connection is still open"));
        assert!(at - opened >= Duration::from_millis(900), "{listener}: closed before the timeout: {:?}", at - opened);
        assert!(received.is_empty(), "{listener}: nothing is answered to nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_trickles_its_headers_is_closed_after_the_header_timeout() {
    let app = TestApp::builder(Backend::Sqlite).http(TIMEOUTS).spawn().await;
    let stream = TcpStream::connect(address(&app.public)).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    // A byte every 200 ms: always some progress, never the end of the headers.
    let trickle = tokio::spawn(async move {
        let request =
            b"GET /realms/allhands HTTP/1.1\r\nHost: broker\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in request {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(CLOSED_WITHIN, reader.read(&mut buffer)).await;

    let elapsed = started.elapsed();
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the trickling connection is closed within {CLOSED_WITHIN:?}");
    assert!(elapsed >= Duration::from_millis(900), "not before the header timeout: {elapsed:?}");
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let app = TestApp::builder(Backend::Sqlite).http(TIMEOUTS).spawn().await;
    let mut stream = TcpStream::connect(address(&app.public)).await.expect("connect");
    stream.write_all(b"GET /realms/allhands HTTP/1.1\r\nHost: broker\r\n\r\n").await.expect("request");

    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.expect("an answer");
    let answered = Instant::now();
    let closed = until_closed(&mut stream, CLOSED_WITHIN + Duration::from_secs(2)).await;

    assert_eq!(&first, b"HTTP/1.1 200", "the request is answered");
    let (at, _) = closed.expect("an idle keep-alive connection is closed");
    let idle = at - answered;
    assert!(idle >= Duration::from_millis(1800), "kept for the idle timeout (2 s), not the header timeout: {idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_bound_a_listener_waits_while_health_still_answers() {
    let app = TestApp::builder(Backend::Sqlite)
        .http("header_read_timeout_seconds = 60\nidle_timeout_seconds = 60\nmax_connections = 3")
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(address(&app.public)).await.expect("connect"));
    }
    // The kernel completes the handshake, but the broker does not take the connection.
    let mut extra = TcpStream::connect(address(&app.public)).await.expect("queued by the kernel");
    extra.write_all(b"GET /realms/allhands HTTP/1.1\r\nHost: broker\r\n\r\n").await.expect("request");
    let mut first = [0u8; 12];

    let waiting = tokio::time::timeout(Duration::from_millis(1500), extra.read_exact(&mut first)).await;
    let live = app.api.get(format!("{}{}", app.management, paths::HEALTH_LIVE)).send().await.expect("live");

    assert!(waiting.is_err(), "the fourth connection is not served while three are held");
    assert_eq!(live.status(), StatusCode::OK, "the management listener has its own bound");
    // One held connection goes away: the waiting one is taken and answered.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(5), extra.read_exact(&mut first))
        .await
        .expect("answered once a slot is free")
        .expect("read");
    assert_eq!(&first, b"HTTP/1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_process_gracefully_despite_open_idle_and_silent_connections() {
    let db = TestDb::new(Backend::Sqlite).await;
    let ports = Ports::free();
    let config = format!(
        "[http]\nbind = \"127.0.0.1:{}\"\ninternal_bind = \"127.0.0.1:{}\"\nmanagement_bind = \"127.0.0.1:{}\"\n\
         [vault]\nencryption_keys = [\"{VAULT_KEY}\"]\n",
        ports.public, ports.internal, ports.management
    );
    let mut broker = BrokerProcess::start(&config, ports, &[("DATABASE_URL", &db.url)], Stderr::LogFile).await;
    // A keep-alive connection idle after its request, and one that never sent a byte: both
    // would stay open for the default timeouts (75 s, 10 s) if shutdown waited for them.
    let mut idle = TcpStream::connect(address(&broker.public)).await.expect("connect");
    idle.write_all(b"GET /realms/allhands HTTP/1.1\r\nHost: broker\r\n\r\n").await.expect("request");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("answer");
    let _silent = TcpStream::connect(address(&broker.internal)).await.expect("connect");

    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || broker.terminate()).await.expect("terminate");

    assert!(exit.success(), "SIGTERM ends the process with status 0: {exit}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "open connections do not hold shutdown: {:?}",
        started.elapsed()
    );
    let closed = until_closed(&mut idle, Duration::from_secs(1)).await;
    assert!(closed.is_some(), "the idle connection was closed");
}
