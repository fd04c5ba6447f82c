//! Showing bytes a client sent (keys, user names, options) inside a message: an error line sent
//! back to the client or a log line.
//!
//! It lives apart from the modules that use it (the guard, client authentication) so that none
//! of them has to import another just to print a key.

/// Longest key shown in an error message; a longer key is cut and marked with `...`.
const KEY_DISPLAY_LIMIT: usize = 128;

/// Renders a key for an error line: printable ASCII as is, everything else as `\xNN`, so that a
/// binary key can neither break the RESP error line (no CR/LF) nor hide what it holds.
pub fn printable_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len().min(KEY_DISPLAY_LIMIT) + 8);
    for &b in key.iter().take(KEY_DISPLAY_LIMIT) {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if key.len() > KEY_DISPLAY_LIMIT {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_keys_are_shown_escaped_and_cut() {
        assert_eq!(printable_key(b"a\r\n\x00*"), "a\\x0d\\x0a\\x00*");
        let long = vec![b'k'; 300];
        let shown = printable_key(&long);
        assert!(shown.ends_with("...") && shown.len() == KEY_DISPLAY_LIMIT + 3);
    }
}
