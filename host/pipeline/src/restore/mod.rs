//! Restore stages, in the order a restore runs them: [`plan`] (filters, namespace mapping,
//! priorities, modifiers), [`scope`] (which archived objects come back), [`order`],
//! [`transform`] (built-in restore item actions), [`configured`] (the storage-class and
//! image-name mappings Velero users configure by ConfigMap), [`modifiers`] (the user's resource modifier
//! rules), and [`existing`] (objects already there); [`helper`] builds the init container that holds restored
//! pods until their volume data is back.

pub mod configured;
pub mod existing;
pub mod helper;
pub mod modifiers;
pub mod order;
pub mod plan;
pub mod scope;
pub mod transform;
