use super::*;
use bytes::Bytes;
use prost::Message;

#[test]
fn peek_ack_reads_what_prost_writes() {
    for (subject, sequence) in [("foo", 1u64), ("", 0), ("ch.a", u64::MAX)] {
        let b = Ack {
            subject: subject.into(),
            sequence,
        }
        .encode_to_vec();
        assert_eq!(peek_ack(&b), Some((subject, sequence)));
    }
    assert_eq!(peek_ack(&[0x0a, 0x05, b'a']), None, "length past the end");
    assert_eq!(peek_ack(&[0x0a, 0x01, 0xff]), None, "not UTF-8");
    assert_eq!(peek_ack(&[0x00]), None, "field 0");
}

fn enc<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

// Expected bytes below are derived by hand from the .proto field numbers:
// key = (field << 3) | wire type, wire types 0 = varint, 2 = length-delimited.

#[test]
fn empty_messages_encode_to_nothing() {
    assert!(enc(&PubAck::default()).is_empty());
    assert!(enc(&CloseResponse::default()).is_empty());
    assert!(enc(&SubscriptionResponse::default()).is_empty());
    assert!(enc(&PingResponse::default()).is_empty());
    assert!(enc(&SubscriptionRequest::default()).is_empty());
    assert_eq!(
        PingResponse::decode(&b""[..]).unwrap(),
        PingResponse::default()
    );
}

#[test]
fn pub_msg_bytes() {
    let m = PubMsg {
        client_id: "me".into(),
        guid: "g1".into(),
        subject: "foo".into(),
        reply: String::new(),
        data: Bytes::from_static(b"hi"),
        conn_id: vec![0xAB],
        sha256: vec![],
    };
    let want: &[u8] = &[
        0x0A, 2, b'm', b'e', // 1: clientID
        0x12, 2, b'g', b'1', // 2: guid
        0x1A, 3, b'f', b'o', b'o', // 3: subject
        0x2A, 2, b'h', b'i', // 5: data
        0x32, 1, 0xAB, // 6: connID
    ];
    assert_eq!(enc(&m), want);
    assert_eq!(PubMsg::decode(want).unwrap(), m);
    // sha256 is field 10: key 0x52.
    let m2 = PubMsg {
        sha256: vec![1],
        ..Default::default()
    };
    assert_eq!(enc(&m2), [0x52, 1, 1]);
}

#[test]
fn pub_ack_bytes() {
    let a = PubAck {
        guid: "abc".into(),
        error: "e".into(),
    };
    assert_eq!(enc(&a), [0x0A, 3, b'a', b'b', b'c', 0x12, 1, b'e']);
}

#[test]
fn msg_proto_bytes() {
    let m = MsgProto {
        sequence: 300,
        subject: "ch".into(),
        reply: "r".into(),
        data: Bytes::from_static(b"x"),
        timestamp: 1,
        redelivered: true,
        redelivery_count: 2,
        crc32: 5,
    };
    let want: &[u8] = &[
        0x08, 0xAC, 0x02, // 1: sequence = 300 (varint 0b10_0101100)
        0x12, 2, b'c', b'h', // 2: subject
        0x1A, 1, b'r', // 3: reply
        0x22, 1, b'x', // 4: data
        0x28, 1, // 5: timestamp
        0x30, 1, // 6: redelivered
        0x38, 2, // 7: redeliveryCount
        0x50, 5, // 10: CRC32
    ];
    assert_eq!(enc(&m), want);
    assert_eq!(MsgProto::decode(want).unwrap(), m);
}

#[test]
fn ack_and_ping_bytes() {
    let a = Ack {
        subject: "c".into(),
        sequence: 7,
    };
    assert_eq!(enc(&a), [0x0A, 1, b'c', 0x10, 7]);
    let p = Ping {
        conn_id: vec![1, 2],
    };
    assert_eq!(enc(&p), [0x0A, 2, 1, 2]);
    let r = PingResponse { error: "x".into() };
    assert_eq!(enc(&r), [0x0A, 1, b'x']);
}

#[test]
fn connect_bytes() {
    let c = ConnectRequest {
        client_id: "c".into(),
        heartbeat_inbox: "h".into(),
        protocol: 1,
        conn_id: vec![9],
        ping_interval: 5,
        ping_max_out: 88,
    };
    assert_eq!(
        enc(&c),
        [
            0x0A, 1, b'c', 0x12, 1, b'h', 0x18, 1, 0x22, 1, 9, 0x28, 5, 0x30, 88
        ]
    );
    // A negative int32 is sign-extended to a 10-byte varint.
    let neg = ConnectRequest {
        ping_interval: -1,
        ..Default::default()
    };
    assert_eq!(
        enc(&neg),
        [
            0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01
        ]
    );
    assert_eq!(
        ConnectRequest::decode(&enc(&neg)[..])
            .unwrap()
            .ping_interval,
        -1
    );

    let r = ConnectResponse {
        pub_prefix: "p".into(),
        sub_requests: "s".into(),
        unsub_requests: "u".into(),
        close_requests: "c".into(),
        error: String::new(),
        sub_close_requests: "x".into(),
        ping_requests: "i".into(),
        ping_interval: 5,
        ping_max_out: 3,
        protocol: 1,
        public_key: "k".into(),
    };
    let want: &[u8] = &[
        0x0A, 1, b'p', 0x12, 1, b's', 0x1A, 1, b'u', 0x22, 1, b'c', // 1..4
        0x32, 1, b'x', 0x3A, 1, b'i', // 6, 7
        0x40, 5, 0x48, 3, 0x50, 1, // 8, 9, 10
        0xA2, 0x06, 1, b'k', // 100: key 802 = varint A2 06
    ];
    assert_eq!(enc(&r), want);
    assert_eq!(ConnectResponse::decode(want).unwrap(), r);
    let e = ConnectResponse {
        error: "no".into(),
        ..Default::default()
    };
    assert_eq!(enc(&e), [0x2A, 2, b'n', b'o']);
}

#[test]
fn subscription_bytes() {
    let s = SubscriptionRequest {
        client_id: "c".into(),
        subject: "foo".into(),
        q_group: "q".into(),
        inbox: "i".into(),
        max_in_flight: 1024,
        ack_wait_in_secs: 30,
        durable_name: "d".into(),
        start_position: StartPosition::SequenceStart as i32,
        start_sequence: 22,
        start_time_delta: 1_000_000_000,
    };
    let want: &[u8] = &[
        0x0A, 1, b'c', 0x12, 3, b'f', b'o', b'o', 0x1A, 1, b'q', 0x22, 1, b'i', // 1..4
        0x28, 0x80, 0x08, // 5: 1024
        0x30, 30, // 6
        0x3A, 1, b'd', // 7
        0x50, 3, // 10: startPosition
        0x58, 22, // 11
        0x60, 0x80, 0x94, 0xEB, 0xDC, 0x03, // 12: 1e9
    ];
    assert_eq!(enc(&s), want);
    let d = SubscriptionRequest::decode(want).unwrap();
    assert_eq!(d, s);
    assert_eq!(d.start_position(), StartPosition::SequenceStart);

    let r = SubscriptionResponse {
        ack_inbox: "a".into(),
        error: "e".into(),
    };
    assert_eq!(enc(&r), [0x12, 1, b'a', 0x1A, 1, b'e']);
    let u = UnsubscribeRequest {
        client_id: "c".into(),
        subject: "s".into(),
        inbox: "i".into(),
        durable_name: "d".into(),
    };
    assert_eq!(
        enc(&u),
        [0x0A, 1, b'c', 0x12, 1, b's', 0x1A, 1, b'i', 0x22, 1, b'd']
    );
    assert_eq!(
        enc(&CloseRequest {
            client_id: "c".into()
        }),
        [0x0A, 1, b'c']
    );
    assert_eq!(enc(&CloseResponse { error: "e".into() }), [0x0A, 1, b'e']);
}

#[test]
fn unknown_start_position_is_kept_and_checkable() {
    let bytes = [0x50, 9];
    let d = SubscriptionRequest::decode(&bytes[..]).unwrap();
    assert_eq!(d.start_position, 9);
    assert!(StartPosition::try_from(d.start_position).is_err());
}

#[test]
fn unknown_fields_are_skipped() {
    // Ping with an extra field 15 (varint) and field 16 (bytes) after connID.
    let bytes = [0x0A, 1, 7, 0x78, 1, 0x82, 0x01, 2, b'z', b'z'];
    assert_eq!(Ping::decode(&bytes[..]).unwrap(), Ping { conn_id: vec![7] });
}

#[test]
fn spb_bytes() {
    let s = SubState {
        id: 1,
        client_id: "c".into(),
        q_group: "q".into(),
        inbox: "i".into(),
        ack_inbox: "a".into(),
        max_in_flight: 2,
        ack_wait_in_secs: 3,
        durable_name: "d".into(),
        last_sent: 4,
        is_durable: true,
        is_closed: true,
    };
    let want: &[u8] = &[
        0x08, 1, 0x12, 1, b'c', 0x1A, 1, b'q', 0x22, 1, b'i', 0x2A, 1, b'a', 0x30, 2, 0x38, 3,
        0x42, 1, b'd', 0x48, 4, 0x50, 1, 0x58, 1,
    ];
    assert_eq!(enc(&s), want);
    assert_eq!(enc(&SubStateDelete { id: 2 }), [0x08, 2]);
    assert_eq!(enc(&SubStateUpdate { id: 2, seqno: 3 }), [0x08, 2, 0x10, 3]);
    let info = ServerInfo {
        cluster_id: "c".into(),
        node_id: "n".into(),
        acks_subs: "a".into(),
        ..Default::default()
    };
    assert_eq!(enc(&info), [0x0A, 1, b'c', 0x42, 1, b'a', 0x4A, 1, b'n']);
    let ci = ClientInfo {
        id: "i".into(),
        hb_inbox: "h".into(),
        conn_id: vec![1],
        protocol: 1,
        ping_interval: 5,
        ping_max_out: 6,
    };
    assert_eq!(
        enc(&ci),
        [
            0x0A, 1, b'i', 0x12, 1, b'h', 0x1A, 1, 1, 0x20, 1, 0x28, 5, 0x30, 6
        ]
    );
    assert_eq!(enc(&ClientDelete { id: "i".into() }), [0x0A, 1, b'i']);
    let ctrl = CtrlMsg {
        msg_type: ctrl_msg::Type::FtHeartbeat as i32,
        server_id: "s".into(),
        data: vec![1],
        ref_id: String::new(),
    };
    assert_eq!(enc(&ctrl), [0x08, 3, 0x12, 1, b's', 0x1A, 1, 1]);
    // Repeated uint64 are packed: field 3 as one length-delimited run.
    let sa = SubSentAndAck {
        channel: String::new(),
        ack_inbox: String::new(),
        sent: vec![1, 300],
        ack: vec![2],
    };
    assert_eq!(enc(&sa), [0x1A, 3, 1, 0xAC, 0x02, 0x22, 1, 2]);
    let op = RaftOperation {
        op_type: raft_operation::Type::Connect as i32,
        client_disconnect: Some(CloseRequest {
            client_id: "c".into(),
        }),
        channel_id: 1,
        ..Default::default()
    };
    assert_eq!(enc(&op), [0x08, 6, 0x42, 3, 0x0A, 1, b'c', 0x50, 1]);
    let snap = ChannelSnapshot {
        channel: "c".into(),
        first: 1,
        last: 2,
        ..Default::default()
    };
    assert_eq!(enc(&snap), [0x0A, 1, b'c', 0x10, 1, 0x18, 2]);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(b: &[u8]) {
        let _ = PubMsg::decode(b);
        let _ = PubAck::decode(b);
        let _ = MsgProto::decode(b);
        let _ = Ack::decode(b);
        let _ = ConnectRequest::decode(b);
        let _ = ConnectResponse::decode(b);
        let _ = Ping::decode(b);
        let _ = PingResponse::decode(b);
        let _ = SubscriptionRequest::decode(b);
        let _ = SubscriptionResponse::decode(b);
        let _ = UnsubscribeRequest::decode(b);
        let _ = CloseRequest::decode(b);
        let _ = CloseResponse::decode(b);
        let _ = SubState::decode(b);
        let _ = SubStateDelete::decode(b);
        let _ = SubStateUpdate::decode(b);
        let _ = ServerInfo::decode(b);
        let _ = ClientInfo::decode(b);
        let _ = ClientDelete::decode(b);
        let _ = CtrlMsg::decode(b);
        let _ = RaftJoinRequest::decode(b);
        let _ = RaftJoinResponse::decode(b);
        let _ = RaftOperation::decode(b);
        let _ = Batch::decode(b);
        let _ = AddSubscription::decode(b);
        let _ = SubSentAndAck::decode(b);
        let _ = AddClient::decode(b);
        let _ = RaftSnapshot::decode(b);
        let _ = ChannelSnapshot::decode(b);
        let _ = SubscriptionSnapshot::decode(b);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            decode_all(&b);
        }

        #[test]
        fn msg_proto_roundtrip(
            sequence in any::<u64>(),
            subject in ".{0,20}",
            reply in ".{0,8}",
            data in proptest::collection::vec(any::<u8>(), 0..64),
            timestamp in any::<i64>(),
            redelivered in any::<bool>(),
            redelivery_count in any::<u32>(),
        ) {
            let m = MsgProto {
                sequence, subject, reply, data: Bytes::from(data), timestamp,
                redelivered, redelivery_count, crc32: 0,
            };
            let b = m.encode_to_vec();
            prop_assert_eq!(b.len(), m.encoded_len());
            prop_assert_eq!(peek_msg_proto(&b), Some((m.sequence, m.data.len())));
            prop_assert_eq!(MsgProto::decode(&b[..]).unwrap(), m);
        }

        #[test]
        fn peek_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let (Some((seq, len)), Ok(m)) = (peek_msg_proto(&b), MsgProto::decode(&b[..])) {
                prop_assert_eq!((seq, len), (m.sequence, m.data.len()));
            }
        }

        #[test]
        fn sub_request_roundtrip(
            client_id in "[a-z]{0,8}",
            max_in_flight in any::<i32>(),
            ack_wait in any::<i32>(),
            start_position in 0i32..5,
            start_sequence in any::<u64>(),
            start_time_delta in any::<i64>(),
        ) {
            let m = SubscriptionRequest {
                client_id, subject: "s".into(), q_group: String::new(), inbox: "i".into(),
                max_in_flight, ack_wait_in_secs: ack_wait, durable_name: String::new(),
                start_position, start_sequence, start_time_delta,
            };
            prop_assert_eq!(SubscriptionRequest::decode(&m.encode_to_vec()[..]).unwrap(), m);
        }
    }
}
