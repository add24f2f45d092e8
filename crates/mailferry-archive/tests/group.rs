//! Group ingest (`Archive::put_group`): the same records, chain and roots as one `put` per
//! message in the same order; duplicates and conflicts inside a group; a failed group
//! leaves nothing of itself committed.

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use mailferry_archive::chain::{self, event_hash};
use mailferry_archive::{Archive, ArchiveError, MessageSource, Occurrence, PutOutcome, SearchQuery};
use sqlx::Executor;

/// An occurrence with a fixed retrieval time, so two archives can be compared field by field.
fn fixed(account: &str, uidl: &str) -> Occurrence {
    Occurrence {
        retrieved_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        ..occ(account, uidl)
    }
}

/// A group exercising every path: new bytes, the same bytes under another key (stored
/// once), the same key again with the same bytes (a rerun of an arrival earlier in the
/// group) and with different bytes (refused), a rerun and a conflict against what was
/// committed before the group, and more new bytes after the conflict.
fn mixed_group() -> Vec<(MessageSource, Occurrence)> {
    let m = |s: &str| msg("alice@example.com", "bob@example.com", s, &format!("body of {s}"));
    vec![
        (m("one").into(), fixed("bob", "U1")),
        (m("one").into(), fixed("carol", "U1")),
        (m("two").into(), fixed("bob", "U2")),
        (m("one").into(), fixed("bob", "U1")),
        (m("other").into(), fixed("bob", "U2")),
        (m("seed").into(), fixed("dan", "U9")),
        (m("changed").into(), fixed("erin", "U9")),
        (m("three").into(), fixed("bob", "U3")),
        (m("seed").into(), fixed("fay", "U9")),
    ]
}

/// Both archives start with the same committed arrivals, so the group meets a rerun and a
/// conflict against rows it did not write.
async fn seeded(dir: &std::path::Path) -> Archive {
    let a = open(dir).await;
    let seed = msg("alice@example.com", "bob@example.com", "seed", "body of seed");
    a.put(seed.clone(), fixed("dan", "U9")).await.unwrap();
    a.put(msg("x@example.com", "y@example.com", "earlier", "e"), fixed("erin", "U9")).await.unwrap();
    a
}

/// An outcome without what legitimately differs between two archives (nothing, today).
fn shape(r: &Result<PutOutcome, ArchiveError>) -> String {
    match r {
        Ok(o) => format!("ok {} {} new={} occ_new={} id={} stored={:?}", o.digest, o.size, o.stored_new, o.occurrence_new, o.occurrence_id, o.stored_size.is_some()),
        Err(ArchiveError::OccurrenceConflict(c)) => format!("conflict {}/{} {} vs {}", c.account, c.uidl, c.existing, c.offered),
        Err(e) => format!("error {e}"),
    }
}

#[tokio::test]
async fn a_group_records_the_same_chain_and_roots_as_puts_one_by_one() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, group) = (seeded(d1.path()).await, seeded(d2.path()).await);

    let mut by_one = Vec::new();
    for (source, occ) in mixed_group() {
        by_one.push(one.put(source, occ).await);
    }
    let by_group = group.put_group(mixed_group()).await.unwrap();
    let shapes = |v: &[Result<PutOutcome, ArchiveError>]| v.iter().map(shape).collect::<Vec<_>>();
    assert_eq!(shapes(&by_group), shapes(&by_one));
    // Spot checks of the paths the group exercised.
    let s = shapes(&by_group);
    assert!(s[0].contains("new=true occ_new=true"), "{}", s[0]);
    assert!(s[1].contains("new=false occ_new=true"), "{}", s[1]);
    assert!(s[3].contains("new=false occ_new=false"), "{}", s[3]);
    assert!(s[4].starts_with("conflict bob/U2"), "{}", s[4]);
    assert!(s[5].contains("occ_new=false"), "{}", s[5]);
    assert!(s[6].starts_with("conflict erin/U9"), "{}", s[6]);

    // The event log: same records in the same order, both chains intact, and the same
    // hashes once the only free field (the wall-clock time of each event) is the same.
    let (e1, e2) = (one.events(0, 1000).await.unwrap(), group.events(0, 1000).await.unwrap());
    assert_eq!(e1.len(), e2.len());
    assert!(chain::walk(&e1).is_empty() && chain::walk(&e2).is_empty());
    let mut prev = chain::GENESIS.to_string();
    for (a, b) in e1.iter().zip(&e2) {
        assert_eq!((a.seq, &a.kind, &a.actor, &a.detail), (b.seq, &b.kind, &b.actor, &b.detail));
        assert_eq!(a.prev_hash, prev);
        // The sequential chain rebuilt with the group's timestamps is the group's chain.
        let h = event_hash(a.seq, &b.at, &a.kind, &a.actor, &a.detail, &b.prev_hash);
        assert_eq!(h, b.hash, "event {}", a.seq);
        prev = a.hash.clone();
    }
    assert_eq!(one.merkle_root(1, 1).await.unwrap(), group.merkle_root(1, 1).await.unwrap());
    let (s1, s2) = (one.stats().await.unwrap(), group.stats().await.unwrap());
    assert_eq!((s1.messages, s1.occurrences, s1.logical_bytes), (s2.messages, s2.occurrences, s2.logical_bytes));
    let (o1, o2) = (one.occurrences_of_run(1, 1).await.unwrap(), group.occurrences_of_run(1, 1).await.unwrap());
    let keys = |v: &[mailferry_archive::OccurrenceRecord]| {
        v.iter().map(|o| (o.id, o.account.clone(), o.uidl.clone(), o.digest, o.event_seq, o.retrieved_at)).collect::<Vec<_>>()
    };
    assert_eq!(keys(&o1), keys(&o2));

    // Everything stored reads back, verifies, and is searchable.
    for r in by_group.iter().flatten() {
        let bytes = group.get(&r.digest).await.unwrap();
        assert_eq!(bytes.len() as u64, r.size);
    }
    assert!(group.verify("test").await.unwrap().ok());
    let hits = group.search(&SearchQuery { subject: Some("three".into()), ..Default::default() }, 10, None).await.unwrap();
    assert_eq!(hits.hits.len(), 1);
}

#[tokio::test]
async fn duplicates_inside_a_group_are_stored_once_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let m = msg("a@x", "b@x", "Dup", "same bytes");
    let out = a
        .put_group(vec![
            (m.clone().into(), occ("bob", "U1")),
            (m.clone().into(), occ("carol", "U1")),
            (m.clone().into(), occ("bob", "U1")),
        ])
        .await
        .unwrap();
    let out: Vec<PutOutcome> = out.into_iter().map(Result::unwrap).collect();
    assert!(out[0].stored_new && out[0].occurrence_new && out[0].stored_size.is_some());
    assert!(!out[1].stored_new && out[1].occurrence_new && out[1].stored_size.is_none());
    // Same key twice: the second is a rerun of the first, pointing at its occurrence.
    assert!(!out[2].stored_new && !out[2].occurrence_new);
    assert_eq!(out[2].occurrence_id, out[0].occurrence_id);
    let s = a.stats().await.unwrap();
    assert_eq!((s.messages, s.occurrences), (1, 2));
    // Two ingest events, none for the rerun.
    assert_eq!(a.events(0, 100).await.unwrap().len(), 2);
    // The whole group again is a rerun of every arrival.
    let again = a.put_group(vec![(m.clone().into(), occ("bob", "U1")), (m.into(), occ("carol", "U1"))]).await.unwrap();
    assert!(again.iter().all(|r| r.as_ref().is_ok_and(|o| !o.occurrence_new && !o.stored_new)));
    assert_eq!(a.events(0, 100).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_conflict_in_the_middle_refuses_that_message_alone() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    a.put(msg("a@x", "b@x", "First", "original"), occ("bob", "U2")).await.unwrap();
    let out = a
        .put_group(vec![
            (msg("a@x", "b@x", "A", "a").into(), occ("bob", "U1")),
            (msg("a@x", "b@x", "First", "changed").into(), occ("bob", "U2")),
            (msg("a@x", "b@x", "C", "c").into(), occ("bob", "U3")),
            // An unreadable source fails alone too.
            (MessageSource::from(dir.path().join("no-such-file")), occ("bob", "U4")),
            (msg("a@x", "b@x", "E", "e").into(), occ("bob", "U5")),
        ])
        .await
        .unwrap();
    assert!(out[0].as_ref().is_ok_and(|o| o.occurrence_new));
    assert!(matches!(&out[1], Err(ArchiveError::OccurrenceConflict(c)) if c.uidl == "U2"));
    assert!(out[2].as_ref().is_ok_and(|o| o.occurrence_new));
    assert!(matches!(&out[3], Err(ArchiveError::Io(_))));
    assert!(out[4].as_ref().is_ok_and(|o| o.occurrence_new));
    assert_eq!(a.stats().await.unwrap().occurrences, 4);
    assert!(chain::walk(&a.events(0, 100).await.unwrap()).is_empty());
    assert!(a.find_occurrence("pop.example.com", "bob", "U4").await.unwrap().is_none());
}

#[tokio::test]
async fn a_failed_group_commits_nothing_of_itself() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    a.put(msg("a@x", "b@x", "Before", "b"), occ("bob", "U0")).await.unwrap();
    a.put(msg("a@x", "b@x", "Taken", "t"), occ("bob", "U9")).await.unwrap();
    let head = a.chain_head().await.unwrap();
    // The index fails on the group's third arrival, after two rows were written in its
    // transaction (an injected fault standing for a full disk or a lost connection).
    raw_db(dir.path())
        .await
        .execute(
            "CREATE TRIGGER boom BEFORE INSERT ON occurrences WHEN NEW.uidl = 'U3' \
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
        )
        .await
        .unwrap();
    let err = a
        .put_group(vec![
            (msg("a@x", "b@x", "A", "a").into(), occ("bob", "U1")),
            (msg("a@x", "b@x", "B", "b").into(), occ("bob", "U2")),
            (msg("a@x", "b@x", "C", "c").into(), occ("bob", "U3")),
            (msg("a@x", "b@x", "Other", "o").into(), occ("bob", "U9")),
            (msg("a@x", "b@x", "D", "d").into(), occ("bob", "U4")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err.error, ArchiveError::Sql(_)), "{}", err.error);
    // Only the conflict decided against committed rows is known; the rest are unknown.
    assert_eq!(err.outcomes.len(), 5);
    assert!(matches!(&err.outcomes[3], Some(Err(ArchiveError::OccurrenceConflict(_)))));
    assert!([0, 1, 2, 4].iter().all(|&i| err.outcomes[i].is_none()));
    // Nothing of the group is in the index: no occurrence, no blob row, no event.
    assert_eq!(a.chain_head().await.unwrap(), head);
    let s = a.stats().await.unwrap();
    assert_eq!((s.messages, s.occurrences), (2, 2));
    for u in ["U1", "U2", "U3", "U4"] {
        assert!(a.find_occurrence("pop.example.com", "bob", u).await.unwrap().is_none());
    }
    // The fault gone, the same arrivals go through (the blobs the failed group wrote are
    // written again and now have rows), and the chain is still one line.
    raw_db(dir.path()).await.execute("DROP TRIGGER boom").await.unwrap();
    let out = a
        .put_group(vec![
            (msg("a@x", "b@x", "A", "a").into(), occ("bob", "U1")),
            (msg("a@x", "b@x", "B", "b").into(), occ("bob", "U2")),
            (msg("a@x", "b@x", "C", "c").into(), occ("bob", "U3")),
            (msg("a@x", "b@x", "D", "d").into(), occ("bob", "U4")),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(|r| r.as_ref().is_ok_and(|o| o.stored_new && o.occurrence_new)));
    assert!(chain::walk(&a.events(0, 100).await.unwrap()).is_empty());
    assert!(a.verify("test").await.unwrap().ok());
}

#[tokio::test]
async fn an_empty_group_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    assert!(a.put_group(Vec::new()).await.unwrap().is_empty());
    assert!(a.chain_head().await.unwrap().is_none());
}

#[tokio::test]
async fn a_group_can_be_ingested_from_a_spawned_task() {
    // The engine runs jobs in spawned tasks: `put_group`'s future must be `Send` there.
    let dir = tempfile::tempdir().unwrap();
    let a = std::sync::Arc::new(open(dir.path()).await);
    let items = vec![(MessageSource::from(msg("a@x", "b@x", "S", "s")), occ("bob", "U1"))];
    let task = tokio::spawn({
        let a = a.clone();
        async move { a.put_group(items).await.map(|v| v.len()).map_err(|e| e.to_string()) }
    });
    assert_eq!(task.await.unwrap(), Ok(1));
}
