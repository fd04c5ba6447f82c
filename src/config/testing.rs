//! What the unit tests of every layer share: parse a file's text, merge it, check a rejection,
//! make PEM files.

use std::path::{Path, PathBuf};

use super::{Cli, Config, ConfigError, FileConfig, merge};

/// Parses `text` as if read from `/etc/keyward/test.toml`.
pub(super) fn file(text: &str) -> Result<FileConfig, ConfigError> {
    FileConfig::parse(text, Path::new("/etc/keyward/test.toml"))
}

/// Parses `text` and lays it over the defaults, without flags.
pub(super) fn merged(text: &str) -> Result<Config, ConfigError> {
    merge(Some(&file(text)?), &Cli::default())
}

/// Asserts that `text` is rejected, naming the file and `key`, and returns the message.
pub(super) fn rejected(text: &str, key: &str) -> String {
    let err = merged(text).expect_err("configuration should be rejected");
    let shown = err.to_string();
    assert_eq!(err.key(), Some(key), "{shown}");
    assert_eq!(
        err.file(),
        Some(Path::new("/etc/keyward/test.toml")),
        "{shown}"
    );
    assert!(shown.contains("/etc/keyward/test.toml"), "{shown}");
    assert!(shown.contains(key), "{shown}");
    shown
}

/// A self-signed certificate and its key as PEM files, kept alive by the directory; the
/// certificate also serves as a CA file.
pub(super) fn pem_files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    (dir, path(cert), path(key))
}
