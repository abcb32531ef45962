//! The error type shared by the parser and the typed configuration layer.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error with its location.
///
/// Displayed like nats-server does: `<file>:<line>:<col>: <message>`. Parts that are unknown
/// are left out: text parsed with [`crate::parse_str`] has no file (`<line>:<col>: <message>`),
/// and a file that could not be read has no position (`<file>: <message>`, line and column 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfError {
    /// The file the error is in; `None` for text given directly.
    pub file: Option<PathBuf>,
    /// 1-based line; 0 when the error has no position.
    pub line: u32,
    /// 1-based column, counted in characters; 0 when the error has no position.
    pub col: u32,
    /// What went wrong, without the location.
    pub message: String,
}

impl ConfError {
    /// An error at `line`:`col` of `file`.
    pub fn new(file: Option<&Path>, line: u32, col: u32, message: impl Into<String>) -> Self {
        ConfError {
            file: file.map(Path::to_path_buf),
            line,
            col,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if self.line == 0 {
                f.write_str(" ")?;
            }
        }
        if self.line != 0 {
            write!(f, "{}:{}: ", self.line, self.col)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let e = ConfError::new(Some(Path::new("a.conf")), 3, 7, "boom");
        assert_eq!(e.to_string(), "a.conf:3:7: boom");
        let e = ConfError::new(None, 3, 7, "boom");
        assert_eq!(e.to_string(), "3:7: boom");
        let e = ConfError::new(Some(Path::new("a.conf")), 0, 0, "unreadable");
        assert_eq!(e.to_string(), "a.conf: unreadable");
        let e = ConfError::new(None, 0, 0, "plain");
        assert_eq!(e.to_string(), "plain");
    }
}
