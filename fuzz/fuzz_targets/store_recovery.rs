//! The file store's recovery on arbitrary files (segments, indexes, subs.dat, clients.dat,
//! server.dat; see `rnats_fuzz::files` for the input layout): a corruption error naming the
//! file and offset, or a recovered store that reads back, reopens to the same state and
//! takes appends. Never a panic, never an allocation sized by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnats_fuzz::CappedAlloc;
use rnats_fuzz::files::StoreFiles;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fuzz_target!(|data: &[u8]| {
    rnats_fuzz::store::run(&StoreFiles::parse(data));
});
