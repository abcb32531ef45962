//! The message flusher: one thread running message flushes (fsync for the file store) back
//! to back, while the engine goes on (group commit, pipelined). A flush reports the sequence
//! it covered per channel and carries the PubAcks of its messages; over a local connection
//! the flusher thread sends those PubAcks itself.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use rnats_streaming::proto::PubAck;
use rnats_streaming::store::Channel;
use tokio::sync::mpsc;
use tracing::{debug, error};

use crate::nats::Subject;

/// A PubAck waiting for its message to be flushed.
pub(super) struct PendingPubAck {
    pub(super) reply: Subject,
    pub(super) guid: String,
    pub(super) channel: String,
}

/// A message flush: the channels appended to (with the last sequence each had when the flush
/// was started) and the PubAcks of those messages.
#[derive(Default)]
pub(super) struct FlushJob {
    pub(super) channels: Vec<(String, Arc<Channel>, u64)>,
    pub(super) acks: Vec<PendingPubAck>,
}

/// What a message flush did: per channel the sequence it covered and its error, if any.
#[derive(Default)]
pub(super) struct Flushed {
    pub(super) channels: Vec<(String, Arc<Channel>, u64, Option<String>)>,
    pub(super) acks: Vec<PendingPubAck>,
    /// Jobs submitted to the flusher that this flush covered.
    pub(super) jobs: usize,
}

impl Flushed {
    /// The PubAcks of this flush (an error ack for a message whose channel failed to flush).
    pub(super) fn take_pubacks(&mut self) -> Vec<(Subject, PubAck)> {
        let channels = &self.channels;
        let failed = |name: &str| {
            channels
                .iter()
                .find(|(n, ..)| n == name)
                .and_then(|(.., err)| err.clone())
        };
        std::mem::take(&mut self.acks)
            .into_iter()
            .map(|a| {
                let error = failed(&a.channel).unwrap_or_default();
                (
                    a.reply,
                    PubAck {
                        guid: a.guid,
                        error,
                    },
                )
            })
            .collect()
    }
}

/// PubAcks encoded into one buffer, each sent as a slice of it.
pub(super) fn encode_pubacks(acks: Vec<(Subject, PubAck)>) -> Vec<(Subject, Bytes)> {
    let mut buf = BytesMut::with_capacity(acks.len() * 32);
    let mut ends = Vec::with_capacity(acks.len());
    for (_, ack) in &acks {
        // Encoding into a BytesMut cannot fail: it grows as needed.
        let _ = ack.encode(&mut buf);
        ends.push(buf.len());
    }
    let buf = buf.freeze();
    let mut start = 0;
    acks.into_iter()
        .zip(ends)
        .map(|((reply, _), end)| {
            let m = (reply, buf.slice(start..end));
            start = end;
            m
        })
        .collect()
}

impl FlushJob {
    pub(super) fn run(self) -> Flushed {
        let channels = self
            .channels
            .into_iter()
            .map(|(name, ch, upto)| {
                let err = ch.msgs().flush().err().map(|e| e.to_string());
                (name, ch, upto, err)
            })
            .collect();
        Flushed {
            channels,
            acks: self.acks,
            jobs: 1,
        }
    }

    /// Adds `other` to this job (one flush per channel, up to the highest sequence).
    pub(super) fn merge(&mut self, other: FlushJob) {
        for (name, ch, upto) in other.channels {
            match self.channels.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => e.2 = e.2.max(upto),
                None => self.channels.push((name, ch, upto)),
            }
        }
        self.acks.extend(other.acks);
    }
}

/// The message flusher: one thread running flushes back to back. While it flushes, the
/// engine adds what it appends to the *next* job; as soon as a flush returns, the flusher
/// takes that job, so the disk never waits for the engine (group commit, pipelined).
pub(super) struct Flusher {
    pub(super) shared: Arc<FlusherShared>,
    pub(super) done: mpsc::UnboundedReceiver<Flushed>,
    /// Jobs submitted and not reported done yet.
    pub(super) outstanding: usize,
}

pub(super) struct FlusherShared {
    pub(super) next: parking_lot::Mutex<FlusherNext>,
    pub(super) wake: parking_lot::Condvar,
}

#[derive(Default)]
pub(super) struct FlusherNext {
    pub(super) job: FlushJob,
    pub(super) jobs: usize,
    pub(super) stop: bool,
}

impl Flusher {
    pub(super) fn start(sender: Option<Arc<rnats_server::LocalConn>>) -> std::io::Result<Flusher> {
        let shared = Arc::new(FlusherShared {
            next: parking_lot::Mutex::new(FlusherNext::default()),
            wake: parking_lot::Condvar::new(),
        });
        let (tx, done) = mpsc::unbounded_channel();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("stan-flusher".into())
            .spawn(move || {
                loop {
                    let (job, jobs) = {
                        let mut next = sh.next.lock();
                        while next.jobs == 0 && !next.stop {
                            sh.wake.wait(&mut next);
                        }
                        if next.jobs == 0 {
                            return;
                        }
                        let jobs = std::mem::take(&mut next.jobs);
                        (std::mem::take(&mut next.job), jobs)
                    };
                    // A panic must not stop the flusher (the engine would wait for it forever):
                    // the PubAcks of that flush are lost, the publishers time out.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
                    let mut done = run.unwrap_or_else(|_| {
                        error!("STREAM: A message flush panicked");
                        Flushed::default()
                    });
                    done.jobs = jobs;
                    if let Some(conn) = &sender {
                        let acks = encode_pubacks(done.take_pubacks());
                        if let Err(e) = conn.publish_batch_now(&acks) {
                            debug!("STREAM: publish of a PubAck failed: {e}");
                        }
                    }
                    if tx.send(done).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Flusher {
            shared,
            done,
            outstanding: 0,
        })
    }

    pub(super) fn submit(&mut self, job: FlushJob) {
        {
            let mut next = self.shared.next.lock();
            next.job.merge(job);
            next.jobs += 1;
        }
        self.shared.wake.notify_one();
        self.outstanding += 1;
    }

    /// The next completed flush (never resolves when none is outstanding).
    pub(super) async fn completed(&mut self) -> Flushed {
        if self.outstanding == 0 {
            return std::future::pending().await;
        }
        match self.done.recv().await {
            Some(done) => {
                self.outstanding = self.outstanding.saturating_sub(done.jobs);
                done
            }
            None => {
                self.outstanding = 0;
                std::future::pending().await
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.next.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

/// The flusher's next completion, if there is a flusher.
pub(super) async fn flushed(f: &mut Option<Flusher>) -> Flushed {
    match f {
        Some(f) => f.completed().await,
        None => std::future::pending().await,
    }
}
