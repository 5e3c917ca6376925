//! S3 credentials and the AWS-style INI files users pass with `--secret-file` (and store in the
//! location's credential Secret):
//!
//! ```ini
//! [default]
//! aws_access_key_id = minio
//! aws_secret_access_key = minio123
//! ```

use crate::error::{Result, StorageError};
use std::fmt;

/// Static S3 credentials. `Debug` never prints the secret or the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl S3Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        S3Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// Reads `profile` from the text of an AWS credentials file. Accepts `[name]` and
    /// `[profile name]` headers, spaces around `=`, blank lines and `#`/`;` comment lines.
    /// Errors never quote the file's lines, which hold secrets.
    pub fn from_ini(text: &str, profile: &str) -> Result<Self> {
        let err = |msg: String| Err(StorageError::CredentialsFile(msg));
        let mut profiles: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        let mut access_key_id = None;
        let mut secret_access_key = None;
        let mut session_token = None;

        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                let Some(name) = header.strip_suffix(']') else {
                    return err(format!(
                        "line {}: a section header must end with ']'",
                        index + 1
                    ));
                };
                let name = name.trim();
                let name = name.strip_prefix("profile ").map(str::trim).unwrap_or(name);
                profiles.push(name.to_string());
                current = Some(name.to_string());
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return err(format!(
                    "line {}: expected \"key = value\" or \"[profile]\"",
                    index + 1
                ));
            };
            let Some(section) = &current else {
                return err(format!(
                    "line {}: setting outside a [profile] section; start the file with [default]",
                    index + 1
                ));
            };
            if section != profile {
                continue;
            }
            let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
            match key.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => access_key_id = value,
                "aws_secret_access_key" => secret_access_key = value,
                "aws_session_token" | "aws_security_token" => session_token = value,
                _ => {} // region, output, ...: not credentials
            }
        }

        if !profiles.iter().any(|p| p == profile) {
            let found = if profiles.is_empty() {
                "the file has no [profile] sections".to_string()
            } else {
                format!("the file has: {}", profiles.join(", "))
            };
            return err(format!("profile \"{profile}\" not found ({found})"));
        }
        let missing = |key: &str| {
            StorageError::CredentialsFile(format!("profile \"{profile}\" has no {key}"))
        };
        Ok(S3Credentials {
            access_key_id: access_key_id.ok_or_else(|| missing("aws_access_key_id"))?,
            secret_access_key: secret_access_key.ok_or_else(|| missing("aws_secret_access_key"))?,
            session_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<S3Credentials>) -> String {
        result.expect_err("should fail").to_string()
    }

    #[test]
    fn reads_the_velero_example() {
        let creds = S3Credentials::from_ini(
            "[default]\naws_access_key_id=minio\naws_secret_access_key=minio123\n",
            "default",
        )
        .unwrap();
        assert_eq!(creds, S3Credentials::new("minio", "minio123"));
    }

    #[test]
    fn selects_a_profile_among_several_with_spaces_comments_and_crlf() {
        let text = "\u{feff}# team credentials\r\n\
                    [default]\r\n\
                    aws_access_key_id = AKIADEFAULT\r\n\
                    aws_secret_access_key = default-secret\r\n\
                    \r\n\
                    ; the backup account\r\n\
                    [ profile backup ]\r\n\
                    \taws_access_key_id   =   AKIABACKUP  \r\n\
                    AWS_SECRET_ACCESS_KEY=abc/def+ghi=\r\n\
                    aws_session_token = token==\r\n\
                    region = eu-west-1\r\n";
        let creds = S3Credentials::from_ini(text, "backup").unwrap();
        assert_eq!(creds.access_key_id, "AKIABACKUP");
        assert_eq!(creds.secret_access_key, "abc/def+ghi=");
        assert_eq!(creds.session_token.as_deref(), Some("token=="));
        let default = S3Credentials::from_ini(text, "default").unwrap();
        assert_eq!(default.secret_access_key, "default-secret");
        assert_eq!(default.session_token, None);
    }

    #[test]
    fn missing_profile_lists_the_profiles_present() {
        let text = "[default]\naws_access_key_id=a\naws_secret_access_key=b\n[dev]\n";
        assert_eq!(
            message(S3Credentials::from_ini(text, "prod")),
            "credentials file: profile \"prod\" not found (the file has: default, dev)"
        );
        assert_eq!(
            message(S3Credentials::from_ini("", "default")),
            "credentials file: profile \"default\" not found (the file has no [profile] sections)"
        );
    }

    #[test]
    fn missing_or_empty_keys_are_named() {
        assert_eq!(
            message(S3Credentials::from_ini(
                "[default]\naws_access_key_id=a\n",
                "default"
            )),
            "credentials file: profile \"default\" has no aws_secret_access_key"
        );
        assert_eq!(
            message(S3Credentials::from_ini(
                "[default]\naws_access_key_id =\naws_secret_access_key=s\n",
                "default"
            )),
            "credentials file: profile \"default\" has no aws_access_key_id"
        );
    }

    #[test]
    fn malformed_lines_are_reported_without_their_content() {
        let err = message(S3Credentials::from_ini(
            "[default]\naws_secret_access_key supersecret\n",
            "default",
        ));
        assert_eq!(
            err,
            "credentials file: line 2: expected \"key = value\" or \"[profile]\""
        );
        assert!(!err.contains("supersecret"));
        let err = message(S3Credentials::from_ini("aws_access_key_id=x\n", "default"));
        assert!(
            err.contains("line 1: setting outside a [profile] section"),
            "{err}"
        );
        let err = message(S3Credentials::from_ini("[default\n", "default"));
        assert!(
            err.contains("line 1: a section header must end with ']'"),
            "{err}"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut creds = S3Credentials::new("AKIAVISIBLE", "hunter2-secret");
        creds.session_token = Some("session-secret".into());
        let shown = format!("{creds:?}");
        assert!(shown.contains("AKIAVISIBLE"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("session-secret"), "{shown}");
    }
}
