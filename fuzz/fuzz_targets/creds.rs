//! The `.creds` file parser and the nkey signing of a connect, as `ConnectOptions` uses them
//! (`credentials`, `nkey`).
//!
//! Checks: no panic; accepted credentials hold a JWT with three parts and a user seed; a
//! successful signature comes with the JWT (creds) or the public key (nkey).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnats_client::fuzzing as f;
use rnats_fuzz::CappedAlloc;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok((jwt, seed)) = f::parse_creds(&text) {
        assert_eq!(jwt.matches('.').count(), 2);
        assert!(seed.starts_with("SU"));
    }
    if let Ok((nkey, jwt, sig)) = f::sign_creds(&text, Some("nonce")) {
        assert!(nkey.is_none() && jwt.is_some() && sig.is_some());
    }
    let seed = text.lines().next().unwrap_or("");
    if let Ok((nkey, jwt, sig)) = f::sign_nkey(seed, Some("nonce")) {
        assert!(nkey.is_some() && jwt.is_none() && sig.is_some());
    }
});
