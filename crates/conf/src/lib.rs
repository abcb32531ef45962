//! Parser for the nats-server configuration file format.
//!
//! The format is a relaxed JSON/HOCON: the file is a map, optionally wrapped in `{ }`.
//!
//! ```text
//! # comment            // comment too
//! listen: 127.0.0.1:4222          # `:`, `=` or just blanks separate key and value
//! max_payload = 8MB               # integers take k/kb/ki/kib … e/eb/ei/eib suffixes
//! ping_interval "2m"              # durations are strings (see parse_duration)
//! debug: on                       # true/false/yes/no/on/off, any case
//! cluster {                       # a nested map needs no separator
//!   routes = [
//!     nats-route://user:pw@10.0.0.2:6222
//!     nats-route://user:pw@10.0.0.3:6222, "quoted"
//!   ]
//! }
//! PASS: $NATS_PASS; user: 'raw $text'   # `;` or `,` may also end entries
//! include ./accounts.conf         # entries of another file, relative to this one
//! ```
//!
//! Values: `"double"` strings with `\t \n \r \" \\ \xHH` escapes, `'single'` raw strings,
//! unquoted strings up to a blank, newline, `;`, `,`, `]` or `}` (so a `#` glued to a value
//! is part of it), integers, floats (`1.5`), Zulu datetimes (`2016-05-04T18:53:41Z`),
//! arrays, maps, and `( … )` raw blocks ended by a `)` alone at the start of a line.
//! Unquoted tokens that start like numbers but are not exactly numbers or datetimes are
//! strings (`10s`, `3secret`, `127.0.0.1`); a lone `m` suffix (`2m`) is a string too.
//!
//! `$NAME` (unquoted) takes the value of a key set earlier in an enclosing map, innermost
//! first, or else of environment variable `NAME`, whose text is parsed as a value.
//! Unquoted values starting with `$2a$`/`$2b$`/`$2y$` are bcrypt hashes, not variables.
//! Keys are kept as written; setting a key again replaces it. [`Map::get_ci`] looks keys
//! up ignoring case, as nats-server does for option names.

mod duration;
mod error;
mod lex;
mod parse;
mod value;

use std::path::{Path, PathBuf};

pub use duration::parse_duration;
pub use error::ConfError;
pub use lex::parse_size;
pub use parse::EnvLookup;
pub use value::{Entry, Map, Spanned, Value};

/// Parses configuration text; `include` paths are relative to the current directory and
/// `$VARS` fall back to the process environment.
pub fn parse_str(text: &str) -> Result<Map, ConfError> {
    parse_str_with_env(text, &process_env)
}

/// Like [`parse_str`], with environment variables looked up through `env`.
pub fn parse_str_with_env(text: &str, env: &EnvLookup<'_>) -> Result<Map, ConfError> {
    parse::parse_document(text, None, PathBuf::new(), env)
}

/// Reads and parses a configuration file; `include` paths are relative to its directory
/// and `$VARS` fall back to the process environment.
pub fn parse_file(path: &Path) -> Result<Map, ConfError> {
    parse_file_with_env(path, &process_env)
}

/// Like [`parse_file`], with environment variables looked up through `env`.
pub fn parse_file_with_env(path: &Path, env: &EnvLookup<'_>) -> Result<Map, ConfError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfError::new(Some(path), 0, 0, format!("error opening config file: {e}")))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse::parse_document(&text, Some(path), base_dir, env)
}

/// The process environment; variables that are unset or not UTF-8 count as missing.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
