//! Hostile clients against the configured limits (issue #18). Each attack runs while a
//! well-behaved client, the [`Bystander`], keeps publishing to itself and receiving; every
//! test asserts the attack was cut off by its limit *and* the bystander never stalled.
//!
//! | attack                                   | bounded by                                     |
//! |------------------------------------------|------------------------------------------------|
//! | connections that never send `CONNECT`    | auth timeout (auth on); stale pings (auth off) |
//! | one byte per 100 ms (slowloris)          | the same: bytes that form no op do not count   |
//! | 100,000 `SUB`s on one connection         | `max_subs` (per connection)                    |
//! | `PING` flood from a client that never reads | `max_pending` (replies count, as in the reference) |
//! | 1,000 concurrent monitoring requests     | served; idle HTTP connections do not block it, |
//! |                                          | and the header read timeout closes them        |
//!
//! Counts are scaled down (the soak tool runs the million-subscription case, see
//! docs/BENCHMARKS.md); timeouts are short so that each test takes a few seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rnats_server::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::harness::{Raw, TestServer, test_options, wait_until};

const QUIET: &str = r#"{"verbose":false,"pedantic":false,"protocol":1}"#;
const QUIET_CONNECT: &str = "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n";
const AUTH_QUIET: &str =
    r#"{"verbose":false,"pedantic":false,"protocol":1,"user":"good","pass":"pw"}"#;
/// Longest a bystander round trip may take during an attack (generous: other builds share
/// the machine).
const MAX_RTT: Duration = Duration::from_secs(2);

/// A well-behaved client publishing to its own subscription every few milliseconds,
/// answering the server's PINGs, until stopped. Panics (failing the test at `finish`) when a
/// round trip does not complete within 5 s.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, Duration)>,
}

impl Bystander {
    async fn start(addr: SocketAddr, connect_json: &str) -> Bystander {
        let mut c = Raw::connect_with(addr, connect_json).await;
        c.send(b"SUB bystander 1\r\n").await;
        c.ping_pong().await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut n, mut worst) = (0u64, Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                let body = n.to_string();
                let sent = Instant::now();
                c.send(format!("PUB bystander {}\r\n{body}\r\n", body.len()).as_bytes())
                    .await;
                loop {
                    let line = c.line().await.expect("bystander: connection alive");
                    if line == "PING" {
                        c.send(b"PONG\r\n").await;
                        continue;
                    }
                    assert!(line.starts_with("MSG bystander 1 "), "bystander got {line}");
                    let size: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                    let payload = c.bytes(size + 2).await;
                    assert_eq!(&payload[..size], body.as_bytes(), "in order, nothing lost");
                    break;
                }
                worst = worst.max(sent.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (n, worst)
        });
        Bystander { stop, task }
    }

    /// Stops the bystander and checks it kept going: at least `min` round trips, none slower
    /// than [`MAX_RTT`].
    async fn finish(self, min: u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (n, worst) = timeout(Duration::from_secs(10), self.task)
            .await
            .expect("bystander stops")
            .expect("bystander never failed");
        eprintln!("bystander: {n} round trips, slowest {worst:?}");
        assert!(
            n >= min,
            "bystander made {n} round trips, expected at least {min}"
        );
        assert!(worst < MAX_RTT, "a bystander round trip took {worst:?}");
    }
}

/// Connects and reads the INFO line, with a generous bound (hundreds of connects at once on
/// a loaded machine); returns what came after the INFO, and the stream.
async fn connect_info(addr: SocketAddr) -> (Vec<u8>, TcpStream) {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                assert!(buf.starts_with(b"INFO {"), "no INFO first");
                buf.drain(..i + 2);
                return (buf, stream);
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read INFO");
            assert!(n > 0, "closed before INFO");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    timeout(Duration::from_secs(20), fut)
        .await
        .expect("INFO in time")
}

/// `n` hostile connections at once. Each reads the INFO, then sends `trickle` one byte every
/// 100 ms (followed by filler bytes; nothing at all when `None`) until the server closes it.
/// Returns, per connection, what it read after the INFO and how long it lived after the INFO.
async fn attack(
    addr: SocketAddr,
    n: usize,
    trickle: Option<&'static [u8]>,
) -> Vec<(String, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let (mut got, stream) = connect_info(addr).await;
                let opened = Instant::now();
                let (mut rd, mut wr) = stream.into_split();
                let writer = tokio::spawn(async move {
                    let Some(prefix) = trickle else {
                        return std::future::pending().await;
                    };
                    for b in prefix.iter().chain(std::iter::repeat(&b'x')).take(1000) {
                        if wr.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                let read = timeout(Duration::from_secs(10), rd.read_to_end(&mut got)).await;
                writer.abort();
                assert!(
                    read.is_ok(),
                    "the server did not close a hostile connection"
                );
                (String::from_utf8_lossy(&got).into_owned(), opened.elapsed())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("hostile connection task"));
    }
    out
}

/// Checks every hostile connection ended with `last` (the error the limit sends) within
/// `bound` of its INFO.
fn assert_cut_off(got: &[(String, Duration)], last: &str, bound: Duration) {
    for (text, lived) in got {
        assert!(text.ends_with(last), "expected {last:?}, got {text:?}");
        assert!(
            *lived < bound,
            "a hostile connection lived {lived:?} (bound {bound:?})"
        );
    }
}

fn auth_options(auth_timeout: Duration) -> Options {
    let mut opts = test_options();
    opts.auth.user = Some("good".into());
    opts.auth.password = Some("pw".into());
    opts.auth.timeout = Some(auth_timeout);
    opts
}

/// Slack on top of a limit's own time: scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);
const AUTH_TIMEOUT: Duration = Duration::from_millis(500);
/// Without authentication, unanswered PINGs close a connection after `ping_max + 1`
/// intervals (the reference has no CONNECT deadline then either).
fn stale_options() -> Options {
    Options {
        ping_interval: Duration::from_millis(300),
        ping_max: 1,
        ..test_options()
    }
}
const STALE_AFTER: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_by_the_auth_timeout() {
    let srv = TestServer::rnats_with(auth_options(AUTH_TIMEOUT)).await;
    let by = Bystander::start(srv.addr, AUTH_QUIET).await;
    let got = attack(srv.addr, 500, None).await;
    assert_cut_off(
        &got,
        "-ERR 'Authentication Timeout'\r\n",
        AUTH_TIMEOUT + SLACK,
    );
    let shared = srv.handle().shared.clone();
    wait_until(|| shared.num_clients() == 1).await;
    by.finish(20).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_without_auth_go_stale() {
    let srv = TestServer::rnats_with(stale_options()).await;
    let by = Bystander::start(srv.addr, QUIET).await;
    let got = attack(srv.addr, 500, None).await;
    assert_cut_off(
        &got,
        "PING\r\n-ERR 'Stale Connection'\r\n",
        STALE_AFTER + SLACK,
    );
    let shared = srv.handle().shared.clone();
    wait_until(|| shared.num_clients() == 1).await;
    by.finish(20).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_by_the_auth_timeout() {
    let srv = TestServer::rnats_with(auth_options(AUTH_TIMEOUT)).await;
    let by = Bystander::start(srv.addr, AUTH_QUIET).await;
    // A CONNECT that never ends, and a PUB whose payload never completes: trickling bytes
    // does not extend the deadline.
    let a = attack(srv.addr, 100, Some(b"CONNECT {\"user\":\"good\",")).await;
    let b = attack(srv.addr, 100, Some(b"PUB x 1048576\r\n")).await;
    assert_cut_off(
        &a,
        "-ERR 'Authentication Timeout'\r\n",
        AUTH_TIMEOUT + SLACK,
    );
    assert_cut_off(
        &b,
        "-ERR 'Authentication Timeout'\r\n",
        AUTH_TIMEOUT + SLACK,
    );
    by.finish(20).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_without_auth_goes_stale() {
    let srv = TestServer::rnats_with(stale_options()).await;
    let by = Bystander::start(srv.addr, QUIET).await;
    // Bytes that form no complete op are not activity: the PINGs still go out.
    let a = attack(srv.addr, 100, Some(b"CONNECT {\"verbose\":false,")).await;
    let b = attack(srv.addr, 100, Some(b"PUB x 1048576\r\n")).await;
    assert_cut_off(&a, "-ERR 'Stale Connection'\r\n", STALE_AFTER + SLACK);
    assert_cut_off(&b, "-ERR 'Stale Connection'\r\n", STALE_AFTER + SLACK);
    let shared = srv.handle().shared.clone();
    wait_until(|| shared.num_clients() == 1).await;
    by.finish(20).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_flood_stops_at_max_subs() {
    const LIMIT: usize = 10_000;
    const SENT: usize = 100_000;
    let opts = Options {
        max_subs: LIMIT,
        ..test_options()
    };
    let srv = TestServer::rnats_with(opts).await;
    let shared = srv.handle().shared.clone();
    let by = Bystander::start(srv.addr, QUIET).await;
    let base = shared.sublist.count();

    let mut hostile = Raw::connect_with(srv.addr, QUIET).await;
    let (mut rd, mut wr) = hostile.stream.into_split();
    // Read the replies while writing, as a client must (an unread reply flood is the next
    // test's attack).
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let needle = b"-ERR 'maximum subscriptions exceeded'\r\n";
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
                .await
                .expect("replies in time")
                .expect("read");
            assert!(n > 0, "the server closed the subscribing client");
            buf.extend_from_slice(&chunk[..n]);
            if buf.ends_with(b"PONG\r\n") {
                break;
            }
        }
        let errs = buf.windows(needle.len()).filter(|w| w == needle).count();
        (errs, rd)
    });
    let mut batch = Vec::with_capacity(SENT * 24);
    for i in 0..SENT {
        batch.extend_from_slice(format!("SUB flood.{i} {i}\r\n").as_bytes());
    }
    batch.extend_from_slice(b"PING\r\n");
    wr.write_all(&batch).await.expect("write SUBs");
    let (errs, rd) = reader.await.expect("reader");
    assert_eq!(errs, SENT - LIMIT, "every SUB past the limit is refused");
    assert_eq!(shared.sublist.count(), base + LIMIT as u64);
    // The connection stays usable (the reference does not close it either).
    hostile.stream = rd.reunite(wr).expect("same stream");
    hostile.buf.clear();
    hostile.send(b"PUB flood.7 2\r\nhi\r\n").await;
    assert_eq!(
        hostile.msg().await,
        ("MSG flood.7 7 2".to_string(), b"hi".to_vec())
    );
    drop(hostile);
    wait_until(|| shared.sublist.count() == base).await;
    by.finish(3).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_is_cut_off_at_max_pending() {
    // The PONGs it never reads pile up in its outbound buffer; the reference counts them
    // against max_pending like messages. The write deadline is long on purpose: only the
    // pending limit may end this.
    let opts = Options {
        max_pending: 256 * 1024,
        write_deadline: Duration::from_secs(120),
        ..test_options()
    };
    let srv = TestServer::rnats_with(opts).await;
    let shared = srv.handle().shared.clone();
    let by = Bystander::start(srv.addr, QUIET).await;
    // A small receive buffer (no autotuning, which may grow to tens of MiB on loopback), so
    // that the kernel holds few of the PONGs and the server's buffer must take the rest.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(8 * 1024).expect("SO_RCVBUF");
    let mut stream = sock.connect(srv.addr).await.expect("connect");
    stream
        .write_all(QUIET_CONNECT.as_bytes())
        .await
        .expect("CONNECT");
    let pings = b"PING\r\n".repeat(16 * 1024);
    // Up to 64 MiB of PINGs, each answered by a PONG of the same size: far past max_pending
    // plus what the socket buffers hold (the server's send buffer grows to 4 MiB at most
    // here). The server must close the connection before we get through.
    let mut sent = 0usize;
    let closed = timeout(Duration::from_secs(60), async {
        while sent < 64 << 20 {
            if stream.write_all(&pings).await.is_err() {
                return true;
            }
            sent += pings.len();
        }
        false
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "the server did not cut the flood off ({sent} bytes sent)"
    );
    eprintln!("PING flood cut off after {} KiB", sent / 1024);
    wait_until(|| shared.stats.slow_consumers.load(Ordering::Relaxed) == 1).await;
    wait_until(|| shared.num_clients() == 1).await;
    by.finish(1).await;
    srv.stop().await;
}

/// One `GET path` over a fresh connection: the status code (0 if none).
async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect to monitor");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_monitoring_requests_are_all_served() {
    let opts = Options {
        http_host: Some("127.0.0.1".into()),
        http_port: -1,
        ..test_options()
    };
    let srv = TestServer::rnats_with(opts).await;
    let mon = srv.monitor.expect("monitoring on");
    let by = Bystander::start(srv.addr, QUIET).await;
    // Some clients with subscriptions, so /connz and /subsz have work to do.
    let mut others = Vec::new();
    for i in 0..20 {
        let mut c = Raw::connect_with(srv.addr, QUIET).await;
        c.send(format!("SUB other.{i} 1\r\nSUB other.> 2\r\n").as_bytes())
            .await;
        c.ping_pong().await;
        others.push(c);
    }
    // Connections that open and never send a request hold nothing up.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(mon).await.expect("idle connect"));
    }
    let paths = [
        "/varz",
        "/connz?subs=1",
        "/subsz?subs=1",
        "/healthz",
        "/routez",
    ];
    let start = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(http_status(mon, paths[i % paths.len()])))
        .collect();
    let mut ok = 0;
    for t in tasks {
        let status = timeout(Duration::from_secs(30), t)
            .await
            .expect("response in time")
            .expect("request task");
        ok += usize::from(status == 200);
    }
    assert_eq!(ok, 1000, "every request answered 200");
    eprintln!("1000 concurrent monitoring requests: {:?}", start.elapsed());
    for c in &mut others {
        c.ping_pong().await;
    }
    by.finish(3).await;
    // The header read timeout (10 s) closes the idle connections.
    let closing: Vec<_> = idle
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await
            })
        })
        .collect();
    for c in closing {
        assert!(
            c.await.expect("task").is_ok(),
            "an idle monitoring connection stayed open"
        );
    }
    srv.stop().await;
}
