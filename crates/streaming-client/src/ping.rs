//! Client → server PINGs (protocol 1), as an I/O-free state machine.
//!
//! Every ping interval the client calls [`PingState::tick`]: it counts one more PING
//! outstanding and says whether to send it or to declare the connection lost (more than
//! `max_out` outstanding). Every reply on the ping inbox goes to [`PingState::on_reply`]: an
//! empty payload or a `PingResponse` without error means the server knows this connection (the
//! count goes back to 0, not down by one: with channel partitioning several servers answer one
//! PING); a `PingResponse` error (the connection was replaced or closed on the server) is
//! fatal; a status message (503 no responders: no streaming server listens) or garbage
//! is ignored and so does not count as an answer.

use std::time::Duration;

use prost::Message as _;
use rnats_streaming::proto::PingResponse;

/// What to do at a ping interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingAction {
    /// Send one PING.
    Send,
    /// Too many PINGs went unanswered: the connection is lost.
    Lost,
}

/// What a reply on the ping inbox means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingReply {
    /// The server knows this connection.
    Alive,
    /// Not an answer (status message, undecodable, or already lost).
    Ignored,
    /// The server says the connection is gone; the text is its error.
    Lost(String),
}

/// Outstanding-PING counter.
#[derive(Debug, Clone)]
pub struct PingState {
    max_out: u32,
    out: u32,
    lost: bool,
}

impl PingState {
    pub fn new(max_out: u32) -> Self {
        PingState {
            max_out,
            out: 0,
            lost: false,
        }
    }

    /// PINGs sent and not answered since the last answer.
    pub fn outstanding(&self) -> u32 {
        self.out
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// The ping interval elapsed.
    pub fn tick(&mut self) -> PingAction {
        if self.lost {
            return PingAction::Lost;
        }
        self.out += 1;
        if self.out > self.max_out {
            self.lost = true;
            PingAction::Lost
        } else {
            PingAction::Send
        }
    }

    /// Sending a PING failed because the NATS connection is closed for good.
    pub fn send_failed_closed(&mut self) -> PingAction {
        self.lost = true;
        PingAction::Lost
    }

    /// A message arrived on the ping inbox, with its NATS status (header block) and payload.
    pub fn on_reply(&mut self, status: Option<u16>, payload: &[u8]) -> PingReply {
        if self.lost || status.is_some() {
            return PingReply::Ignored;
        }
        if !payload.is_empty() {
            match PingResponse::decode(payload) {
                Err(_) => return PingReply::Ignored,
                Ok(r) if !r.error.is_empty() => {
                    self.lost = true;
                    return PingReply::Lost(r.error);
                }
                Ok(_) => {}
            }
        }
        self.out = 0;
        PingReply::Alive
    }
}

/// The PING period for a `pingInterval` of a `ConnectResponse`: seconds when positive,
/// milliseconds when negative (the convention of the official test suites), none when 0.
pub fn ping_period(interval: i32) -> Option<Duration> {
    match interval {
        0 => None,
        i if i > 0 => Some(Duration::from_secs(i as u64)),
        i => Some(Duration::from_millis(i.unsigned_abs() as u64)),
    }
}

/// The `pingInterval` to send for a period: whole seconds when it is a whole number of
/// seconds, otherwise negative milliseconds (at least 1 ms).
pub fn encode_ping_interval(period: Duration) -> i32 {
    if period.subsec_nanos() == 0 && period.as_secs() >= 1 {
        period.as_secs().min(i32::MAX as u64) as i32
    } else {
        -(period.as_millis().clamp(1, i32::MAX as u128) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_reply(text: &str) -> Vec<u8> {
        PingResponse { error: text.into() }.encode_to_vec()
    }

    #[test]
    fn lost_after_more_than_max_out() {
        let mut p = PingState::new(3);
        assert_eq!(p.tick(), PingAction::Send);
        assert_eq!(p.tick(), PingAction::Send);
        assert_eq!(p.tick(), PingAction::Send);
        assert_eq!(p.outstanding(), 3);
        assert_eq!(p.tick(), PingAction::Lost);
        assert!(p.is_lost());
        assert_eq!(p.tick(), PingAction::Lost, "stays lost");
        assert_eq!(p.on_reply(None, b""), PingReply::Ignored, "too late");
    }

    #[test]
    fn any_ok_reply_resets_to_zero() {
        let mut p = PingState::new(2);
        p.tick();
        p.tick();
        assert_eq!(p.on_reply(None, b""), PingReply::Alive);
        assert_eq!(p.outstanding(), 0);
        p.tick();
        p.tick();
        // A PingResponse with no error that still has bytes (unknown field) is OK too.
        assert_eq!(p.on_reply(None, &[0x78, 1]), PingReply::Alive);
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.tick(), PingAction::Send);
    }

    #[test]
    fn error_reply_is_fatal() {
        let mut p = PingState::new(5);
        p.tick();
        let text = "client has been replaced or is no longer registered";
        assert_eq!(
            p.on_reply(None, &err_reply(text)),
            PingReply::Lost(text.into())
        );
        assert!(p.is_lost());
        assert_eq!(p.tick(), PingAction::Lost);
    }

    #[test]
    fn status_and_garbage_are_not_answers() {
        let mut p = PingState::new(2);
        p.tick();
        p.tick();
        assert_eq!(p.on_reply(Some(503), b""), PingReply::Ignored);
        assert_eq!(p.on_reply(None, &[0xFF, 0xFF]), PingReply::Ignored);
        assert_eq!(p.outstanding(), 2);
        assert_eq!(p.tick(), PingAction::Lost);
    }

    #[test]
    fn closed_connection_is_lost() {
        let mut p = PingState::new(10);
        assert_eq!(p.send_failed_closed(), PingAction::Lost);
        assert!(p.is_lost());
    }

    #[test]
    fn intervals() {
        assert_eq!(ping_period(0), None);
        assert_eq!(ping_period(5), Some(Duration::from_secs(5)));
        assert_eq!(ping_period(-250), Some(Duration::from_millis(250)));
        assert_eq!(encode_ping_interval(Duration::from_secs(5)), 5);
        assert_eq!(encode_ping_interval(Duration::from_millis(1500)), -1500);
        assert_eq!(encode_ping_interval(Duration::from_millis(100)), -100);
        assert_eq!(encode_ping_interval(Duration::ZERO), -1);
        for d in [Duration::from_secs(1), Duration::from_millis(20)] {
            assert_eq!(ping_period(encode_ping_interval(d)), Some(d));
        }
    }
}
