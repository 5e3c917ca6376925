//! Durations in the API are strings in Go's `time.ParseDuration` format (`720h`, `1h30m`,
//! `720h0m0s`), as in Velero. They stay strings in the types so that a bad value reaches the
//! controller, which reports it in `status.validationErrors`, instead of making the whole object
//! unreadable.

use std::time::Duration;

use crate::ApiError;

/// The default backup time-to-live: 30 days.
pub const DEFAULT_BACKUP_TTL: &str = "720h";

/// Parses a Go-style duration. Negative and empty durations are rejected.
pub fn parse(value: &str) -> Result<Duration, ApiError> {
    let invalid = |reason: String| ApiError::InvalidDuration { value: value.to_string(), reason };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let parsed: kube::core::Duration = trimmed.parse().map_err(|e| invalid(format!("{e}")))?;
    if parsed.is_negative() {
        return Err(invalid("it is negative".into()));
    }
    Ok(parsed.into())
}

/// Formats a duration the way Go prints one (`720h0m0s`, `1m30s`, `0s`), dropping sub-second
/// precision, so values written by Stowage parse in Velero's tools too.
pub fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("720h").unwrap(), Duration::from_secs(720 * 3600));
        assert_eq!(parse("720h0m0s").unwrap(), Duration::from_secs(720 * 3600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_durations_with_a_hint() {
        for bad in ["", "  ", "10", "ten minutes", "-5m", "5d"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("use a Go duration"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(720 * 3600)), "720h0m0s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(parse(&format(Duration::from_secs(3723))).unwrap(), Duration::from_secs(3723));
    }
}
