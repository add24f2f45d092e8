use super::*;

fn sealer() -> Sealer {
    Sealer::from_hex(&Sealer::generate_hex()).unwrap()
}

fn body(json: serde_json::Value) -> JobBody {
    serde_json::from_value(json).unwrap()
}

fn good() -> serde_json::Value {
    serde_json::json!({
        "source": {"protocol": "pop3", "host": "pop.example.com", "username": "u", "password": "p1"},
        "target": {"protocol": "imap", "host": "imap.example.com", "username": "u", "password": "p2", "flags": ["\\Seen", "$Migrated"]},
        "options": {"delete": "keep"},
    })
}

#[test]
fn defaults_ports_from_security_and_seals_passwords() {
    let spec = validate(body(good()), &ApiConfig::default(), &sealer()).unwrap();
    assert_eq!(spec.source.port, 995);
    let TargetSpec::Imap { port, folder, .. } = &spec.target else { panic!() };
    assert_eq!((*port, folder.as_str()), (993, "INBOX"));
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("\"p1\"") && !json.contains("\"p2\""), "{json}");

    let mut b = good();
    b["source"]["security"] = "starttls".into();
    b["target"]["security"] = "starttls".into();
    let spec = validate(body(b), &ApiConfig::default(), &sealer()).unwrap();
    assert_eq!(spec.source.port, 110);
    assert!(matches!(spec.target, TargetSpec::Imap { port: 143, .. }));
}

#[test]
fn every_problem_is_named() {
    let b = serde_json::json!({
        "source": {"host": " ", "port": 0, "username": "", "password": "a\r\nb"},
        "target": {"protocol": "imap", "host": "h/x", "port": 70000, "username": "u", "password": "p", "flags": ["a b", "\\Recent"]},
        "options": {"delete": "always", "max_message_bytes": 0},
        "labels": {"-bad": "v", "ok": "x\ny"},
    });
    let errs = validate(body(b), &ApiConfig::default(), &sealer()).unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "source.host", "source.port", "source.username", "source.password", "target.host", "target.port",
        "target.flags[0]", "target.flags[1]", "options.delete", "options.max_message_bytes", "labels.-bad", "labels.ok",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    assert!(!format!("{errs:?}").contains("a\r\nb"));
}

#[test]
fn deleted_is_not_a_flag_for_copies() {
    for flag in ["\\Deleted", "\\deleted", "\\DeLeTeD"] {
        let mut b = good();
        b["target"]["flags"] = serde_json::json!(["$Migrated", flag]);
        let errs = validate(body(b), &ApiConfig::default(), &sealer()).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "target.flags[1]");
        assert!(errs[0].message.contains("EXPUNGE"), "{}", errs[0].message);
    }
    let mut b = good();
    b["target"]["flags"] = serde_json::json!(["\\Seen", "\\Flagged", "\\Draft", "\\Answered", "$Label1", "x".repeat(128)]);
    assert!(validate(body(b), &ApiConfig::default(), &sealer()).is_ok());
}

#[test]
fn plaintext_only_to_allowed_hosts_and_archive_targets() {
    let mut b = good();
    b["source"]["security"] = "none".into();
    let errs = validate(body(b.clone()), &ApiConfig::default(), &sealer()).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].is_plaintext() && errs[0].field == "source.security");
    b["source"]["host"] = "127.0.0.1".into();
    assert_eq!(validate(body(b), &ApiConfig::default(), &sealer()).unwrap().source.port, 110);

    let mut b = good();
    b["target"] = serde_json::json!({"protocol": "archive", "archive": "legal"});
    let spec = validate(body(b.clone()), &ApiConfig::default(), &sealer()).unwrap();
    assert!(matches!(&spec.target, TargetSpec::Archive { archive } if archive == "legal"));
    for bad in ["", "../x", ".hidden", "a/b", "x y"] {
        b["target"]["archive"] = bad.into();
        let errs = validate(body(b.clone()), &ApiConfig::default(), &sealer()).unwrap_err();
        assert_eq!(errs[0].field, "target.archive", "{bad:?}");
    }
}

#[test]
fn oauth2_targets_are_validated_and_sealed() {
    let mut b = good();
    b["target"].as_object_mut().unwrap().remove("password");
    b["target"]["oauth2"] = serde_json::json!({
        "refresh_token": "rt-secret-1", "client_id": "cid", "client_secret": "cs-secret-1",
        "token_url": "https://login.example.com/oauth2/token", "scope": "mail offline_access",
    });
    let spec = validate(body(b.clone()), &ApiConfig::default(), &sealer()).unwrap();
    let TargetSpec::Imap { password, auth, oauth2: Some(o), .. } = &spec.target else { panic!("{spec:?}") };
    let OAuth2Spec::RefreshToken { client_id, scope, client_secret, .. } = o.as_ref() else { panic!("{o:?}") };
    assert!(password.is_none() && client_secret.is_some());
    assert_eq!((*auth, client_id.as_str(), scope.as_deref()), (mailferry_model::ImapAuth::Xoauth2, "cid", Some("mail offline_access")));
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("rt-secret-1") && !json.contains("cs-secret-1"), "{json}");

    let mut t = b.clone();
    t["target"]["oauth2"] = serde_json::json!({"access_token": "at-secret-1"});
    let spec = validate(body(t), &ApiConfig::default(), &sealer()).unwrap();
    assert!(matches!(&spec.target, TargetSpec::Imap { oauth2: Some(o), .. } if matches!(**o, OAuth2Spec::AccessToken { .. })));
    assert!(!serde_json::to_string(&spec).unwrap().contains("at-secret-1"));

    // http:// only to hosts on the plaintext allow-list; the loopback default allows it.
    let mut t = b.clone();
    t["target"]["oauth2"]["token_url"] = "http://127.0.0.1:8080/token".into();
    assert!(validate(body(t.clone()), &ApiConfig::default(), &sealer()).is_ok());
    t["target"]["oauth2"]["token_url"] = "http://login.example.com/token".into();
    let errs = validate(body(t), &ApiConfig::default(), &sealer()).unwrap_err();
    assert!(errs[0].is_plaintext() && errs[0].field == "target.oauth2.token_url", "{errs:?}");

    for (patch, field) in [
        (serde_json::json!({"refresh_token": "r", "client_id": "c"}), "target.oauth2.token_url"),
        (serde_json::json!({"refresh_token": "r", "token_url": "https://h/t"}), "target.oauth2.client_id"),
        (serde_json::json!({"refresh_token": "r", "client_id": "c", "token_url": "https://u:p@h/t"}), "target.oauth2.token_url"),
        (serde_json::json!({"refresh_token": "r", "client_id": "c", "token_url": "file:///etc/passwd"}), "target.oauth2.token_url"),
        (serde_json::json!({"access_token": "a", "refresh_token": "r"}), "target.oauth2"),
        (serde_json::json!({}), "target.oauth2"),
        (serde_json::json!({"access_token": "a", "client_id": "c"}), "target.oauth2.client_id"),
        (serde_json::json!({"refresh_token": "r\nx", "client_id": "c", "token_url": "https://h/t"}), "target.oauth2.refresh_token"),
    ] {
        let mut t = b.clone();
        t["target"]["oauth2"] = patch.clone();
        let errs = validate(body(t), &ApiConfig::default(), &sealer()).unwrap_err();
        assert!(errs.iter().any(|e| e.field == field), "{patch}: {field} not in {errs:?}");
        assert!(!format!("{errs:?}").contains("r\nx"));
    }
    let mut t = b.clone();
    t["target"]["password"] = "p".into();
    let errs = validate(body(t), &ApiConfig::default(), &sealer()).unwrap_err();
    assert_eq!(errs[0].field, "target.password");
    let mut t = b;
    t["target"]["auth"] = "login".into();
    let errs = validate(body(t), &ApiConfig::default(), &sealer()).unwrap_err();
    assert_eq!(errs[0].field, "target.auth");
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    for (ptr, extra) in [("", "x"), ("/source", "passwd"), ("/target", "folderz"), ("/options", "dele"), ("/target/oauth2", "tokenurl")] {
        let mut b = good();
        b["target"]["oauth2"] = serde_json::json!({});
        b.pointer_mut(if ptr.is_empty() { "" } else { ptr }).unwrap()[extra] = 1.into();
        let err = serde_json::from_value::<JobBody>(b).unwrap_err().to_string();
        assert!(err.contains(extra), "{err}");
    }
}
