//! Config errors: each names the file, the path in the document and what is wrong.

use std::fmt;

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given on the command line.
    pub file: String,
    /// Where in the document, like `routes[1].cold` or `backends.l1.servers[0].weight`;
    /// empty for problems with the file as a whole (unreadable, not YAML, not a map).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE: PATH: MESSAGE`, or `FILE: MESSAGE` when the path is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, roughly in document order.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A list holding one error.
    pub fn single(file: &str, path: &str, message: String) -> ConfigErrors {
        ConfigErrors {
            errors: vec![ConfigError {
                file: file.to_string(),
                path: path.to_string(),
                message,
            }],
        }
    }

    /// The number of problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when there is no problem.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line, `FILE: PATH: MESSAGE`, without a trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
