//! Request handlers: the probes here, the versioned API under [`v1`].

pub mod health;
pub mod v1;
