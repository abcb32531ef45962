//! `store_recovery` with every record and index-entry CRC recomputed before the files are
//! written, so that mutations reach the length, sequence, offset and protobuf checks behind
//! the checksums instead of stopping at them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnats_fuzz::CappedAlloc;
use rnats_fuzz::files::StoreFiles;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let mut files = StoreFiles::parse(data);
    files.fix_crcs();
    rnats_fuzz::store::run(&files);
});
