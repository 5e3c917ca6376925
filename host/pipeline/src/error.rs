//! The crate's error: one enum over the stages' own, so callers can match a stage's errors
//! precisely or pass any of them on with `?`.

use thiserror::Error;

use crate::archive::ArchiveError;
use crate::item::ItemError;
use crate::restore::modifiers::ModifierError;
use crate::restore::order::PrioritiesError;
use crate::restore::plan::PlanError;
use crate::selection::SelectionError;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Item(#[from] ItemError),
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Modifiers(#[from] ModifierError),
    #[error(transparent)]
    Priorities(#[from] PrioritiesError),
}
