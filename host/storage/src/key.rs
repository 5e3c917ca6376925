//! Object keys: `/`-separated, relative to the location's prefix. Both stores apply the same
//! rules, so a key that works on the filesystem works on S3 and the reverse; for `FsStore` they
//! are what keeps writes inside the root directory.

use crate::error::{Result, StorageError};

/// Checks an object key: non-empty relative path whose segments are neither empty, `.` nor `..`.
pub(crate) fn validate_key(location: &str, key: &str) -> Result<()> {
    let invalid = |reason| {
        Err(StorageError::InvalidKey {
            location: location.to_string(),
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("a key cannot be empty");
    }
    if key.starts_with('/') {
        return invalid("a key must be relative (no leading '/')");
    }
    if key.chars().any(|c| c == '\\' || c.is_control()) {
        return invalid("a key cannot contain '\\' or control characters");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("a key cannot contain empty segments ('//' or a trailing '/')"),
            "." | ".." => return invalid("a key cannot contain '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a key optionally followed by one `/`.
pub(crate) fn validate_prefix(location: &str, prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    validate_key(location, trimmed).map_err(|e| match e {
        // Report the prefix as given, not the trimmed form.
        StorageError::InvalidKey {
            location, reason, ..
        } => StorageError::InvalidKey {
            location,
            key: prefix.to_string(),
            reason,
        },
        other => other,
    })
}

/// `delete_prefix` never wipes a whole location by accident.
pub(crate) fn refuse_empty_prefix(location: &str, prefix: &str) -> Result<()> {
    validate_prefix(location, prefix)?;
    if prefix.is_empty() {
        return Err(StorageError::InvalidKey {
            location: location.to_string(),
            key: String::new(),
            reason: "delete_prefix refuses an empty prefix (it would delete the whole location)",
        });
    }
    Ok(())
}

/// The directory a `list_dirs` prefix names: `""`, `"backups"` and `"backups/"` are all
/// directories, returned without a trailing slash.
pub(crate) fn dir_of(prefix: &str) -> &str {
    prefix.strip_suffix('/').unwrap_or(prefix)
}

/// `a` + `/` + `b`, where either may be empty.
pub(crate) fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "backups/nightly/nightly.tar.zst",
            "restic/ns/data/ab/abcdef",
            "with space/and.dots..x/-_~",
            "..hidden",
            "a../b",
        ] {
            validate_key("l", key).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn rejects_keys_that_could_escape_or_are_ambiguous() {
        for key in [
            "",
            "/",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
            "a\nb",
        ] {
            let err = validate_key("default", key).expect_err(key);
            assert!(
                matches!(err, StorageError::InvalidKey { .. }),
                "{key}: {err}"
            );
            assert!(err
                .to_string()
                .starts_with("storage location \"default\": invalid key"));
        }
    }

    #[test]
    fn prefixes_may_be_empty_or_end_with_a_slash() {
        for prefix in ["", "backups", "backups/", "backups/nigh"] {
            validate_prefix("l", prefix).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        }
        for prefix in ["/", "//", "/backups", "../", "a/../", "a//"] {
            let err = validate_prefix("l", prefix).expect_err(prefix);
            assert!(err.to_string().contains(&format!("\"{prefix}\"")), "{err}");
        }
    }

    #[test]
    fn joins_and_trims() {
        assert_eq!(join("", "k"), "k");
        assert_eq!(join("p", ""), "p");
        assert_eq!(join("p/q", "k"), "p/q/k");
        assert_eq!(dir_of("backups/"), "backups");
        assert_eq!(dir_of(""), "");
    }
}
