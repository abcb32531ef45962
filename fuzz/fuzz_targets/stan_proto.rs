//! Every NATS Streaming message the server decodes from the network, through the functions
//! the engine uses: `prost` decoding from a shared `Bytes` payload (PubMsg, SubscriptionRequest,
//! UnsubscribeRequest, ConnectRequest, CloseRequest, Ping, CtrlMsg) and the allocation-free
//! readers `peek_ack` (acks) and `peek_msg_proto` (stored messages).
//!
//! Checks: no panic; a decoded message re-encodes to one that decodes equal; when both the
//! peek reader and full decoding accept the bytes, they agree.
#![no_main]

use std::fmt::Debug;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rnats_fuzz::CappedAlloc;
use rnats_streaming::proto::{
    Ack, CloseRequest, ConnectRequest, CtrlMsg, MsgProto, Ping, PubMsg, SubscriptionRequest,
    UnsubscribeRequest, peek_ack, peek_msg_proto,
};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fn roundtrip<M: Message + Default + PartialEq + Debug>(b: &Bytes) -> Option<M> {
    let m = M::decode(b.clone()).ok()?;
    let again = M::decode(Bytes::from(m.encode_to_vec())).expect("a re-encoded message decodes");
    assert_eq!(m, again, "re-encoding changed the message");
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    roundtrip::<PubMsg>(&b);
    if let Some(sr) = roundtrip::<SubscriptionRequest>(&b) {
        // What the engine does next with the start position: unknown values map to a default.
        let _ = sr.start_position();
    }
    roundtrip::<UnsubscribeRequest>(&b);
    roundtrip::<ConnectRequest>(&b);
    roundtrip::<CloseRequest>(&b);
    roundtrip::<Ping>(&b);
    roundtrip::<CtrlMsg>(&b);

    let ack = roundtrip::<Ack>(&b);
    if let (Some((subject, seq)), Some(ack)) = (peek_ack(data), ack) {
        assert_eq!((subject, seq), (ack.subject.as_str(), ack.sequence));
    }
    let msg = roundtrip::<MsgProto>(&b);
    if let (Some((seq, data_len)), Some(m)) = (peek_msg_proto(data), msg) {
        assert_eq!((seq, data_len), (m.sequence, m.data.len()));
    }
});
