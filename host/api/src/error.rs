use thiserror::Error;

/// Errors from interpreting values of Stowage's API (durations, names).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("invalid duration {value:?}: {reason}; use a Go duration such as 720h, 1h30m or 90s")]
    InvalidDuration { value: String, reason: String },

    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error(
        "the repository master key is {len} bytes, not 32; restore the Secret stowage-repo-master-key from your copy \
         (it is created once by `stowage install`)"
    )]
    InvalidMasterKey { len: usize },
}
