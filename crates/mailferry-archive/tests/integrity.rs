//! Tamper detection, the event chain, Merkle proofs, orphan objects.

mod common;

use common::*;
use mailferry_archive::{
    verify_proof, ArchiveError, ChainBreak, Digest, Discrepancy, IntegrityKind,
};

#[tokio::test]
async fn a_flipped_byte_is_reported_for_exactly_that_digest_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let mut ds = Vec::new();
    for i in 0..5 {
        ds.push(
            a.put(
                msg("a@x", "b@x", &format!("M{i}"), &"text ".repeat(100)),
                occ("bob", &i.to_string()),
            )
            .await
            .unwrap()
            .digest,
        );
    }
    assert!(a.verify("t").await.unwrap().ok());
    let victim = ds[2];
    let path = a.blob_path(&victim).unwrap();
    let mut raw = std::fs::read(&path).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    std::fs::write(&path, raw).unwrap();

    assert!(a.get(&victim).await.unwrap_err().is_integrity());
    let rep = a.verify("t").await.unwrap();
    assert_eq!(rep.blobs_checked, 5);
    assert_eq!(rep.discrepancies.len(), 1, "{:?}", rep.discrepancies);
    assert!(matches!(&rep.discrepancies[0], Discrepancy::Blob { digest, .. } if *digest == victim));
    // Others still read.
    assert!(a.get(&ds[0]).await.is_ok());

    // A deleted blob is reported as missing.
    std::fs::remove_file(a.blob_path(&ds[4]).unwrap()).unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(rep.discrepancies.contains(&Discrepancy::Blob {
        digest: ds[4],
        kind: IntegrityKind::Missing
    }));
    assert!(matches!(
        a.get(&ds[4]).await.unwrap_err(),
        ArchiveError::Integrity(_)
    ));
}

#[tokio::test]
async fn edited_or_removed_log_records_and_occurrences_break_verify() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    for i in 0..4 {
        a.put(
            msg("a@x", "b@x", &format!("M{i}"), "x"),
            occ("bob", &i.to_string()),
        )
        .await
        .unwrap();
    }
    let head = a.chain_head().await.unwrap().unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(rep.ok(), "{:?}", rep.discrepancies);
    assert_eq!(rep.events_checked, 4);
    assert_eq!(
        Some(head.1.clone()),
        rep.chain_head,
        "the report names the head it walked to"
    );
    assert_eq!(
        a.chain_head().await.unwrap().unwrap().0,
        5,
        "and the verify itself is logged"
    );

    // Edit an event in place.
    let mut db = raw_db(dir.path()).await;
    sqlx::query("UPDATE events SET actor = 'mallory' WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(
        rep.discrepancies
            .contains(&Discrepancy::Chain(ChainBreak::HashMismatch { seq: 2 })),
        "{:?}",
        rep.discrepancies
    );
    sqlx::query("UPDATE events SET actor = 'job:1' WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    assert!(a.verify("t").await.unwrap().ok());

    // Delete an occurrence: its ingest event is left without it.
    let seq: i64 = sqlx::query_scalar("SELECT event_seq FROM occurrences WHERE uidl = '1'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM occurrences WHERE uidl = '1'")
        .execute(&mut db)
        .await
        .unwrap();
    let rep = a.verify("t").await.unwrap();
    assert_eq!(
        rep.discrepancies,
        vec![Discrepancy::EventWithoutOccurrence { seq }]
    );

    // Delete a log record (and, to hide it, the occurrence would have to go too).
    sqlx::query("DELETE FROM events WHERE seq = 3")
        .execute(&mut db)
        .await
        .unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(rep
        .discrepancies
        .iter()
        .any(|d| matches!(d, Discrepancy::Chain(ChainBreak::Gap { .. }))));
    assert!(rep
        .discrepancies
        .iter()
        .any(|d| matches!(d, Discrepancy::Chain(ChainBreak::LinkBroken { seq: 4 }))));
    assert!(rep
        .discrepancies
        .iter()
        .any(|d| matches!(d, Discrepancy::OccurrenceWithoutEvent { .. })));

    // Re-pointing an occurrence at another digest is caught against its ingest event.
    let other: String = sqlx::query_scalar("SELECT digest FROM occurrences WHERE uidl = '0'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE occurrences SET digest = ? WHERE uidl = '3'")
        .bind(other)
        .execute(&mut db)
        .await
        .unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(rep
        .discrepancies
        .iter()
        .any(|d| matches!(d, Discrepancy::OccurrenceWithoutEvent { .. })));
}

#[tokio::test]
async fn orphan_objects_from_a_crash_are_reported_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let r = a
        .put(msg("a@x", "b@x", "real", "x"), occ("bob", "1"))
        .await
        .unwrap();
    // A blob written durably whose index transaction never committed (kill -9 between).
    let ghost = Digest::of(b"ghost");
    let gp = a.blob_path(&ghost).unwrap();
    std::fs::create_dir_all(gp.parent().unwrap()).unwrap();
    std::fs::copy(a.blob_path(&r.digest).unwrap(), &gp).unwrap();
    let rep = a.verify("t").await.unwrap();
    assert_eq!(
        rep.discrepancies,
        vec![Discrepancy::OrphanObject { digest: ghost }]
    );
    assert_eq!(a.stats().await.unwrap().messages, 1);
    // Staging leftovers are not objects.
    std::fs::write(dir.path().join("tmp/.stage-leftover"), b"partial").unwrap();
    assert_eq!(a.verify("t").await.unwrap().discrepancies.len(), 1);
}

#[tokio::test]
async fn merkle_root_per_run_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let mut run1 = Vec::new();
    for i in 0..7 {
        let r = a
            .put(
                msg("a@x", "b@x", &format!("R1 {i}"), "x"),
                run_occ("bob", &format!("r1-{i}"), 10, 1),
            )
            .await
            .unwrap();
        run1.push(r.digest);
    }
    // Same bytes again in the run from another mailbox: one leaf.
    a.put(
        msg("a@x", "b@x", "R1 0", "x"),
        run_occ("carol", "c0", 10, 1),
    )
    .await
    .unwrap();
    let other = a
        .put(msg("a@x", "b@x", "R2", "x"), run_occ("bob", "r2", 10, 2))
        .await
        .unwrap()
        .digest;

    let root = a.merkle_root(10, 1).await.unwrap();
    assert_eq!(root.leaves, 7);
    assert_eq!(
        root.root,
        hex::encode(mailferry_archive::merkle::merkle_root(&run1))
    );
    for d in &run1 {
        let p = a.merkle_proof(d, 10, 1).await.unwrap().unwrap();
        assert!(verify_proof(&p, &root.root));
        assert!(p.path.len() <= 3);
    }
    assert!(a.merkle_proof(&other, 10, 1).await.unwrap().is_none());
    let p2 = a.merkle_proof(&other, 10, 2).await.unwrap().unwrap();
    assert!(!verify_proof(&p2, &root.root));
    let recorded = a.record_run_root(10, 1, "engine").await.unwrap();
    assert_eq!(recorded, root);
    let last = a.events(0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, "run-root");
    assert!(a.verify("t").await.unwrap().ok());
}
