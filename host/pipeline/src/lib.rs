//! Stowage's backup and restore pipelines without the cluster: pure stages over JSON items,
//! called by the controller, which does the I/O (discovery, listing, fetching, creating,
//! uploading).
//!
//! - [`selection`]: Backup/Restore filters resolved once into a [`ResourceSelection`].
//! - [`related`]: the objects an included object pulls in (a pod's claims, a claim's volume).
//! - [`archive`]: the archive in Velero's layout, written as `tar.zst`, read from `tar.zst` or
//!   Velero's `tar.gz`.
//! - [`restore`]: plan, order, transform, resource modifiers, and what to do with objects that
//!   already exist.
//! - [`Outcome`]: warnings and errors keyed by namespace, apart from any plan.

pub mod archive;
pub mod hooks;
#[cfg(any(test, feature = "builders"))]
pub mod builders;
mod error;
mod item;
mod outcome;
pub mod related;
pub mod restore;
pub mod seen;
pub mod selection;
pub mod volumes;

pub use error::Error;
pub use item::{is_built_in_group, ApiResourceInfo, GroupResource, Item, ItemError, ItemRef};
pub use outcome::{Outcome, CLUSTER};
pub use selection::{ResourceSelection, SelectionOptions};
