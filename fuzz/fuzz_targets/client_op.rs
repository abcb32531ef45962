//! The client-op parser on arbitrary bytes: never panics, never consumes past the input,
//! and parsing the stream in two pieces gives the same ops as in one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnats_protocol::{Limits, Parsed, parse_client_op};

fn ops(chunks: &[&[u8]], limits: &Limits) -> (Vec<String>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_client_op(&buf, limits) {
                Ok(Parsed::Op(op, n)) => {
                    assert!(n > 0 && n <= buf.len());
                    out.push(format!("{op:?}"));
                    buf.drain(..n);
                }
                Ok(Parsed::Incomplete { .. }) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_control_line: 256,
        max_payload: 1024,
    };
    let whole = ops(&[data], &limits);
    let split = data.len() / 2;
    let halves = ops(&[&data[..split], &data[split..]], &limits);
    // An error can surface earlier with less input (a prefix check), so compare clean runs.
    if !whole.1 && !halves.1 {
        assert_eq!(whole.0, halves.0);
    }
});
