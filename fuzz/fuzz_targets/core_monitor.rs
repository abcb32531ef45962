//! The core server's monitoring requests: `path?query` answered as the HTTP handler answers
//! it (query-string decoding as Go's `url.ParseQuery`, every endpoint's parameters and their
//! errors), from a server with no connections.
//!
//! Input: `path?query` (lossy UTF-8, split at the first `?`).
//!
//! Checks: no panic; the status is 200, 400 or 404, 404 only for unknown paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnats_fuzz::CappedAlloc;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

const PATHS: [&str; 9] = [
    "/",
    "/status",
    "/varz",
    "/connz",
    "/routez",
    "/subsz",
    "/subscriptionsz",
    "/healthz",
    "/metrics",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    let (status, _len) = rnats_server::monitor::fuzz_request(path, query);
    let known = PATHS.contains(&path);
    match status {
        404 => assert!(!known, "{path} is served"),
        200 | 400 => assert!(known, "{path} answered {status}"),
        // healthz answers its errors with the reference's status codes.
        _ => assert!(path == "/healthz", "{path} answered {status}"),
    }
});
