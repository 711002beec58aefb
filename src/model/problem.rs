//! Diagnostics about a file an operator wrote: where (path, line, column) and what.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem at one place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A line of a file an operator wrote, shown as `path:line` (where a digest is written, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// Several problems, one per line (how a whole file's problems are shown).
pub(crate) struct Problems<'a>(pub &'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The content of a file that must be UTF-8 text, or a problem at its first byte that is not.
pub(crate) fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, Problem> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // Everything before `at` is valid UTF-8, by definition of `valid_up_to`.
        let valid = String::from_utf8_lossy(&bytes[..at]);
        let (line, column) = line_col(&valid, at);
        Problem {
            path: path.to_owned(),
            line,
            column,
            message: format!(
                "byte 0x{:02x} is not UTF-8 text; save the file as UTF-8",
                bytes[at]
            ),
        }
    })
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let path = Path::new("/etc/stowage/config.toml");
        let p = utf8_text(path, b"[pull]\nschedule = \"caf\xe9\"\n".to_vec()).unwrap_err();
        assert_eq!((p.line, p.column), (2, 16));
        assert_eq!(
            p.to_string(),
            "/etc/stowage/config.toml:2:16: byte 0xe9 is not UTF-8 text; save the file as UTF-8"
        );
        assert_eq!(utf8_text(path, "é\n".into()).unwrap(), "é\n");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("abc", 99), (1, 4));
    }
}
