//! Restore stages, in the order a restore runs them: [`plan`] (filters, namespace mapping,
//! priorities, modifiers), [`scope`] (which archived objects come back), [`order`],
//! [`transform`] (built-in restore item actions), [`modifiers`] (the user's resource modifier
//! rules), and [`existing`] (objects already there).

pub mod existing;
pub mod modifiers;
pub mod order;
pub mod plan;
pub mod scope;
pub mod transform;
