//! The route-op parser on arbitrary bytes: never panics, never consumes past the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnats_protocol::{Limits, Parsed, parse_route_op};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_control_line: 256,
        max_payload: 1024,
    };
    let mut pos = 0;
    while let Ok(Parsed::Op(_, n)) = parse_route_op(&data[pos..], &limits) {
        assert!(n > 0 && pos + n <= data.len());
        pos += n;
    }
});
