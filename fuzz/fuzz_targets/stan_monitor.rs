//! The streaming server's monitoring request parsing: the path and query string of a request
//! (percent-decoding, the integer and boolean parameters) routed as the HTTP handler does.
//!
//! Input: `path?query` (lossy UTF-8, split at the first `?`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnats_fuzz::CappedAlloc;
use rnats_streaming_server::fuzzing as f;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    let _ = f::monitor_route(path, query);
});
