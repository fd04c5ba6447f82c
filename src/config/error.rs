//! Errors that say where the bad value came from: the file with line and column (and the line
//! itself, unless it holds a secret), the flag and its environment variable, or the default.

use std::fmt;
use std::path::{Path, PathBuf};

use super::keys::{SERVER_PASSWORD, UPSTREAM_PASSWORD};
use super::quote::quote;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum Origin {
    #[default]
    Default,
    File(PathBuf),
    Flag {
        flag: &'static str,
        env: &'static str,
    },
}

impl Origin {
    pub(super) fn flag(flag: &'static str, env: &'static str) -> Origin {
        Origin::Flag { flag, env }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Flag { flag, env } => write!(f, "{flag} (or {env})"),
        }
    }
}

/// A configuration that cannot be used. Its `Display` names where the bad value came from (the
/// file, with line and column when known, or the flag), the key, and what is wrong, in the form
/// `proxy.toml:12:12: guard.max_keys: must be at least 1, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(Box<ErrorDetail>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorDetail {
    origin: Origin,
    key: Option<String>,
    message: String,
    position: Option<Position>,
}

/// Where in the file a parse error is, with the offending line for context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    line: usize,
    column: usize,
    /// The offending line with a caret under the error; `None` for lines holding a secret.
    excerpt: Option<String>,
}

impl ConfigError {
    pub(super) fn new(
        origin: Origin,
        key: Option<String>,
        message: String,
        position: Option<Position>,
    ) -> ConfigError {
        ConfigError(Box::new(ErrorDetail {
            origin,
            key,
            message,
            position,
        }))
    }

    /// The dotted key at fault, such as `guard.max_keys`, when there is one.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// The configuration file at fault, when the bad value came from a file.
    pub fn file(&self) -> Option<&Path> {
        match &self.0.origin {
            Origin::File(path) => Some(path),
            _ => None,
        }
    }

    pub(super) fn from_toml(err: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
        let span = err.span();
        let key = span.as_ref().and_then(|span| key_at(text, span.start));
        let secret = key.as_deref().is_some_and(is_secret_key);
        let mut message = err.message().trim_end().to_string();
        if secret {
            // serde's messages quote the value ("invalid type: integer `1234`").
            message = "invalid value (not shown because it is a secret); expected a string".into();
        }
        let position = span.map(|span| position(text, span, secret));
        ConfigError::new(Origin::File(path.to_path_buf()), key, message, position)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ErrorDetail {
            origin,
            key,
            message,
            position,
        } = &*self.0;
        match (origin, position) {
            (Origin::File(path), Some(at)) => {
                write!(f, "{}:{}:{}", path.display(), at.line, at.column)?
            }
            (origin, _) => write!(f, "{origin}")?,
        }
        if let Some(key) = key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {message}")?;
        if let Some(excerpt) = position.as_ref().and_then(|at| at.excerpt.as_ref()) {
            write!(f, "\n{excerpt}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn is_secret_key(key: &str) -> bool {
    key == UPSTREAM_PASSWORD || key == SERVER_PASSWORD || key.ends_with("password_sha256")
}

/// The dotted path of the key whose name or value covers byte `offset` of the TOML `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (document, _errors) = toml::de::DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    find_key(document.get_ref(), offset, &mut path).then(|| path.join("."))
}

fn find_key(table: &toml::de::DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        path.push(bare_or_quoted(key.get_ref()));
        if key.span().contains(&offset) {
            return true;
        }
        if let toml::de::DeValue::Table(inner) = value.get_ref()
            && find_key(inner, offset, path)
        {
            return true;
        }
        if value.span().contains(&offset) {
            return true;
        }
        path.pop();
    }
    false
}

fn bare_or_quoted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { key.to_string() } else { quote(key) }
}

/// Line and column (1-based, in characters) of `span` in `text`, and the line with a caret.
fn position(text: &str, span: std::ops::Range<usize>, secret: bool) -> Position {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let content = text[line_start..line_end].trim_end_matches('\r');
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    // A syntax error in the password line would otherwise print the password.
    let secret = secret || content.to_ascii_lowercase().contains("password");
    let excerpt = (!secret).then(|| {
        let end = span.end.clamp(start, line_end);
        let width = text.get(start..end).map_or(1, |s| s.chars().count()).max(1);
        let indent: String = text[line_start..start]
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let gutter = " ".repeat(line.to_string().len());
        format!(
            "{gutter} |\n{line} | {content}\n{gutter} | {indent}{}",
            "^".repeat(width)
        )
    });
    Position {
        line,
        column,
        excerpt,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{file, rejected};

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let shown = rejected("[guard]\nmax_keys = 5\nmax_kyes = 6\n", "guard.max_kyes");
        assert!(
            shown.starts_with("/etc/keyward/test.toml:3:1: guard.max_kyes: "),
            "{shown}"
        );
        assert!(shown.contains("unknown field `max_kyes`"), "{shown}");
        assert!(shown.contains("3 | max_kyes = 6"), "{shown}");
    }

    #[test]
    fn unknown_section_is_rejected_by_name() {
        let shown = rejected("[gaurd]\nmax_keys = 5\n", "gaurd");
        assert!(shown.contains("unknown field `gaurd`"), "{shown}");
        rejected("path = \"/tmp\"\n", "path");
    }

    #[test]
    fn unknown_key_in_dotted_or_inline_form_is_named() {
        rejected("guard.colour = 1\n", "guard.colour");
        rejected(
            "server = { listen = \"a:1\", bogus = true }\n",
            "server.bogus",
        );
    }

    #[test]
    fn wrong_type_is_rejected_with_line_and_key() {
        let shown = rejected("[guard]\n\nmax_keys = \"lots\"\n", "guard.max_keys");
        assert!(
            shown.starts_with("/etc/keyward/test.toml:3:12: guard.max_keys: "),
            "{shown}"
        );
        assert!(shown.contains("invalid type"), "{shown}");
        rejected("[upstream]\nnodes = \"a:1\"\n", "upstream.nodes");
        rejected("[upstream]\nnodes = [\"a:1\", 2]\n", "upstream.nodes");
        rejected("[server]\nmax_clients = -1\n", "server.max_clients");
        rejected(
            "[server]\nshutdown_timeout_ms = 1.5\n",
            "server.shutdown_timeout_ms",
        );
        rejected("guard = 3\n", "guard");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let err = file("[guard]\nmax_keys = = 5\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("/etc/keyward/test.toml:2:"), "{shown}");
        let err = file("[guard]\nmax_keys = 1\nmax_keys = 2\n").unwrap_err();
        assert!(
            err.to_string().contains("/etc/keyward/test.toml:3:"),
            "{err}"
        );
    }

    #[test]
    fn password_errors_do_not_show_the_password() {
        let err = file("[upstream]\npassword = 123456789\n").unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.key(), Some("upstream.password"));
        assert!(!shown.contains("123456789"), "{shown}");
        let shown = file("[upstream]\npassword = \"hunter2\n")
            .unwrap_err()
            .to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
