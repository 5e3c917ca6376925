use thiserror::Error;

/// Errors from interpreting values of Stowage's API (durations, names).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("invalid duration {value:?}: {reason}; use a Go duration such as 720h, 1h30m or 90s")]
    InvalidDuration { value: String, reason: String },

    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
}
