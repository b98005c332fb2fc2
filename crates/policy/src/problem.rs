//! One thing wrong with a pinset: what a load collects, every one of
//! them, before it fails.

use std::fmt;

/// One thing wrong with a pinset, located as precisely as the parser allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub host: Option<String>,
    pub field: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Problem {
    pub(super) fn new(
        host: Option<&str>,
        field: Option<&str>,
        line: Option<usize>,
        message: String,
    ) -> Self {
        Self {
            host: host.map(str::to_string),
            field: field.map(str::to_string),
            line,
            column: None,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(host) = &self.host {
            write!(f, "host {host:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}
