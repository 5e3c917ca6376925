//! Why an extension could not be loaded.

use crate::config::ConfigError;
use crate::source::ExtensionId;

/// A load failure; the registry keeps it as the quarantined extension's last error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The ConfigMap does not have the shape of an extension.
    #[error("extension {id}: {message}")]
    Shape { id: ExtensionId, message: String },
    #[error("extension {id}: {error}")]
    Config { id: ExtensionId, error: ConfigError },
    /// The module does not compile, or does not implement the world of its kind.
    #[error("extension {id}: {message}")]
    Module { id: ExtensionId, message: String },
}

impl LoadError {
    pub fn id(&self) -> &ExtensionId {
        match self {
            LoadError::Shape { id, .. } | LoadError::Config { id, .. } | LoadError::Module { id, .. } => id,
        }
    }
}
