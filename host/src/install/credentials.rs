//! The `--secret-file`: an AWS-style shared credentials file (INI), stored verbatim in the
//! credentials Secret. It is parsed only to catch mistakes before installing; its content never
//! appears in messages (errors name line numbers, not lines).

use std::collections::BTreeMap;
use std::fmt;

/// The keys a profile must have for S3 access.
const REQUIRED_KEYS: [&str; 2] = ["aws_access_key_id", "aws_secret_access_key"];

/// A validated credentials file.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialsFile {
    contents: Vec<u8>,
    profile: String,
}

impl CredentialsFile {
    /// Checks `contents` and that `profile` has an access key id and a secret access key.
    /// The error is a sentence to put after the file's name.
    pub fn parse(contents: Vec<u8>, profile: &str) -> Result<CredentialsFile, String> {
        let text = std::str::from_utf8(&contents).map_err(|_| "is not UTF-8 text".to_string())?;
        let profiles = parse_ini(text)?;
        let Some(keys) = profiles.get(profile) else {
            let found: Vec<&str> = profiles.keys().map(String::as_str).collect();
            let found = if found.is_empty() { "none".to_string() } else { found.join(", ") };
            return Err(format!(
                "has no [{profile}] profile (profiles found: {found}); add one, or choose a profile with \
                 --backup-location-config profile=NAME"
            ));
        };
        for key in REQUIRED_KEYS {
            if keys.get(key) != Some(&true) {
                return Err(format!("profile [{profile}] has no {key}; add `{key} = ...` to it"));
            }
        }
        Ok(CredentialsFile { contents, profile: profile.to_string() })
    }

    /// The file as given, for the Secret.
    pub fn contents(&self) -> &[u8] {
        &self.contents
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }
}

impl fmt::Debug for CredentialsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CredentialsFile {{ profile: {:?}, contents: <{} bytes redacted> }}",
            self.profile,
            self.contents.len()
        )
    }
}

/// Profiles and their keys, each with whether its value is non-empty (values are not kept).
fn parse_ini(text: &str) -> Result<BTreeMap<String, BTreeMap<String, bool>>, String> {
    let mut profiles: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let number = index + 1;
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let name = section
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("line {number}: a section header must look like [default]"))?;
            // The AWS config-file spelling `[profile name]` means the same profile.
            let name = name.strip_prefix("profile ").map(str::trim).unwrap_or(name);
            profiles.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {number} is neither `[profile]` nor `key = value`"));
        };
        let Some(profile) = &current else {
            return Err(format!(
                "line {number}: a key comes before any [profile] header; start the file with [default]"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("line {number}: the key before `=` is empty"));
        }
        let present = !value.trim().is_empty();
        profiles.get_mut(profile).expect("current profile exists").insert(key.to_string(), present);
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIO: &str = "[default]\naws_access_key_id = minio\naws_secret_access_key = minio123\n";

    #[test]
    fn accepts_the_minio_example() {
        let file = CredentialsFile::parse(MINIO.as_bytes().to_vec(), "default").unwrap();
        assert_eq!(file.contents(), MINIO.as_bytes());
        let compact = "# comment\n[default]\naws_access_key_id=minio\naws_secret_access_key=minio123";
        assert!(CredentialsFile::parse(compact.into(), "default").is_ok());
    }

    #[test]
    fn picks_the_named_profile() {
        let text = "[default]\naws_access_key_id=a\n\n[profile backup]\naws_access_key_id=b\naws_secret_access_key=c\n";
        assert!(CredentialsFile::parse(text.into(), "backup").is_ok());
        let err = CredentialsFile::parse(text.into(), "default").unwrap_err();
        assert!(err.contains("profile [default] has no aws_secret_access_key"), "{err}");
        let err = CredentialsFile::parse(text.into(), "prod").unwrap_err();
        assert!(err.contains("profiles found: backup, default"), "{err}");
    }

    #[test]
    fn malformed_files_are_reported_by_line_without_content() {
        let cases = [
            ("[default]\naws_access_key_id minio-secret-value\n", "line 2"),
            ("aws_access_key_id = minio-secret-value\n", "before any [profile]"),
            ("[default\naws_access_key_id = minio-secret-value\n", "line 1"),
            ("[default]\naws_access_key_id = \naws_secret_access_key = minio-secret-value\n", "no aws_access_key_id"),
        ];
        for (text, expected) in cases {
            let err = CredentialsFile::parse(text.into(), "default").unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains("minio-secret-value"), "{err}");
        }
        assert!(CredentialsFile::parse(vec![0xff, 0xfe], "default").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn debug_redacts_the_content() {
        let file = CredentialsFile::parse(MINIO.into(), "default").unwrap();
        let debug = format!("{file:?}");
        assert!(!debug.contains("minio123") && !debug.contains("minio\n"), "{debug}");
        assert!(debug.contains("redacted"));
    }
}
