//! Retention, legal hold, purge and tombstones; search; export; reindex.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::*;
use mailferry_archive::{
    mboxrd_split, ArchiveError, BlobState, Digest, ExportFormat, HoldScope, SearchQuery,
};

#[tokio::test]
async fn purge_respects_retention_holds_and_leaves_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let plain = a
        .put(msg("a@x", "b@x", "Plain", "x"), occ("bob", "1"))
        .await
        .unwrap()
        .digest;
    let merger = a
        .put(msg("a@x", "b@x", "Merger talks", "x"), occ("bob", "2"))
        .await
        .unwrap()
        .digest;
    let carol = a
        .put(msg("a@x", "c@x", "For carol", "x"), occ("carol", "1"))
        .await
        .unwrap()
        .digest;
    let shared = msg("a@x", "b@x", "Shared", "x");
    let shared_d = a.put(shared.clone(), occ("bob", "3")).await.unwrap().digest;
    a.put(shared, occ("dave", "1")).await.unwrap();
    // dave's copy arrived recently; everything else long ago.
    let mut db = raw_db(dir.path()).await;
    let old = "2020-01-01T00:00:00.000Z";
    sqlx::query("UPDATE occurrences SET ingested_at = ? WHERE account != 'dave'")
        .bind(old)
        .execute(&mut db)
        .await
        .unwrap();

    let now = Utc::now();
    // No retention policy: nothing expires.
    assert!(a
        .purge_expired_as_of(now, "admin", "retention")
        .await
        .unwrap()
        .purged
        .is_empty());
    a.set_retention(Some(365), "admin").await.unwrap();
    let all_hold = a
        .place_hold(HoldScope::Archive, "litigation", "counsel")
        .await
        .unwrap();
    let r = a
        .purge_expired_as_of(now, "admin", "retention")
        .await
        .unwrap();
    assert!(r.purged.is_empty());
    assert_eq!(r.held, 3);
    a.release_hold(all_hold.id, "counsel").await.unwrap();
    assert!(matches!(
        a.release_hold(all_hold.id, "counsel").await,
        Err(ArchiveError::HoldNotFound(_))
    ));

    a.place_hold(HoldScope::Account("carol".into()), "custodian", "counsel")
        .await
        .unwrap();
    let q = a
        .place_hold(
            HoldScope::Query(Box::new(SearchQuery {
                subject: Some("merger".into()),
                ..Default::default()
            })),
            "deal",
            "counsel",
        )
        .await
        .unwrap();
    let r = a
        .purge_expired_as_of(now, "admin", "retention 365d")
        .await
        .unwrap();
    assert_eq!(
        r.purged,
        vec![plain],
        "only the unheld, fully expired message goes"
    );
    assert_eq!(r.held, 2);
    // The shared blob has one fresh occurrence: kept.
    assert_eq!(a.meta(&shared_d).await.unwrap().state, BlobState::Stored);

    let rec = a.meta(&plain).await.unwrap();
    assert_eq!(rec.state, BlobState::Purged);
    assert!(rec.meta.is_none());
    assert_eq!(rec.occurrences.len(), 1, "provenance stays");
    let t = rec.tombstone.unwrap();
    assert_eq!(
        (t.reason.as_str(), t.purged_by.as_str()),
        ("retention 365d", "admin")
    );
    assert!(matches!(a.get(&plain).await, Err(ArchiveError::Purged(_))));
    assert!(!a.blob_path(&plain).unwrap().exists());
    assert_eq!(a.tombstones().await.unwrap().len(), 1);
    let rep = a.verify("t").await.unwrap();
    assert!(rep.ok(), "{:?}", rep.discrepancies);
    assert_eq!(
        a.search(
            &SearchQuery {
                subject: Some("plain".into()),
                ..Default::default()
            },
            10,
            None
        )
        .await
        .unwrap()
        .total,
        0
    );

    // Release the query hold: the merger message goes; carol's stays held.
    a.release_hold(q.id, "counsel").await.unwrap();
    let r = a
        .purge_expired_as_of(now, "admin", "retention")
        .await
        .unwrap();
    assert_eq!(r.purged, vec![merger]);
    assert_eq!(a.meta(&carol).await.unwrap().state, BlobState::Stored);
    // Far in the future even the fresh occurrence expires.
    let r = a
        .purge_expired_as_of(now + Duration::days(400), "admin", "retention")
        .await
        .unwrap();
    assert_eq!(r.purged, vec![shared_d]);
    let kinds: Vec<String> = a
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for k in ["policy-change", "hold", "release", "purge"] {
        assert!(kinds.iter().any(|x| x == k), "{k} logged");
    }
    assert!(a.verify("t").await.unwrap().ok());
}

fn rich(i: usize) -> Vec<u8> {
    let att = if i.is_multiple_of(2) {
        "--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"contract-draft.pdf\"\r\n\r\nJVBERi0=\r\n"
    } else {
        ""
    };
    format!(
        "From: Sender {i} <sender{i}@corp.example>\r\nTo: rcpt{i}@corp.example\r\nCc: boss@corp.example\r\n\
Subject: Report number {i}\r\nDate: {}\r\nMessage-ID: <id-{i}@corp.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
Body mentions pineapple{i} and {}.\r\n{att}--b--\r\n{}",
        Utc.with_ymd_and_hms(2024, 1, 1 + i as u32, 12, 0, 0).unwrap().to_rfc2822(),
        if i == 3 { "zebra" } else { "nothing" },
        "padding\r\n".repeat(i * 10),
    )
    .into_bytes()
}

#[tokio::test]
async fn search_finds_by_each_field_and_pages_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let mut ds = Vec::new();
    for i in 0..10 {
        ds.push(
            a.put(
                rich(i),
                occ(if i < 5 { "alice" } else { "bob" }, &i.to_string()),
            )
            .await
            .unwrap(),
        );
    }
    let count = |q: SearchQuery| {
        let a = &a;
        async move { a.search(&q, 100, None).await.unwrap().total }
    };
    let q = SearchQuery::default;
    assert_eq!(count(q()).await, 10);
    assert_eq!(
        count(SearchQuery {
            from: Some("sender3@corp.example".into()),
            ..q()
        })
        .await,
        1
    );
    assert_eq!(
        count(SearchQuery {
            to: Some("rcpt4@corp.example".into()),
            ..q()
        })
        .await,
        1
    );
    assert_eq!(
        count(SearchQuery {
            cc: Some("boss@corp.example".into()),
            ..q()
        })
        .await,
        10
    );
    assert_eq!(
        count(SearchQuery {
            subject: Some("report number 7".into()),
            ..q()
        })
        .await,
        1
    );
    assert_eq!(
        count(SearchQuery {
            body: Some("zebra".into()),
            ..q()
        })
        .await,
        1
    );
    assert_eq!(
        count(SearchQuery {
            attachment: Some("contract-draft.pdf".into()),
            ..q()
        })
        .await,
        5
    );
    assert_eq!(
        count(SearchQuery {
            has_attachment: Some(true),
            ..q()
        })
        .await,
        5
    );
    assert_eq!(
        count(SearchQuery {
            has_attachment: Some(false),
            ..q()
        })
        .await,
        5
    );
    assert_eq!(
        count(SearchQuery {
            account: Some("bob".into()),
            ..q()
        })
        .await,
        5
    );
    assert_eq!(
        count(SearchQuery {
            message_id: Some("<id-6@corp.example>".into()),
            ..q()
        })
        .await,
        1
    );
    assert_eq!(
        count(SearchQuery {
            text: Some("pineapple2 OR zebra".into()),
            ..q()
        })
        .await,
        2
    );
    let d = |day| Some(Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap());
    assert_eq!(
        count(SearchQuery {
            date_from: d(3),
            date_to: d(6),
            ..q()
        })
        .await,
        3
    );
    let (s4, s6) = (ds[4].size, ds[6].size);
    assert_eq!(
        count(SearchQuery {
            size_min: Some(s4),
            size_max: Some(s6),
            ..q()
        })
        .await,
        3
    );
    assert_eq!(
        count(SearchQuery {
            account: Some("alice".into()),
            has_attachment: Some(true),
            ..q()
        })
        .await,
        3
    );
    assert!(matches!(
        a.search(
            &SearchQuery {
                text: Some("AND AND (".into()),
                ..q()
            },
            10,
            None
        )
        .await,
        Err(ArchiveError::Query(_))
    ));

    // Pagination: pages of 3, in ingest order, no repeats, cursor ends.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let p = a.search(&q(), 3, cursor.as_deref()).await.unwrap();
        assert_eq!(p.total, 10);
        seen.extend(p.hits.iter().map(|h| h.occurrence.digest));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ds.iter().map(|r| r.digest).collect::<Vec<_>>());
    let hit = &a
        .search(
            &SearchQuery {
                body: Some("zebra".into()),
                ..q()
            },
            1,
            None,
        )
        .await
        .unwrap()
        .hits[0];
    assert_eq!(
        hit.meta.as_ref().unwrap().subject.as_deref(),
        Some("Report number 3")
    );
    assert_eq!(hit.occurrence.account, "alice");

    // The index is derived: wipe and rebuild it from the blobs.
    a.close().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("search")).unwrap();
    let a = open(dir.path()).await; // catches up on open
    assert_eq!(a.search(&q(), 100, None).await.unwrap().total, 10);
    assert_eq!(a.reindex().await.unwrap(), 10);
    assert_eq!(
        a.search(
            &SearchQuery {
                body: Some("zebra".into()),
                ..q()
            },
            10,
            None
        )
        .await
        .unwrap()
        .total,
        1
    );
}

#[tokio::test]
async fn exports_round_trip_with_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let mut originals = Vec::new();
    for i in 0..4 {
        let mut m = rich(i);
        m.extend_from_slice(b"From the desk of nobody\r\n>From quoted\r\n");
        a.put(m.clone(), occ("alice", &i.to_string()))
            .await
            .unwrap();
        originals.push(m);
    }
    // A duplicate in another mailbox is exported once.
    a.put(originals[0].clone(), occ("bob", "0")).await.unwrap();

    let mbox = dir.path().join("out.mbox");
    let rep = a
        .export(
            &SearchQuery::default(),
            ExportFormat::Mbox,
            &mbox,
            "counsel",
        )
        .await
        .unwrap();
    assert_eq!(rep.messages, 4);
    let back = mboxrd_split(&std::fs::read(&mbox).unwrap());
    assert_eq!(back, originals);
    let side = std::fs::read_to_string(dir.path().join("out.mbox.sha256")).unwrap();
    assert_eq!(side.lines().count(), 4);

    let zip_path = dir.path().join("out.zip");
    let rep = a
        .export(
            &SearchQuery {
                account: Some("alice".into()),
                ..Default::default()
            },
            ExportFormat::EmlZip,
            &zip_path,
            "counsel",
        )
        .await
        .unwrap();
    assert_eq!(rep.messages, 4);
    let mut z = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let manifest = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut z.by_name("manifest.sha256").unwrap(), &mut s).unwrap();
        s
    };
    assert_eq!(manifest.lines().count(), 4);
    for line in manifest.lines() {
        let (digest, name) = line.split_once("  ").unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut z.by_name(name).unwrap(), &mut bytes).unwrap();
        assert_eq!(Digest::of(&bytes).to_hex(), digest);
    }
    assert!(
        a.events(0, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == "export")
            .count()
            == 2
    );

    // A standard tool reads the mbox back: Python's mailbox module, when python3 is here.
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok()
    {
        let script = "import mailbox,sys\nm=mailbox.mbox(sys.argv[1])\nprint(len(m))\nfor x in m: print(x['Subject'])";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&mbox)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "4",
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..4 {
            assert_eq!(lines[i + 1], format!("Report number {i}"));
        }
    }
}
