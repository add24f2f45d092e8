//! mailferry's POP3 client: a streaming RFC 1939 client on tokio + rustls.
//!
//! * [`Pop3Session::connect`] opens the connection (implicit TLS, STLS per RFC 2595, or
//!   explicitly allowed plaintext), reads the greeting, asks CAPA (RFC 2449) and logs in
//!   with USER/PASS, APOP, SASL PLAIN or XOAUTH2 (RFC 5034).
//! * [`Pop3Session::uidl`] lists unique-ids, reporting invalid and duplicated ones
//!   instead of failing the listing. Every multi-line reply is bounded by what was asked
//!   (listings by STAT's message count), so no server can make us buffer without bound.
//! * RETR is streamed and, where the server advertises PIPELINING, pipelined:
//!   [`Pop3Session::send_retr_many`], then per message [`Pop3Session::read_retr_status`]
//!   and [`Pop3Session::read_retr_chunk`] until `None`. Memory stays bounded whatever
//!   the message size.
//! * [`Pop3Session::dele`] marks, and only a successful [`Pop3Session::quit`] commits
//!   (RFC 1939 §6).
//!
//! The pure protocol code (replies, commands, byte-stuffing) is in [`wire`], with no I/O.
//! Errors say whether retrying can help ([`Pop3Error::class`]) and never contain a
//! credential.
#![forbid(unsafe_code)]

mod connect;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod listing;
#[cfg(test)]
mod props;
pub mod session;
pub mod wire;

pub use error::Pop3Error;
pub use session::{Pop3Options, Pop3Session, UidlListing};
pub use wire::{Capabilities, RespCode};

/// The result of every fallible operation of this crate.
pub type Result<T> = std::result::Result<T, Pop3Error>;
