use proptest::prelude::*;
use secrecy::ExposeSecret;

use super::csv::{csv_column, parse_csv, parse_csv_with, Defaults, SourceServer, TargetServer, ARCHIVE_MAILBOX_LABEL};
use super::*;
use crate::spec::TargetBody;

fn m365() -> Defaults {
    Defaults::parse(Some("pop3s://pop.example.com"), Some("imaps://imap.example.com:1993/Migrated")).unwrap()
}

#[test]
fn csv_aliases_semicolons_and_row_errors() {
    let csv = "\u{feff}Host1;User1;Password1;host2;user2;password2;labels\n\
               pop.example.com;alice; pass with spaces ;imap.example.com;alice;p2;\"team=a;wave=1\"\n\
               \n\
               pop.example.com;bob;p;imap.example.com;bob;p2;bad\n";
    let rows = parse_csv(csv.as_bytes()).unwrap();
    assert_eq!(rows.len(), 2);
    let first = rows[0].as_ref().unwrap();
    assert_eq!(first.source.password.as_ref().unwrap().expose_secret(), " pass with spaces ");
    assert_eq!(first.labels.get("wave").map(String::as_str), Some("1"));
    let errs = rows[1].as_ref().unwrap_err();
    assert_eq!(errs[0].field, "labels");
}

#[test]
fn csv_header_problems_are_reported_together() {
    let Err(ApiError::Validation { errors, .. }) = parse_csv(b"source_host,source_host,colour\nx,y,z\n") else {
        panic!("expected a header error")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"source_host") && fields.contains(&"colour") && fields.contains(&"target_password"), "{fields:?}");
    let colour = errors.iter().find(|e| e.field == "colour").unwrap();
    assert!(colour.message.contains("unknown column \"colour\""), "{}", colour.message);
}

#[test]
fn json_fields_map_to_csv_columns() {
    assert_eq!(csv_column("source.username"), "source_user");
    assert_eq!(csv_column("target.port"), "target_port");
    assert_eq!(csv_column("options.delete"), "delete");
    assert_eq!(csv_column("options.max_message_bytes"), "max_message_bytes");
    assert_eq!(csv_column("target.flags[1]"), "target_flags");
    assert_eq!(csv_column("target.archive"), "target_archive");
    assert_eq!(csv_column("source.tls_pin"), "source_tls_pin");
    assert_eq!(csv_column("labels.x"), "labels");
}

#[test]
fn batch_servers_parse_and_refuse_credentials() {
    let d = m365();
    assert_eq!(d.source, Some(SourceServer { host: "pop.example.com".into(), port: 995, security: mailferry_model::Security::Tls }));
    assert_eq!(
        d.target,
        Some(TargetServer::Imap { host: "imap.example.com".into(), port: 1993, security: mailferry_model::Security::Tls, folder: Some("Migrated".into()) })
    );
    let d = Defaults::parse(Some("pop3://[::1]:1110"), Some("archive:legal")).unwrap();
    assert_eq!(d.source.unwrap().security, mailferry_model::Security::Starttls);
    assert_eq!(d.target, Some(TargetServer::Archive("legal".into())));
    for (source, target, field) in [
        (Some("pop3s://u:p@pop.example.com"), None, "source"),
        (Some("imaps://pop.example.com"), None, "source"),
        (Some("pop3s://pop.example.com/INBOX"), None, "source"),
        (None, Some("pop3s://imap.example.com"), "target"),
        (None, Some("not a url"), "target"),
        (None, Some("archive:"), "target"),
    ] {
        let errs = Defaults::parse(source, target).unwrap_err();
        assert_eq!(errs[0].field, field, "{source:?} {target:?}");
        assert!(!errs[0].message.contains(":p@"), "a password is never echoed: {}", errs[0].message);
    }
}

#[test]
fn microsoft_365_header_with_the_servers_given_once() {
    let csv = "EmailAddress,UserName,Password,Target Password\n\
               alice@example.com,alice,pop-1,imap-1\n\
               bob@example.com,bob,pop-2,imap-2\n";
    let batch = parse_csv_with(csv.as_bytes(), &m365()).unwrap();
    assert_eq!(batch.rows.len(), 2);
    let (bob, syntax) = batch.rows[1].as_ref().unwrap();
    assert!(syntax.is_empty(), "{syntax:?}");
    assert_eq!((bob.source.host.as_deref(), bob.source.port), (Some("pop.example.com"), Some(995)));
    assert_eq!(bob.source.username.as_deref(), Some("bob"));
    assert_eq!(bob.source.password.as_ref().unwrap().expose_secret(), "pop-2");
    let TargetBody::Imap(t) = &bob.target else { panic!("an IMAP target") };
    assert_eq!((t.host.as_deref(), t.port, t.folder.as_deref()), (Some("imap.example.com"), Some(1993), Some("Migrated")));
    assert_eq!(t.username.as_deref(), Some("bob@example.com"));
    assert_eq!(t.password.as_ref().unwrap().expose_secret(), "imap-2");
    // Problems with values the batch gave are named by its parameter, others by the file's column.
    assert_eq!(batch.field_name(0, "source.host"), "source");
    assert_eq!(batch.field_name(0, "target.username"), "EmailAddress");
    assert_eq!(batch.field_name(0, "source.password"), "Password");

    // The bare Microsoft 365 file names no destination password: a header error saying so.
    let Err(ApiError::Validation { errors, .. }) = parse_csv_with(b"EmailAddress,UserName,Password\na@x,a,p\n", &m365()) else {
        panic!("expected a header error")
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "target_password");
    assert!(errors[0].message.contains("archive:NAME"), "{}", errors[0].message);
    // Without the batch's servers, the hosts are missing columns.
    let Err(ApiError::Validation { errors, .. }) = parse_csv(b"EmailAddress,UserName,Password,target_password\na@x,a,p,q\n") else {
        panic!("expected a header error")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["source_host", "target_host"]);
}

#[test]
fn microsoft_365_file_into_an_archive() {
    let d = Defaults::parse(Some("pop3s://pop.example.com"), Some("archive:legal")).unwrap();
    let rows = parse_csv_with(b"emailaddress;username;password\nann@example.com;ann;pw\n", &d).unwrap().rows;
    let (ann, _) = rows[0].as_ref().unwrap();
    let TargetBody::Archive(a) = &ann.target else { panic!("an archive target") };
    assert_eq!(a.archive.as_deref(), Some("legal"));
    assert_eq!(ann.labels.get(ARCHIVE_MAILBOX_LABEL).map(String::as_str), Some("ann@example.com"));
}

#[test]
fn new_columns_parse_and_bad_cells_are_row_errors() {
    let header = "source_host,source_user,source_password,target_kind,target_archive,target_host,target_user,target_password,\
                  flags,delete_policy,dry_run,max_message_size,labels";
    let csv = format!(
        "{header}\n\
         pop.example.com,a,p,imap,,imap.example.com,a,q,\\Seen $Migrated,after-verified,yes,25M,wave=1\n\
         pop.example.com,b,p,archive,legal,,,,,keep,0,1024,\n\
         pop.example.com,c,p,ftp,,imap.example.com,c,q,,,maybe,lots,\n\
         pop.example.com,d,p,archive,legal,imap.example.com,,,,,,,\n"
    );
    let rows = parse_csv(csv.as_bytes()).unwrap();
    let a = rows[0].as_ref().unwrap();
    let TargetBody::Imap(t) = &a.target else { panic!("an IMAP target") };
    assert_eq!(t.flags.as_deref(), Some(&["\\Seen".to_owned(), "$Migrated".to_owned()][..]));
    assert_eq!((a.options.delete.as_deref(), a.options.dry_run, a.options.max_message_bytes), (Some("after-verified"), Some(true), Some(25 << 20)));
    let b = rows[1].as_ref().unwrap();
    assert!(matches!(&b.target, TargetBody::Archive(x) if x.archive.as_deref() == Some("legal")));
    assert_eq!((b.options.dry_run, b.options.max_message_bytes), (Some(false), Some(1024)));
    let fields: Vec<&str> = rows[2].as_ref().unwrap_err().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["dry_run", "max_message_bytes", "target_kind"]);
    let fields: Vec<&str> = rows[3].as_ref().unwrap_err().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["target_host"], "an IMAP column on an archive row");
}

/// Rows made of cells a spreadsheet may hold: names of every spelling, and junk.
fn cell() -> impl Strategy<Value = String> {
    let names = [
        "", "EmailAddress", "UserName", "Password", "host1", "target_kind", "archive", "imap", "max_message_size", "25M",
        "dry_run", "yes", "flags", "\\Seen", "labels", "k=v;x", "source_tls_pin", "sha256:00", "\"a;b\"",
    ];
    prop_oneof![
        proptest::sample::select(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        "[a-zA-Z0-9 =;:@.\\\\$\"\u{e9}\u{1F600}-]{0,12}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes: an answer, never a panic.
    #[test]
    fn csv_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_csv_with(&bytes, &m365());
        let _ = parse_csv(&bytes);
    }

    /// Header-shaped input of every spelling: every row is a job body or says why not, and
    /// every problem of a row is named by a column of the header or by a batch parameter.
    #[test]
    fn csv_rows_always_answer(rows in proptest::collection::vec(proptest::collection::vec(cell(), 1..8), 1..6), sep in prop_oneof![Just(','), Just(';')]) {
        let text: String = rows.iter().map(|r| r.join(&sep.to_string()) + "\n").collect();
        for defaults in [Defaults::default(), m365()] {
            if let Ok(batch) = parse_csv_with(text.as_bytes(), &defaults) {
                for (i, row) in batch.rows.iter().enumerate() {
                    let errs = match row {
                        Err(errs) => {
                            prop_assert!(!errs.is_empty(), "an unreadable row says why");
                            errs
                        }
                        Ok((_, syntax)) => syntax,
                    };
                    for e in errs {
                        let name = batch.field_name(i, &e.field);
                        prop_assert!(e.field.is_empty() || !name.is_empty());
                    }
                }
            }
        }
    }
}
