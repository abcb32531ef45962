//! The control messages streaming servers exchange, through the functions the server uses:
//! fault-tolerance heartbeats (`parse_heartbeat`, `decode_go_time`) and partitioning lists
//! (`decode_channels`, `answer`).
//!
//! Checks: no panic; a decoded activation time encodes back to the same instant; a decoded
//! channel list encodes back into a request that decodes to the same list; an answer is a
//! well-formed control message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use rnats_fuzz::CappedAlloc;
use rnats_streaming::proto::CtrlMsg;
use rnats_streaming_server::fuzzing as f;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, Some(t))) = f::parse_heartbeat(data, "own-server-id") {
        assert_eq!(f::decode_go_time(&f::encode_go_time(t)), Some(t));
    }
    if let Some(t) = f::decode_go_time(data) {
        assert_eq!(f::decode_go_time(&f::encode_go_time(t)), Some(t));
    }
    if let Some(list) = f::decode_channels(data) {
        if let Some(reqs) = f::encode_lists("B", &list, 1 << 20) {
            let mut back = Vec::new();
            for r in &reqs {
                let m = CtrlMsg::decode(&r[..]).expect("an encoded list request decodes");
                back.extend(f::decode_channels(&m.data).expect("an encoded list decodes"));
            }
            assert_eq!(back, list);
        }
    }
    let ours = [
        "orders.>".to_string(),
        "audit".to_string(),
        "a.*.c".to_string(),
    ];
    if let Some(a) = f::answer(&ours, "A", data) {
        let m = CtrlMsg::decode(a).expect("an answer decodes");
        assert_eq!(m.server_id, "A");
    }
});
