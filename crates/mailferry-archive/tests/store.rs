//! Storage, dedup, occurrences, sealing, read-back.

mod common;

use std::sync::Arc;

use common::*;
use mailferry_archive::{
    Archive, ArchiveConfig, ArchiveError, BlobState, BlobStoreConfig, Digest, KeyRing,
    MessageSource,
};

#[tokio::test]
async fn same_bytes_in_two_mailboxes_share_one_blob_but_keep_two_occurrences() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let m = msg(
        "alice@example.com",
        "bob@example.com, carol@example.com",
        "Lunch",
        "Noon?",
    );
    let r1 = a.put(m.clone(), occ("bob", "U1")).await.unwrap();
    let r2 = a.put(m.clone(), occ("carol", "U7")).await.unwrap();
    assert!(r1.stored_new && r1.occurrence_new);
    assert!(!r2.stored_new && r2.occurrence_new);
    assert_eq!(r1.digest, r2.digest);
    assert_eq!(r1.digest, Digest::of(&m));

    // The same message delivered to three mailboxes with different Received headers is
    // three different byte strings: three blobs, never merged on Message-ID.
    for (i, acct) in ["dan", "erin", "fay"].iter().enumerate() {
        let mut v = format!("Received: from mx{i} by mail; Tue, 1 Oct 2024 10:00:0{i} +0000\r\n")
            .into_bytes();
        v.extend_from_slice(&m);
        let r = a.put(v, occ(acct, "U1")).await.unwrap();
        assert!(r.stored_new);
    }
    let s = a.stats().await.unwrap();
    assert_eq!((s.messages, s.occurrences), (4, 5));
    assert_eq!(s.logical_bytes, s.unique_bytes + m.len() as u64);
    assert!(s.dedup_ratio > 1.0);

    let rec = a.meta(&r1.digest).await.unwrap();
    assert_eq!(rec.state, BlobState::Stored);
    let accounts: Vec<_> = rec.occurrences.iter().map(|o| o.account.as_str()).collect();
    assert_eq!(accounts, ["bob", "carol"]);
    assert_eq!(rec.meta.unwrap().subject.as_deref(), Some("Lunch"));
    // Exact bytes come back.
    assert_eq!(&a.get(&r1.digest).await.unwrap()[..], &m[..]);
    // One blob file on disk for the shared message.
    assert!(a.blob_path(&r1.digest).unwrap().exists());
}

#[tokio::test]
async fn rerun_of_the_same_uidl_is_idempotent_and_a_changed_body_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let m = msg("a@x", "b@x", "S", "one");
    let first = a.put(m.clone(), occ("bob", "U1")).await.unwrap();
    let events = a.events(0, 100).await.unwrap().len();
    let again = a.put(m.clone(), occ("bob", "U1")).await.unwrap();
    assert!(!again.stored_new && !again.occurrence_new);
    assert_eq!(again.occurrence_id, first.occurrence_id);
    assert_eq!(
        a.events(0, 100).await.unwrap().len(),
        events,
        "a rerun logs nothing"
    );
    assert_eq!(a.stats().await.unwrap().occurrences, 1);
    let err = a
        .put(msg("a@x", "b@x", "S", "two"), occ("bob", "U1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::OccurrenceConflict(_)), "{err}");
    // Same UIDL on another host is another mailbox.
    let mut other = occ("bob", "U1");
    other.source_host = "pop2.example.com".into();
    assert!(a.put(m, other).await.unwrap().occurrence_new);
    assert!(a
        .find_occurrence("pop.example.com", "bob", "U1")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn large_message_from_a_file_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let mut big = msg("a@x", "b@x", "Big", "");
    // ~6 MB, with bare LF, NUL and a lone CR: bytes are stored as given.
    for i in 0..200_000u32 {
        big.extend_from_slice(format!("line {i} \0 \r lf\n").as_bytes());
    }
    let path = dir.path().join("big.eml");
    std::fs::write(&path, &big).unwrap();
    let r = a
        .put(MessageSource::Path(path.clone()), occ("bob", "BIG"))
        .await
        .unwrap();
    assert_eq!(r.digest, Digest::of(&big));
    assert_eq!(r.size, big.len() as u64);
    assert!(r.stored_size.unwrap() < r.size / 2, "compressed");
    assert_eq!(&a.get(&r.digest).await.unwrap()[..], &big[..]);
    let out = dir.path().join("out.eml");
    assert_eq!(
        a.get_to_path(&r.digest, &out).await.unwrap(),
        big.len() as u64
    );
    assert_eq!(std::fs::read(&out).unwrap(), big);
}

#[tokio::test]
async fn sealed_blobs_survive_key_rotation_and_need_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = ([1u8; 32], [2u8; 32]);
    let m1 = msg("a@x", "b@x", "Sealed one", "secret body one");
    let m2 = msg("a@x", "b@x", "Sealed two", "secret body two");
    let d1 = {
        let a = open_with(
            dir.path(),
            KeyRing::none()
                .with_key("k1", &k1)
                .unwrap()
                .activate("k1")
                .unwrap(),
        )
        .await;
        let r = a.put(m1.clone(), occ("bob", "1")).await.unwrap();
        let raw = std::fs::read(a.blob_path(&r.digest).unwrap()).unwrap();
        assert!(
            !raw.windows(11).any(|w| w == b"secret body"),
            "plaintext on disk"
        );
        a.close().await.unwrap();
        r.digest
    };
    // Rotate: k2 active, k1 kept for reading.
    let ring = KeyRing::none()
        .with_key("k1", &k1)
        .unwrap()
        .with_key("k2", &k2)
        .unwrap()
        .activate("k2")
        .unwrap();
    let a = open_with(dir.path(), ring).await;
    let d2 = a.put(m2.clone(), occ("bob", "2")).await.unwrap().digest;
    assert_eq!(a.meta(&d1).await.unwrap().key_id.as_deref(), Some("k1"));
    assert_eq!(a.meta(&d2).await.unwrap().key_id.as_deref(), Some("k2"));
    assert_eq!(&a.get(&d1).await.unwrap()[..], &m1[..]);
    assert_eq!(&a.get(&d2).await.unwrap()[..], &m2[..]);
    assert!(a.verify("test").await.unwrap().ok());
    a.close().await.unwrap();
    // Without k1, old blobs are unreadable — loudly, and verify says which key is missing.
    let a = open_with(
        dir.path(),
        KeyRing::none()
            .with_key("k2", &k2)
            .unwrap()
            .activate("k2")
            .unwrap(),
    )
    .await;
    assert!(
        matches!(a.get(&d1).await.unwrap_err(), ArchiveError::UnknownKey(_, ref id) if id == "k1")
    );
    let rep = a.verify("test").await.unwrap();
    assert_eq!(rep.discrepancies.len(), 1, "{:?}", rep.discrepancies);
    // A wrong key under the right id fails authentication.
    a.close().await.unwrap();
    let a = open_with(
        dir.path(),
        KeyRing::none().with_key("k1", &[9u8; 32]).unwrap(),
    )
    .await;
    assert!(a.get(&d1).await.unwrap_err().is_integrity());
}

#[tokio::test]
async fn broken_messages_are_archived_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe not a message at all \x00\x01".to_vec(),
        b"Subject: truncated multipart\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nhalf".to_vec(),
        b"From: broken <<<@@>\r\nSubject: =?x-unknown?Q?weird?=\r\nDate: yesterday-ish\r\n\r\nbody".to_vec(),
    ];
    for (i, c) in cases.iter().enumerate() {
        let r = a
            .put(c.clone(), occ("bob", &format!("B{i}")))
            .await
            .unwrap();
        assert_eq!(&a.get(&r.digest).await.unwrap()[..], &c[..]);
    }
    let page = a
        .search(
            &mailferry_archive::SearchQuery {
                subject: Some("truncated multipart".into()),
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert!(a.verify("t").await.unwrap().ok());
}

#[tokio::test]
async fn any_object_store_works_as_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(object_store::memory::InMemory::new());
    let cfg =
        ArchiveConfig::local("mem", dir.path()).with_blobs(BlobStoreConfig::Custom(mem.clone()));
    let a = Archive::open(cfg).await.unwrap();
    let m = msg("a@x", "b@x", "In memory", "hello");
    let r = a.put(m.clone(), occ("bob", "1")).await.unwrap();
    assert_eq!(&a.get(&r.digest).await.unwrap()[..], &m[..]);
    assert!(a.blob_path(&r.digest).is_none());
    assert!(
        !dir.path().join("blobs").exists(),
        "no local blobs with a remote store"
    );
    let rep = a.verify("t").await.unwrap();
    assert!(rep.ok(), "{:?}", rep.discrepancies);
    assert_eq!(rep.blobs_checked, 1);
}
