//! TLS for legacy hosts, still verified (issue 16): a lab Dovecot presenting one
//! self-signed `CA:TRUE` certificate (what `openssl req -x509` makes), reached with a pin
//! (of the certificate or of its key), with a CA file holding that very certificate, and
//! refused, with the certificate named, before any credential is sent. The fingerprints
//! are taken with the `openssl` command, as an admin would.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::server::*;
use crate::common::*;
use mailferry_tests::LabCert;
use serde_json::json;
use sha2::{Digest, Sha256};

fn self_signed_lab() -> Lab {
    let dovecot = Dovecot::start_with_cert(LabOptions::default(), LabCert::SelfSignedCa);
    dovecot.add_user("src", SRC_PW);
    dovecot.add_user("dst", DST_PW);
    Lab { dovecot, state_dir: tempfile::tempdir().unwrap() }
}

fn server_cert_file(lab: &Lab) -> PathBuf {
    lab.dovecot.dir().join("ssl/cert.pem")
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command (Debian: openssl, pulled in by dovecot-core's ssl-cert)");
    child.stdin.take().unwrap().write_all(input.unwrap_or_default()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `openssl x509 -noout -fingerprint -sha256` as printed (`AB:CD:…`), made a pin.
fn cert_pin_as_openssl_prints_it(pem: &Path) -> String {
    let out = String::from_utf8(openssl(&["x509", "-in", pem.to_str().unwrap(), "-noout", "-fingerprint", "-sha256"], None)).unwrap();
    let hex = out.trim().rsplit('=').next().unwrap().to_owned();
    assert!(hex.contains(':'), "{out}");
    format!("sha256:{hex}")
}

/// SHA-256 of the certificate's public key (SubjectPublicKeyInfo, DER), as
/// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum` gives it.
fn spki_pin(pem: &Path) -> String {
    let pubkey = openssl(&["x509", "-in", pem.to_str().unwrap(), "-pubkey", "-noout"], None);
    let der = openssl(&["pkey", "-pubin", "-outform", "DER"], Some(&pubkey));
    hex_pin(&Sha256::digest(&der))
}

fn hex_pin(digest: &[u8]) -> String {
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The lower-case `sha256:…` of the certificate DER, the form error messages print.
fn cert_pin(pem: &Path) -> String {
    let der = openssl(&["x509", "-in", pem.to_str().unwrap(), "-outform", "DER"], None);
    hex_pin(&Sha256::digest(&der))
}

/// `mailferry migrate FROM TO ARGS` with no --ca-file and no --insecure unless given.
fn migrate(lab: &Lab, from: &str, to: &str, args: &[&str]) -> Run {
    let out = Command::new(bin())
        .args(["migrate", "--from", from, "--to", to])
        .args(args)
        .arg("--state")
        .arg(lab.state())
        .arg("--json")
        .args(["--from-password-env", "MF_SRC_PW", "--to-password-env", "MF_DST_PW"])
        .env("MF_SRC_PW", SRC_PW)
        .env("MF_DST_PW", DST_PW)
        .output()
        .unwrap();
    Run::from(out)
}

#[test]
fn a_pinned_certificate_or_key_migrates_over_tls_and_stls_without_ca_file_or_insecure() {
    let lab = self_signed_lab();
    lab.dovecot.seed("src", &[b"Subject: one\r\n\r\nx\r\n".to_vec(), b"Subject: two\r\n\r\ny\r\n".to_vec()]);
    let pem = server_cert_file(&lab);
    let (cert, spki) = (cert_pin_as_openssl_prints_it(&pem), spki_pin(&pem));
    assert_ne!(cert_pin(&pem), spki);

    // Unpinned, the self-signed certificate is refused (the control).
    let refused = migrate(&lab, &lab.source_url(), &lab.to_tls("INBOX"), &[]);
    refused.assert_code(1);
    assert!(refused.stderr.contains(&cert_pin(&pem)), "the refusal names the fingerprint: {}", refused.stderr);

    // pop3s + imaps: the certificate's fingerprint (openssl's colon form) and the key's.
    let run = migrate(&lab, &lab.source_url(), &lab.to_tls("INBOX"), &["--from-tls-pin", &cert, "--to-tls-pin", &spki]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 2);
    assert_eq!(lab.dst().len(), 2);

    // pop3 + STLS and imap + STARTTLS, the pins swapped.
    lab.dovecot.seed("src", &[b"Subject: three\r\n\r\nz\r\n".to_vec()]);
    let from = format!("pop3://src@127.0.0.1:{}", lab.dovecot.pop3_port());
    let to = format!("imap://dst@127.0.0.1:{}/INBOX", lab.dovecot.imap_port());
    let run = migrate(&lab, &from, &to, &["--from-tls-pin", &spki, "--to-tls-pin", &cert.to_lowercase()]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 1);
    assert_eq!(lab.dst().len(), 3);
}

#[test]
fn a_wrong_pin_is_refused_in_the_handshake_naming_the_certificate() {
    let lab = self_signed_lab();
    lab.dovecot.seed("src", &[b"Subject: one\r\n\r\nx\r\n".to_vec()]);
    let pem = server_cert_file(&lab);
    let wrong = hex_pin(&Sha256::digest(b"some other certificate"));
    let run = migrate(&lab, &lab.source_url(), &lab.to_tls("INBOX"), &["--from-tls-pin", &wrong, "--to-tls-pin", &spki_pin(&pem)]);
    run.assert_code(1);
    for what in [
        format!("does not match the pin {wrong}"),
        "subject \"CN=127.0.0.1\"".to_owned(),
        "valid from ".to_owned(),
        format!("certificate fingerprint {}", cert_pin(&pem)),
        format!("public key (SPKI) fingerprint {}", spki_pin(&pem)),
    ] {
        assert!(run.stderr.contains(&what), "names {what:?}: {}", run.stderr);
    }
    assert!(!run.stderr.contains("OtherError"), "{}", run.stderr);
    assert_eq!(lab.dst().len(), 0);
    // Dovecot saw the TLS handshake fail and no login attempt.
    let log = wait_for_log(&lab, "pop3-login");
    assert!(log.contains("no auth attempts"), "{log}");
    assert!(!log.contains("user=<src>"), "{log}");
}

/// The Dovecot log once it mentions `what` (login processes log as they finish).
fn wait_for_log(lab: &Lab, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = lab.dovecot.log();
        if log.contains(what) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scripted POP3S server presenting a self-signed certificate: it writes down every line
/// the client sends once the handshake is done, and refuses PASS.
struct FakePop3s {
    port: u16,
    cert_pin: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakePop3s {
    fn start() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "fake legacy pop3");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_pin = hex_pin(&Sha256::digest(cert.der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let conn = rustls::ServerConnection::new(Arc::new(config.clone())).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                if let Err(e) = tls.write_all(b"+OK fake legacy POP3 ready\r\n") {
                    log.lock().unwrap().push(format!("(handshake failed: {e})"));
                    continue;
                }
                let mut reader = BufReader::new(tls);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let cmd = line.trim_end().to_owned();
                    line.clear();
                    log.lock().unwrap().push(cmd.clone());
                    let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "CAPA" => b"+OK\r\nUSER\r\n.\r\n",
                        "USER" => b"+OK\r\n",
                        "PASS" => b"-ERR [AUTH] the fake refuses every password\r\n",
                        "QUIT" => b"+OK\r\n",
                        _ => b"-ERR\r\n",
                    };
                    if reader.get_mut().write_all(reply).is_err() || verb == "QUIT" {
                        break;
                    }
                }
            }
        });
        Self { port, cert_pin, seen }
    }

    fn lines(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn a_wrong_pin_sends_no_credential_to_a_scripted_server() {
    let lab = self_signed_lab();
    let fake = FakePop3s::start();
    let from = format!("pop3s://src@127.0.0.1:{}", fake.port);
    let to_pin = spki_pin(&server_cert_file(&lab));
    let wrong = hex_pin(&Sha256::digest(b"not the fake's certificate"));

    let run = migrate(&lab, &from, &lab.to_tls("INBOX"), &["--from-tls-pin", &wrong, "--to-tls-pin", &to_pin]);
    run.assert_code(1);
    assert!(run.stderr.contains(&fake.cert_pin) && run.stderr.contains("CN=fake legacy pop3"), "{}", run.stderr);
    let lines = fake.lines();
    assert_eq!(lines.len(), 1, "one connection, nothing said in it: {lines:?}");
    assert!(lines[0].starts_with("(handshake failed"), "{lines:?}");

    // The control: with the right pin the same client does log in, so the fake would
    // have seen credentials had the wrong pin let them through.
    let run = migrate(&lab, &from, &lab.to_tls("INBOX"), &["--from-tls-pin", &fake.cert_pin, "--to-tls-pin", &to_pin]);
    run.assert_code(1);
    let lines = fake.lines();
    assert!(lines.iter().any(|l| l == "USER src"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("PASS ")), "{lines:?}");
}

#[test]
fn a_ca_file_holding_the_self_signed_certificate_is_trusted_as_that_certificate() {
    let lab = self_signed_lab();
    lab.dovecot.seed("src", &[b"Subject: one\r\n\r\nx\r\n".to_vec()]);
    let ca = lab.dovecot.ca_file();
    assert_eq!(std::fs::read(&ca).unwrap(), std::fs::read(server_cert_file(&lab)).unwrap(), "the CA file is the server's own certificate");
    let ca = ca.to_str().unwrap();
    let text = String::from_utf8(openssl(&["x509", "-in", ca, "-noout", "-text"], None)).unwrap();
    assert!(text.contains("CA:TRUE") && !text.contains("Subject Alternative Name"), "like openssl req -x509: {text}");

    let run = migrate(&lab, &lab.source_url(), &lab.to_tls("INBOX"), &["--ca-file", ca]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 1);

    // The host name still counts: the certificate names 127.0.0.1, not localhost.
    let from = format!("pop3s://src@localhost:{}", lab.dovecot.pop3s_port());
    let run = migrate(&lab, &from, &lab.to_tls("INBOX"), &["--ca-file", ca]);
    run.assert_code(1);
    assert!(run.stderr.contains("common name is not \"localhost\""), "{}", run.stderr);
    assert!(run.stderr.contains(&cert_pin(&server_cert_file(&lab))), "{}", run.stderr);
}

#[test]
fn malformed_pins_are_usage_errors() {
    let lab = self_signed_lab();
    for bad in ["sha1:00", "sha256:xyz", "3a5f", &format!("sha256:{}", "ab".repeat(33))] {
        let run = migrate(&lab, &lab.source_url(), &lab.to_tls("INBOX"), &["--from-tls-pin", bad]);
        run.assert_code(2);
        assert!(run.stderr.contains("sha256: followed by 64 hex digits"), "{bad}: {}", run.stderr);
    }
    let good = hex_pin(&[0u8; 32]);
    let run = migrate(&lab, &lab.source_url(), "archive:pins", &["--to-tls-pin", &good]);
    run.assert_code(2);
    assert!(run.stderr.contains("--to-tls-pin applies to IMAP destinations only"), "{}", run.stderr);
}

#[test]
fn a_server_speaking_only_tls_1_1_is_named_as_such() {
    let lab = self_signed_lab();
    let dir = lab.dovecot.dir().join("ssl");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let from = format!("pop3s://src@127.0.0.1:{port}");
    let run = migrate(&lab, &from, &lab.to_tls("INBOX"), &["--insecure"]);
    let _ = server.kill();
    let _ = server.wait();
    run.assert_code(1);
    assert!(run.stderr.contains("TLS 1.1 or older") && run.stderr.contains("Legacy TLS"), "{}", run.stderr);
}

#[tokio::test]
async fn api_jobs_take_pins_per_endpoint() {
    let lab = self_signed_lab();
    lab.dovecot.seed("src", &[b"Subject: api\r\n\r\nx\r\n".to_vec()]);
    // The service trusts some other certificate only: the pins alone reach the lab.
    let other = tempfile::NamedTempFile::new().unwrap();
    let params = rcgen::CertificateParams::new(vec!["elsewhere.example".to_string()]).unwrap();
    std::fs::write(other.path(), params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()).unwrap();
    let ca_env = ("MAILFERRY_SECURITY__CA_FILE", other.path().to_str().unwrap());
    let server = Server::start(&lab.dovecot, None, &[ca_env], &[]);
    let api = server.client();
    let pem = server_cert_file(&lab);

    let mut body = job_body(&lab.dovecot, "src", "dst", "keep");
    body["source"]["tls_pin"] = json!("sha256:not-hex");
    body["target"]["tls_pin"] = json!("md5:00");
    let (status, problem, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("source.tls_pin") && text.contains("target.tls_pin"), "{problem}");

    // A pin needs TLS: there is no certificate on a plaintext connection.
    body["source"]["tls_pin"] = json!(spki_pin(&pem));
    body["source"]["security"] = json!("none");
    body["target"]["tls_pin"] = json!(spki_pin(&pem));
    let (status, _, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("source.tls_pin needs TLS") && !text.contains("target.tls_pin"), "{text}");

    body["source"]["security"] = json!("tls");
    body["source"]["tls_pin"] = json!(cert_pin_as_openssl_prints_it(&pem));
    body["target"]["tls_pin"] = json!(spki_pin(&pem));
    let (status, job, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["source"]["tls_pin"], json!(cert_pin(&pem)), "{done}");
    assert_eq!(lab.dst().len(), 1);

    // Without pins the same job fails, and says which certificate it met.
    let mut body = job_body(&lab.dovecot, "src", "dst", "keep");
    body["labels"] = json!({"wave": "2"});
    let (_, job, text) = api.post("/api/v1/jobs", &body).await;
    let id = job["id"].as_i64().unwrap_or_else(|| panic!("{text}"));
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 60).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(done.to_string().contains(&cert_pin(&pem)), "the failure names the fingerprint: {done}");
}

#[test]
fn a_dovecot_offering_only_tls_1_0_and_1_1_is_named_as_such() {
    // Dovecot 2.3 has no maximum protocol setting: OpenSSL's own configuration caps it,
    // handed to the login processes through import_environment.
    let conf_dir = tempfile::tempdir().unwrap();
    let cnf = conf_dir.path().join("openssl.cnf");
    std::fs::write(
        &cnf,
        "openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n[sys]\nMaxProtocol = TLSv1.1\n",
    )
    .unwrap();
    std::fs::set_permissions(conf_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let extra = format!(
        "ssl_min_protocol = TLSv1\nssl_cipher_list = DEFAULT:@SECLEVEL=0\nimport_environment = $import_environment OPENSSL_CONF={}\n",
        cnf.display()
    );
    let dovecot = Dovecot::start_with_cert(LabOptions { extra_config: extra }, LabCert::SelfSignedCa);
    dovecot.add_user("src", SRC_PW);
    dovecot.add_user("dst", DST_PW);
    let lab = Lab { dovecot, state_dir: tempfile::tempdir().unwrap() };
    let ca = lab.dovecot.ca_file();
    // Dovecot (OpenSSL) closes the connection without an alert: a network error on its
    // face, which the message explains.
    let run = migrate(&lab, &lab.source_url(), &lab.to_tls("INBOX"), &["--ca-file", ca.to_str().unwrap(), "--attempts", "1"]);
    run.assert_code(1);
    assert!(run.stderr.contains("closed the connection during the TLS handshake"), "{}", run.stderr);
    assert!(run.stderr.contains("TLS 1.1 or older") && run.stderr.contains("Legacy TLS"), "{}", run.stderr);
    let log = lab.dovecot.log();
    assert!(log.contains("unsupported protocol") && !log.contains("user=<src>"), "Dovecot offered only TLS <= 1.1: {log}");
    // And it does speak TLS 1.0 and 1.1 (what a legacy client, or stunnel, would use).
    let addr = format!("127.0.0.1:{}", lab.dovecot.pop3s_port());
    for (flag, name) in [("-tls1", "TLSv1\n"), ("-tls1_1", "TLSv1.1\n")] {
        let out = openssl(&["s_client", "-connect", &addr, flag, "-cipher", "DEFAULT:@SECLEVEL=0"], Some(b""));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(&format!("Protocol  : {name}")), "{flag}: {text}");
    }
}
