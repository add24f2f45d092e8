#![allow(dead_code)]
//! Shared helpers for the archive integration tests.

use chrono::Utc;
use mailferry_archive::{Archive, ArchiveConfig, KeyRing, Occurrence};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use std::path::Path;

pub fn occ(account: &str, uidl: &str) -> Occurrence {
    Occurrence {
        source_host: "pop.example.com".into(),
        account: account.into(),
        uidl: uidl.into(),
        job_id: Some(1),
        run_id: Some(1),
        retrieved_at: Utc::now(),
    }
}

pub fn run_occ(account: &str, uidl: &str, job: i64, run: i64) -> Occurrence {
    Occurrence {
        job_id: Some(job),
        run_id: Some(run),
        ..occ(account, uidl)
    }
}

pub async fn open(dir: &Path) -> Archive {
    Archive::open(ArchiveConfig::local("test", dir))
        .await
        .unwrap()
}

pub async fn open_with(dir: &Path, keys: KeyRing) -> Archive {
    Archive::open(ArchiveConfig::local("test", dir).with_keys(keys))
        .await
        .unwrap()
}

/// A direct connection to the archive's index, playing the attacker or the crash.
pub async fn raw_db(dir: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(dir.join("index.sqlite")))
        .await
        .unwrap()
}

pub fn msg(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Tue, 1 Oct 2024 10:00:00 +0000\r\n\
Message-ID: <{}@example.com>\r\n\r\n{body}\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}
