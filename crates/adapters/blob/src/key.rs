//! Blob keys: relative, `/`-separated paths. A key is checked before it reaches a
//! backend, because on the local filesystem a `..` segment or an absolute path would
//! otherwise read or write outside the store's root, and because every backend should
//! refuse the same keys (a key that works in memory but not on S3 is a latent bug).

use object_store::path::Path;

/// The longest key accepted: S3's limit, so keys stay portable between backends.
const MAX_KEY_BYTES: usize = 1024;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blob key {key:?}: {reason}")]
pub struct InvalidKey {
    pub key: String,
    pub reason: &'static str,
}

/// The object-store path for `key`, or why the key is refused.
pub(crate) fn parse(key: &str) -> Result<Path, InvalidKey> {
    let refuse = |reason| InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(refuse("the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(refuse("the key is longer than 1024 bytes"));
    }
    if key.starts_with('/') {
        return Err(refuse("absolute paths are not allowed"));
    }
    // A backslash is a path separator on Windows, so `..\x` would escape there.
    if key.contains('\\') {
        return Err(refuse("backslashes are not allowed"));
    }
    if key.chars().any(char::is_control) {
        return Err(refuse("control characters are not allowed"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(refuse("empty path segments are not allowed")),
            "." | ".." => return Err(refuse("`.` and `..` segments are not allowed")),
            _ => {}
        }
    }
    Path::parse(key).map_err(|_| refuse("the key is not a valid object path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_multi_segment_key_is_accepted() {
        let path = parse("tenant/collection/doc.pdf").unwrap();
        assert_eq!(path.as_ref(), "tenant/collection/doc.pdf");
    }

    #[test]
    fn keys_that_could_escape_the_root_are_refused() {
        for key in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a/./b",
            "..",
            "a\\..\\b",
        ] {
            assert!(parse(key).is_err(), "{key} was accepted");
        }
    }

    #[test]
    fn empty_keys_and_empty_segments_are_refused() {
        for key in ["", "a//b", "a/", "/"] {
            assert!(parse(key).is_err(), "{key:?} was accepted");
        }
    }

    #[test]
    fn control_characters_and_overlong_keys_are_refused() {
        assert!(parse("a\0b").is_err());
        assert!(parse("a\nb").is_err());
        assert!(parse(&"k".repeat(1025)).is_err());
    }

    #[test]
    fn the_error_names_the_key_and_the_reason() {
        let err = parse("a/../b").unwrap_err().to_string();
        assert!(err.contains("a/../b") && err.contains(".."), "{err}");
    }
}
