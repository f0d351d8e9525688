//! Positions and problems: what is wrong with a config file and where. Every problem
//! carries its file, line, column and, when it can be named, its key; [`Problems`]
//! collects them during parsing and validation so that `--check` shows them all.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

/// Everything wrong with one config file: all validation problems are collected so
/// that `--check` shows them in one go.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

/// One problem at one place of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The key the problem is about, when it can be named.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// serde names the Rust type it expected ("expected struct FileSticky"); an
/// operator wrote a TOML value, so name the TOML kind instead.
pub(super) fn readable(message: &str) -> String {
    match message.find("expected struct File") {
        Some(at) => format!("{}expected a table, e.g. {{ key = value }}", &message[..at]),
        None => message.to_owned(),
    }
}

/// Collects problems with their position in the text.
pub(super) struct Problems<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a str,
    pub(super) list: Vec<Problem>,
}

impl Problems<'_> {
    pub(super) fn at(
        &mut self,
        span: Range<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_column(self.text, span.start);
        self.list.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            key,
            message: message.into(),
        });
    }

    pub(super) fn spanned<T>(&mut self, item: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.at(item.span(), Some(key.to_owned()), message);
    }
}

/// The field named by serde's "missing field `x`" message.
pub(super) fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The key an error span refers to: the span itself when it covers a key, or the key
/// before `=` when it covers a value. Best effort: `None` when it cannot tell.
pub(super) fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let covered = text.get(span.clone())?.trim();
    if !covered.is_empty() && covered.chars().all(is_key_char) {
        let after = text.get(span.end..)?.trim_start();
        if after.starts_with('=') {
            return Some(covered.to_owned());
        }
    }
    let mut before = text.get(..span.start)?.trim_end();
    if before.ends_with('[') || before.ends_with(',') {
        // An item of an array written on one line: the key is the array's.
        let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
        let line_start = before.len() - line.len();
        before = &before[..line_start + line.find('=')? + 1];
    }
    let before = before.strip_suffix('=')?.trim_end();
    let key = &before[before.trim_end_matches(is_key_char).len()..];
    (!key.is_empty()).then(|| key.to_owned())
}
