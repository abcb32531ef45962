//! Connections from inside the server's process: a service embedding the server (the streaming
//! server, say) publishes and subscribes without a socket, a parser or a writer task.
//!
//! A [`LocalConn`] is a client like any other to the rest of the server: its subscriptions sit
//! in the sublist (and are announced to routes), it shows in monitoring, and what it publishes
//! is routed as a `PUB` from a socket would be (local subscribers, queue groups, routes). Only
//! the transport differs:
//!
//! * publishing routes straight from the caller's task into the subscribers' outbound buffers
//!   and wakes (or writes to) their sockets at the end of the batch, as a connection's reader
//!   does after a read;
//! * what its subscriptions receive is appended to its outbound buffer as it is (subject,
//!   reply, headers, body: no `MSG` line to format and parse again) with a small frame per
//!   message, and [`LocalConn::recv`] hands buffer and frames over whole (no copy) as a
//!   [`LocalInbox`] of [`LocalMsg`]s.
//!
//! A local connection is never cut off as a slow consumer: its reader is the embedding
//! service, which cannot reconnect. Publishers that get far ahead of it wait for it (bounded,
//! the fast-producer stall every subscriber gets), so it holds at most about what arrives
//! during one of its own pauses.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rnats_protocol::Message;

use crate::conn::Subscription;
use crate::conn::{ClientShared, CloseReason, ConnMeta, LocalFrame};
use crate::router::Router;
use crate::state::{ServerShared, random_id};

/// Why a local connection could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    #[error("connection closed")]
    Closed,
    #[error("maximum connections exceeded")]
    MaxConnections,
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    #[error("maximum payload exceeded: {size} > {max}")]
    MaxPayload { size: usize, max: usize },
    #[error("no responders available for request")]
    NoResponders,
    #[error("request timed out")]
    Timeout,
}

/// What one publisher batch did: the state publishing touches, locked once per batch.
struct Publisher {
    router: Router,
    in_msgs: u64,
    in_bytes: u64,
}

/// A connection inside the server's process (see the module documentation).
pub struct LocalConn {
    srv: Arc<ServerShared>,
    me: Arc<ClientShared>,
    publisher: Mutex<Publisher>,
    next_sid: std::sync::atomic::AtomicU64,
}

impl LocalConn {
    pub fn open(srv: Arc<ServerShared>, name: &str) -> Result<LocalConn, LocalError> {
        if srv.shutdown.is_cancelled() {
            return Err(LocalError::Closed);
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        // Never a slow consumer (see the module documentation).
        let mut shared = ClientShared::new(srv.next_cid(), addr, usize::MAX / 2, false);
        shared.local = true;
        let me = Arc::new(shared);
        me.set_headers(true);
        *me.meta.lock() = ConnMeta {
            name: name.to_string(),
            lang: "rust".to_string(),
            version: crate::options::VERSION.to_string(),
            user: None,
        };
        if !srv.register(&me) {
            return Err(LocalError::MaxConnections);
        }
        Ok(LocalConn {
            srv,
            me,
            publisher: Mutex::new(Publisher {
                router: Router::new(),
                in_msgs: 0,
                in_bytes: 0,
            }),
            next_sid: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// The largest payload the server takes.
    pub fn max_payload(&self) -> usize {
        self.srv.opts().max_payload
    }

    pub fn is_closed(&self) -> bool {
        self.me.is_closed() || self.srv.shutdown.is_cancelled()
    }

    /// Subscribes; messages arrive through [`LocalConn::recv`] with the returned sid.
    pub fn subscribe(&self, subject: &str, queue: Option<&str>) -> Result<u64, LocalError> {
        if self.is_closed() {
            return Err(LocalError::Closed);
        }
        if !rnats_protocol::is_valid_subject(subject.as_bytes())
            || queue.is_some_and(|q| !rnats_protocol::is_valid_publish_subject(q.as_bytes()))
        {
            return Err(LocalError::InvalidSubject(subject.to_string()));
        }
        let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
        let sid_text = sid.to_string();
        let queue = queue.map(str::as_bytes);
        let sub = Arc::new(Subscription::new(
            self.me.clone(),
            subject.as_bytes(),
            queue,
            sid_text.as_bytes(),
            None,
            None,
        ));
        self.me
            .subs
            .lock()
            .insert(sid_text.as_bytes().into(), sub.clone());
        self.srv.sublist.insert(subject.as_bytes(), queue, sub);
        self.srv
            .local_interest_changed(subject.as_bytes(), queue, 1);
        Ok(sid)
    }

    pub fn unsubscribe(&self, sid: u64) {
        let sub = self.me.subs.lock().get(sid.to_string().as_bytes()).cloned();
        if let Some(sub) = sub {
            self.srv.remove_subscription(&sub);
        }
    }

    /// Publishes one message (see [`LocalConn::publish_batch`]); returns how many subscribers
    /// and routes it went to.
    pub async fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
    ) -> Result<usize, LocalError> {
        if self.is_closed() {
            return Err(LocalError::Closed);
        }
        let mut first_error = None;
        let (_, delivered, behind) = self.route_some(
            &mut std::iter::once((subject, reply, payload)),
            &mut first_error,
            true,
        );
        if let Some(behind) = behind {
            behind.wait_caught_up().await;
        }
        first_error.map_or(Ok(delivered), Err)
    }

    /// Publishes each `(subject, payload)` in order, as `PUB`s read from one socket: routed
    /// from this task, the subscribers' writers woken once at the end. Waits (at most
    /// 10 ms each time) for a subscriber that is far behind. A message with an invalid
    /// subject or over the maximum payload is skipped and the first such error returned once
    /// the others went out.
    pub async fn publish_batch<S, P>(&self, msgs: &[(S, P)]) -> Result<(), LocalError>
    where
        S: AsRef<str>,
        P: AsRef<[u8]>,
    {
        if self.is_closed() {
            return Err(LocalError::Closed);
        }
        let mut first_error = None;
        let mut done = 0;
        while done < msgs.len() {
            let behind = {
                let mut rest = msgs[done..]
                    .iter()
                    .map(|(s, p)| (s.as_ref(), None, p.as_ref()));
                let (n, _, behind) = self.route_some(&mut rest, &mut first_error, true);
                done += n;
                behind
            };
            if let Some(behind) = behind {
                behind.wait_caught_up().await;
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// [`LocalConn::publish_batch`] from outside the async runtime (a thread doing blocking
    /// work): never waits, not even for a subscriber far behind (which is still cut off at
    /// its `max_pending`). For small batches, such as replies.
    pub fn publish_batch_now<S, P>(&self, msgs: &[(S, P)]) -> Result<(), LocalError>
    where
        S: AsRef<str>,
        P: AsRef<[u8]>,
    {
        if self.is_closed() {
            return Err(LocalError::Closed);
        }
        let mut first_error = None;
        let mut all = msgs.iter().map(|(s, p)| (s.as_ref(), None, p.as_ref()));
        self.route_some(&mut all, &mut first_error, false);
        first_error.map_or(Ok(()), Err)
    }

    /// Routes messages until they run out or (with `stop_behind`) a subscriber falls far
    /// behind, then wakes the writers touched. Returns how many were taken, how many
    /// receivers the last one had, and the subscriber to wait for.
    fn route_some<'m>(
        &self,
        msgs: &mut dyn Iterator<Item = (&'m str, Option<&'m str>, &'m [u8])>,
        first_error: &mut Option<LocalError>,
        stop_behind: bool,
    ) -> (usize, usize, Option<Arc<ClientShared>>) {
        let max_payload = self.max_payload();
        let mut p = self.publisher.lock();
        let (mut taken, mut delivered) = (0, 0);
        let mut size = BytesMut::with_capacity(20);
        for (subject, reply, payload) in msgs {
            taken += 1;
            if !rnats_protocol::is_valid_publish_subject(subject.as_bytes())
                || reply.is_some_and(|r| !rnats_protocol::is_valid_publish_subject(r.as_bytes()))
            {
                first_error.get_or_insert(LocalError::InvalidSubject(subject.into()));
                continue;
            }
            if payload.len() > max_payload {
                first_error.get_or_insert(LocalError::MaxPayload {
                    size: payload.len(),
                    max: max_payload,
                });
                continue;
            }
            size.clear();
            rnats_protocol::write_u64(&mut size, payload.len() as u64);
            let msg = Message {
                subject: subject.as_bytes(),
                reply: reply.map(str::as_bytes),
                header_len: None,
                header_token: b"",
                size_token: &size,
                payload,
            };
            p.in_msgs += 1;
            p.in_bytes += payload.len() as u64;
            delivered = p.router.route(&self.srv, &msg, None);
            if stop_behind && p.router.batch.stall.is_some() {
                break;
            }
        }
        p.router.batch.wake_all(&self.srv);
        self.count_in(&mut p);
        (taken, delivered, p.router.batch.stall.take())
    }

    fn count_in(&self, p: &mut Publisher) {
        if p.in_msgs == 0 {
            return;
        }
        crate::router::count_in(&self.srv, &self.me, p.in_msgs, p.in_bytes);
        p.in_msgs = 0;
        p.in_bytes = 0;
        self.me.touch();
    }

    /// Moves what arrived for this connection's subscriptions into `inbox` (which must have
    /// been drained) and returns true, or returns false when nothing is waiting. Err once
    /// closed.
    pub fn try_recv(&self, inbox: &mut LocalInbox) -> Result<bool, LocalError> {
        if !inbox.frames.is_empty() {
            return Ok(true);
        }
        inbox.data.clear();
        match self.me.take_frames(&mut inbox.data, &mut inbox.frames) {
            Some(got) => Ok(got),
            None => Err(LocalError::Closed),
        }
    }

    /// Waits until something arrived for this connection's subscriptions and moves it into
    /// `inbox`. Cancel safe: nothing is taken unless it returns.
    pub async fn recv(&self, inbox: &mut LocalInbox) -> Result<(), LocalError> {
        loop {
            if self.try_recv(inbox)? {
                return Ok(());
            }
            tokio::select! {
                () = self.me.wake.notified() => {}
                () = self.me.cancel.cancelled() => {}
                () = self.srv.shutdown.cancelled() => return Err(LocalError::Closed),
            }
        }
    }

    /// Sends a request and waits for the first reply, for at most `timeout`: a temporary
    /// connection subscribes to a unique inbox, so this connection's stream is not touched.
    /// Fails at once with [`LocalError::NoResponders`] when nobody subscribes to `subject`.
    pub async fn request(
        &self,
        subject: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, LocalError> {
        let tmp = LocalConn::open(self.srv.clone(), "_request")?;
        let inbox = format!("_INBOX.{}", random_id(22));
        tmp.subscribe(&inbox, None)?;
        if tmp.publish(subject, Some(&inbox), payload).await? == 0 {
            return Err(LocalError::NoResponders);
        }
        let wait = async {
            let mut inbox = LocalInbox::default();
            loop {
                tmp.recv(&mut inbox).await?;
                if let Some(first) = inbox.drain().next() {
                    return Ok(first.payload);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(LocalError::Timeout))
    }

    /// Closes the connection: its subscriptions go, monitoring counts it as closed.
    pub fn close(&self) {
        if !self.me.close(CloseReason::ClientClosed, false) {
            return;
        }
        self.srv.monitor.connection_closed(&self.me);
        let subs: Vec<Arc<Subscription>> = self.me.subs.lock().values().cloned().collect();
        for sub in subs {
            self.srv.remove_subscription(&sub);
        }
        self.srv.unregister(&self.me);
    }
}

impl Drop for LocalConn {
    fn drop(&mut self) {
        self.close();
    }
}

/// Messages a local connection received, handed over by [`LocalConn::recv`]: one buffer and
/// the frames saying where each message lies in it.
#[derive(Default)]
pub struct LocalInbox {
    data: BytesMut,
    frames: Vec<LocalFrame>,
}

/// One message a local connection received. Its parts share the buffer they arrived in.
#[derive(Debug, Clone)]
pub struct LocalMsg {
    pub sid: u64,
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    /// The NATS headers block (`NATS/1.0…`), when it was published with headers.
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

impl LocalInbox {
    /// The messages, in the order they arrived; the inbox is empty afterwards (even if the
    /// iterator is dropped early).
    pub fn drain(&mut self) -> impl Iterator<Item = LocalMsg> + '_ {
        // Split off, not taken: once these messages are dropped, the buffer's memory goes back
        // to the connection (swapped in at the next receive) instead of being allocated anew.
        let data = self.data.split().freeze();
        self.frames.drain(..).map(move |f| {
            let mut at = f.start;
            let mut part = |len: u32| {
                let b = data.slice(at..at + len as usize);
                at += len as usize;
                b
            };
            LocalMsg {
                sid: f.sid,
                subject: part(f.subject),
                reply: f.reply.map(&mut part),
                headers: f.headers.map(&mut part),
                payload: part(f.body),
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> crate::Options {
        crate::Options {
            host: "127.0.0.1".into(),
            port: 0,
            ..Default::default()
        }
    }

    fn msgs(inbox: &mut LocalInbox) -> Vec<(String, u64, Bytes)> {
        inbox
            .drain()
            .map(|m| {
                let subject = String::from_utf8_lossy(&m.subject).into_owned();
                (subject, m.sid, m.payload)
            })
            .collect()
    }

    #[tokio::test]
    async fn local_connections_publish_subscribe_and_request() {
        let server = crate::start(options()).await.expect("server starts");
        let a = server.connect_local("a").expect("local a");
        let b = server.connect_local("b").expect("local b");
        let sid = b.subscribe("orders.*", None).expect("subscribe");
        let q1 = b.subscribe("work", Some("q")).expect("queue 1");
        let q2 = b.subscribe("work", Some("q")).expect("queue 2");
        a.publish_batch(&[
            ("orders.1", &b"one"[..]),
            ("orders.2", b"two"),
            ("other", b"x"),
            ("work", b"w1"),
            ("work", b"w2"),
        ])
        .await
        .expect("publish");
        let mut buf = LocalInbox::default();
        let mut got = Vec::new();
        while got.len() < 4 {
            tokio::time::timeout(Duration::from_secs(5), b.recv(&mut buf))
                .await
                .expect("delivered in time")
                .expect("open");
            got.extend(msgs(&mut buf));
        }
        assert_eq!(got[0], ("orders.1".into(), sid, Bytes::from_static(b"one")));
        assert_eq!(got[1], ("orders.2".into(), sid, Bytes::from_static(b"two")));
        // Each queue message went to exactly one member.
        assert!(
            got[2..]
                .iter()
                .all(|(s, id, _)| s == "work" && (*id == q1 || *id == q2))
        );
        assert!(!b.try_recv(&mut buf).expect("open"));

        // Invalid input is refused, the rest still goes out.
        assert!(matches!(
            a.publish_batch(&[("bad subject", &b"x"[..]), ("orders.3", b"three")])
                .await,
            Err(LocalError::InvalidSubject(_))
        ));
        b.recv(&mut buf).await.expect("open");
        assert_eq!(msgs(&mut buf)[0].2, Bytes::from_static(b"three"));
        assert!(matches!(
            a.subscribe("a..b", None),
            Err(LocalError::InvalidSubject(_))
        ));

        // Request/reply through a temporary connection; nobody listening fails at once.
        assert_eq!(
            a.request("nobody.home", b"?", Duration::from_secs(5)).await,
            Err(LocalError::NoResponders)
        );
        let svc = b.subscribe("svc", None).expect("subscribe");
        let answer = async {
            loop {
                b.recv(&mut buf).await.expect("open");
                let requests: Vec<LocalMsg> = buf.drain().collect();
                for m in requests {
                    if let Some(r) = m.reply {
                        assert_eq!(m.sid, svc);
                        let reply = String::from_utf8(r.to_vec()).expect("utf-8");
                        let mut answer = b"re: ".to_vec();
                        answer.extend_from_slice(&m.payload);
                        b.publish(&reply, None, &answer).await.expect("reply");
                        return;
                    }
                }
            }
        };
        let (got, ()) = tokio::join!(a.request("svc", b"hi", Duration::from_secs(5)), answer);
        assert_eq!(got, Ok(Bytes::from_static(b"re: hi")));

        // Closing drops the subscriptions.
        let clients = server.shared.num_clients();
        b.close();
        assert_eq!(server.shared.num_clients(), clients - 1);
        assert_eq!(a.publish("orders.9", None, b"gone").await, Ok(0));
        server.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn local_subscribers_get_reply_headers_and_body_from_a_socket_client() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let server = crate::start(options()).await.expect("server starts");
        let local = server.connect_local("svc").expect("local");
        let sid = local.subscribe("in.>", None).expect("subscribe");
        let addr = server.client_addr();
        let mut sock = BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("tcp"));
        let mut line = String::new();
        sock.read_line(&mut line).await.expect("INFO");
        let headers = "NATS/1.0\r\nA: b\r\n\r\n";
        let cmd = format!(
            "CONNECT {{\"headers\":true,\"verbose\":false}}\r\nHPUB in.h _INBOX.r {} {}\r\n{headers}hello\r\nPUB in.p 3\r\nabc\r\nPING\r\n",
            headers.len(),
            headers.len() + 5
        );
        sock.get_mut()
            .write_all(cmd.as_bytes())
            .await
            .expect("write");
        line.clear();
        sock.read_line(&mut line).await.expect("PONG");
        assert_eq!(line, "PONG\r\n");
        let mut inbox = LocalInbox::default();
        let mut got = Vec::new();
        while got.len() < 2 {
            tokio::time::timeout(Duration::from_secs(5), local.recv(&mut inbox))
                .await
                .expect("delivered in time")
                .expect("open");
            got.extend(inbox.drain());
        }
        assert!(inbox.is_empty());
        let (h, p) = (&got[0], &got[1]);
        assert_eq!(
            (h.sid, &h.subject[..], h.reply.as_deref()),
            (sid, &b"in.h"[..], Some(&b"_INBOX.r"[..]))
        );
        assert_eq!(h.headers.as_deref(), Some(headers.as_bytes()));
        assert_eq!(&h.payload[..], b"hello");
        assert_eq!(
            (
                &p.subject[..],
                p.reply.as_deref(),
                p.headers.as_deref(),
                &p.payload[..]
            ),
            (&b"in.p"[..], None, None, &b"abc"[..])
        );
        server.shutdown(Duration::from_secs(1)).await;
    }
}
