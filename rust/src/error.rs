//! One error type for the engine. `Data` = bad input on disk (exit 1 in the CLI), `Usage` = a bad
//! argument (exit 2), `Io` = the operating system refused (disk full, permission, ...).
//! Every message names the file or argument it is about and fits on one line.

use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Data,
    Usage,
    Io,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn data(msg: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Data,
            msg: msg.into(),
        }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Usage,
            msg: msg.into(),
        }
    }
    pub fn io(path: &Path, what: &str, e: std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            msg: format!("{}: {what}: {e}", path.display()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}
