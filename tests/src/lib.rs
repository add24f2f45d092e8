//! Test support for mailferry's end-to-end tests.
//!
//! - [`dovecot`]: a private Dovecot 2.3 (POP3, POP3S, IMAP, IMAPS on loopback) per test.
//! - [`fake`]: a scriptable fake POP3 server for failures real Dovecot will not produce.
//! - [`corpus`]: messages that break naive mail code, and a realistic benchmark mix.
//! - [`moto`]: a real S3-compatible server (moto) on loopback.
//! - [`faultproxy`]: a seeded TCP proxy that drops, stalls, truncates or resets connections.
#![forbid(unsafe_code)]

pub mod corpus;
pub mod dovecot;
pub mod fake;
pub mod faultproxy;
pub mod moto;

pub use corpus::{normalize_crlf, realistic, tricky_corpus};
pub use dovecot::{Dovecot, LabCert, LabOptions};
pub use fake::{FakeConfig, FakePop3, FakeScript};
pub use moto::Moto;

#[cfg(test)]
mod selftest;
