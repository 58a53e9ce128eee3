//! Bad input, as the library reports it to every front end: one sentence
//! that names the bad value and what is allowed. The command line prints it
//! as one line with exit code 2; nothing has been changed when it is
//! returned.
use std::fmt;

/// Bad user input: reported as one line, exit code 2, and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

macro_rules! usage {
    ($($arg:tt)*) => { $crate::input::UsageError(format!($($arg)*)) };
}
pub(crate) use usage;
