//! Prints the files a `store_recovery` / `store_recovery_crc` input describes (path, size,
//! hex), to turn a crash into a regression test: `cargo run --example show_store_input --
//! [--fix-crcs] <input file>`.

use rnats_fuzz::files::StoreFiles;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let fix = args.first().is_some_and(|a| a == "--fix-crcs");
    if fix {
        args.remove(0);
    }
    let path = args
        .first()
        .expect("usage: show_store_input [--fix-crcs] <input>");
    let data = std::fs::read(path).expect("read input");
    let mut files = StoreFiles::parse(&data);
    if fix {
        files.fix_crcs();
    }
    println!("flags {:#04x}", files.flags);
    for f in &files.files {
        let p = f.kind.path(std::path::Path::new("<dir>"));
        println!("{} ({} bytes)", p.display(), f.contents.len());
        for chunk in f.contents.chunks(16) {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            println!("  {}", hex.join(" "));
        }
    }
}
