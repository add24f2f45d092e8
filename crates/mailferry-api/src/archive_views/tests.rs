use super::*;

#[test]
fn dates_accept_rfc3339_and_whole_days() {
    let mut errs = Vec::new();
    let q = ArchiveQuery { date_from: Some("2024-03-01".into()), date_to: Some("2024-03-31".into()), ..Default::default() };
    let s = q.to_search("", &mut errs);
    assert!(errs.is_empty());
    assert_eq!(s.date_from.unwrap().to_rfc3339(), "2024-03-01T00:00:00+00:00");
    assert_eq!(s.date_to.unwrap().to_rfc3339(), "2024-04-01T00:00:00+00:00", "the last day is included");
    let q = ArchiveQuery { date_from: Some("yesterday".into()), q: Some("  ".into()), ..Default::default() };
    let s = q.to_search("query.", &mut errs);
    assert_eq!(errs[0].field, "query.date_from");
    assert_eq!(s.text, None, "blank fields are absent");
}

#[test]
fn hold_scopes_read_as_documented() {
    let s: HoldScopeBody = serde_json::from_str("\"archive\"").unwrap();
    assert!(matches!(s, HoldScopeBody::Archive));
    let s: HoldScopeBody = serde_json::from_str(r#"{"account": "alice"}"#).unwrap();
    assert!(matches!(s, HoldScopeBody::Account(a) if a == "alice"));
    let s: HoldScopeBody = serde_json::from_str(r#"{"query": {"subject": "merger"}}"#).unwrap();
    assert!(matches!(s, HoldScopeBody::Query(q) if q.subject.as_deref() == Some("merger")));
    assert!(serde_json::from_str::<HoldScopeBody>(r#"{"query": {"subjekt": "x"}}"#).is_err());
}
