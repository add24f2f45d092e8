//! The scale-out topology of `deploy/`, run for real without a container engine.
//!
//! The command line and environment of the compose file's `api` and `worker` services (plus
//! the image's `ENV` from the Dockerfile) are read from the files, never restated here, so
//! when the manifests change this test runs the new ones. Only what cannot hold on a test
//! machine is substituted: the PostgreSQL URL becomes a fresh database on the test server
//! (`MAILFERRY_TEST_DATABASE_URL`), listen addresses become loopback port 0, paths under the
//! image's `/var/lib/mailferry` become a temp dir per process (each container has its own),
//! `${VAR}` interpolation gets the values an operator exports (the secret key), and the
//! lab's 127.0.0.1 is added to `MAILFERRY_NETWORK__ALLOW` (the lab stands in for the mail
//! hosts, and jobs created over the API may not reach loopback unless allowed). Any
//! other reference to a compose service by host name fails the test, so a new dependency
//! (an S3 endpoint, say) has to be given a local stand-in here deliberately.
//!
//! One API process (`serve --no-workers`) and two worker processes share the database; a
//! batch posted to the API against the Dovecot lab must be drained exactly once, by both
//! workers, and SIGTERM must stop all three cleanly within the manifests' grace period.
//!
//! The Kubernetes manifests and systemd units are checked against the compose file (same
//! arguments, same environment names and values, consistent selectors, probes that answer,
//! the same grace period), so this proof covers them too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::private_pg::PrivatePg;
use crate::common::server::{job_body, psql, Api, FreshPg, Server};
use crate::common::*;
use serde_json::json;
use serde_yaml::Value;

/// The repository's deploy/ directory, or `DEPLOY_TOPOLOGY_DIR` (a copy, to see this
/// test fail on a broken manifest without touching the real ones; not `MAILFERRY_`-prefixed,
/// so the binary never mistakes it for a setting).
fn deploy_dir() -> PathBuf {
    match std::env::var_os("DEPLOY_TOPOLOGY_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy"),
    }
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    let mut v: Value = serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    v.apply_merge().unwrap_or_else(|e| panic!("{rel}: merge keys: {e}"));
    v
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(string).collect(),
        // Compose's string form is split like a shell would for simple words.
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a list of strings, got {other:?}"),
    }
}

/// A compose `environment:` in either form (mapping, or list of `K=V`).
fn compose_env(v: &Value) -> BTreeMap<String, String> {
    match v {
        Value::Mapping(m) => m.iter().map(|(k, v)| (string(k), if v.is_null() { String::new() } else { string(v) })).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let s = string(i);
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment: {other:?}"),
    }
}

/// Compose variable interpolation (`$$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`,
/// `${VAR:?err}`, `${VAR?err}`, `${VAR:+alt}`), with `vars` as the operator's shell.
fn interpolate(s: &str, vars: &HashMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').unwrap_or_else(|| panic!("unterminated ${{ in {s:?}"));
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_end = expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            let value = vars.get(name).filter(|v| !v.is_empty());
            let set = vars.contains_key(name);
            let resolved = match op {
                "" => value.cloned().unwrap_or_else(|| panic!("compose needs ${name}; the test provides none")),
                _ if op.starts_with(":-") => value.cloned().unwrap_or_else(|| op[2..].to_owned()),
                _ if op.starts_with('-') => if set { vars[name].clone() } else { op[1..].to_owned() },
                _ if op.starts_with(":?") || op.starts_with('?') => {
                    value.cloned().unwrap_or_else(|| panic!("compose requires ${name} ({op}); the test provides none"))
                }
                _ if op.starts_with(":+") => value.map(|_| op[2..].to_owned()).unwrap_or_default(),
                _ => panic!("unsupported interpolation ${{{expr}}}"),
            };
            out.push_str(&resolved);
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..end];
            out.push_str(vars.get(name).unwrap_or_else(|| panic!("compose needs ${name}; the test provides none")));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// The image's `ENTRYPOINT`, `CMD` and `ENV` (runtime stage: the last `FROM`).
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: String,
    volumes: Vec<String>,
    healthcheck_path: String,
}

fn image() -> Image {
    let text = read("docker/Dockerfile");
    // Join continuation lines, keep the last stage only.
    let joined = text.replace("\\\n", " ");
    let stage: Vec<&str> = joined.lines().collect();
    let last_from = stage.iter().rposition(|l| l.starts_with("FROM ")).expect("a FROM line");
    let mut img = Image {
        entrypoint: vec![],
        cmd: vec![],
        env: BTreeMap::new(),
        workdir: "/".into(),
        volumes: vec![],
        healthcheck_path: String::new(),
    };
    for line in &stage[last_from..] {
        let json_list = |rest: &str| -> Vec<String> { serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{line}: {e}")) };
        if let Some(r) = line.strip_prefix("ENTRYPOINT ") {
            img.entrypoint = json_list(r);
        } else if let Some(r) = line.strip_prefix("CMD ") {
            img.cmd = json_list(r);
        } else if let Some(r) = line.strip_prefix("VOLUME ") {
            img.volumes.extend(json_list(r));
        } else if let Some(r) = line.strip_prefix("WORKDIR ") {
            img.workdir = r.trim().to_owned();
        } else if let Some(r) = line.strip_prefix("ENV ") {
            for kv in r.split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("ENV {kv}: use the K=V form"));
                img.env.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        } else if line.starts_with("HEALTHCHECK ") {
            let at = line.find("GET ").expect("the HEALTHCHECK sends a GET");
            img.healthcheck_path = line[at + 4..].split_whitespace().next().unwrap().to_owned();
        }
    }
    img
}

/// One compose service as a process would see it: argv after the entrypoint, environment.
struct ServiceSpec {
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

fn compose_service(compose: &Value, name: &str, img: &Image) -> ServiceSpec {
    let svc = &compose["services"][name];
    assert!(svc.is_mapping(), "compose.yaml has no service {name}");
    let image_name = string(&svc["image"]);
    assert!(image_name.starts_with("mailferry"), "service {name} runs {image_name}, not the mailferry image");
    assert!(svc.get("entrypoint").is_none(), "service {name} overrides the entrypoint");
    let args = if svc.get("command").is_some() { strings(&svc["command"]) } else { img.cmd.clone() };
    // The container's environment: the image's ENV, then the service's.
    let mut env = img.env.clone();
    env.extend(compose_env(&svc["environment"]));
    ServiceSpec { args, env }
}

/// What a process of the topology gets on this machine instead of inside a container.
struct Local {
    db_url: String,
    /// Stands in for compose's `objects` (MinIO): moto on loopback.
    s3: String,
    /// Stands in for the image's `/var/lib/mailferry` (home and WORKDIR).
    root: tempfile::TempDir,
}

const IMAGE_ROOT: &str = "/var/lib/mailferry";

/// The substitutions the module comment lists, and nothing else.
fn localize(spec: &ServiceSpec, local: &Local, vars: &HashMap<&str, String>, other_services: &[String]) -> (Vec<String>, BTreeMap<String, String>) {
    let root = local.root.path().display().to_string();
    let fix = |v: &str| -> String {
        if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            return local.db_url.clone();
        }
        if let Ok(addr) = v.parse::<SocketAddr>() {
            return SocketAddr::new([127, 0, 0, 1].into(), if addr.ip().is_unspecified() { 0 } else { addr.port() }).to_string();
        }
        if let Some(rest) = v.strip_prefix(IMAGE_ROOT) {
            return format!("{root}{rest}");
        }
        if v.starts_with("http://objects:") {
            return local.s3.clone();
        }
        v.to_owned()
    };
    let args: Vec<String> = spec.args.iter().map(|a| fix(&interpolate(a, vars))).collect();
    let mut env: BTreeMap<String, String> = spec.env.iter().map(|(k, v)| (k.clone(), fix(&interpolate(v, vars)))).collect();
    let allow = env.entry("MAILFERRY_NETWORK__ALLOW".into()).or_default();
    *allow = if allow.is_empty() { "127.0.0.1".into() } else { format!("{allow},127.0.0.1") };
    for (k, v) in &env {
        for host in other_services {
            assert!(
                !v.contains(&format!("//{host}:")) && !v.contains(&format!("@{host}:")) && !v.contains(&format!("//{host}/")),
                "{k}={v} points at the compose service {host:?}: give it a local stand-in in this test"
            );
        }
    }
    (args, env)
}

fn spawn(args: &[String], env: &BTreeMap<String, String>, cwd: &Path, log: &Path) -> Child {
    std::fs::create_dir_all(cwd).unwrap();
    Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(args)
        // A container sees only its own environment: nothing of the test's leaks in.
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn mailferry {args:?}: {e}"))
}

/// SIGTERM, then wait at most `grace` for the exit status.
fn terminate(child: &mut Child, grace: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success(), "kill -TERM {}", child.id());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        assert!(start.elapsed() < grace, "pid {} did not exit within the grace period {grace:?}", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `2m`, `90s`, `1m30s`, `120` → seconds.
fn compose_duration(s: &str) -> u64 {
    let mut total = 0;
    let mut n = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            n.push(c);
        } else {
            let v: u64 = n.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
            n.clear();
            total += match c {
                'h' => v * 3600,
                'm' => v * 60,
                's' => v,
                _ => panic!("duration {s:?}"),
            };
        }
    }
    if !n.is_empty() {
        total += n.parse::<u64>().unwrap();
    }
    total
}

struct K8s {
    docs: Vec<Value>,
}

impl K8s {
    fn load() -> Self {
        let mut docs = Vec::new();
        for f in ["api.yaml", "worker.yaml", "configmap.yaml", "secret.template.yaml"] {
            docs.extend(yaml_docs(&format!("kubernetes/{f}")));
        }
        Self { docs }
    }

    fn find(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| string(&d["kind"]) == kind && string(&d["metadata"]["name"]) == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| string(&d["kind"]) == kind).collect()
    }

    fn pod_labels(deployment: &Value) -> BTreeMap<String, String> {
        compose_env(&deployment["spec"]["template"]["metadata"]["labels"])
    }

    /// The container's environment names and values (ConfigMap and Secret via envFrom,
    /// then `env`).
    fn env_of(&self, deployment: &Value) -> BTreeMap<String, String> {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mut env = BTreeMap::new();
        if let Some(from) = container["envFrom"].as_sequence() {
            for source in from {
                if let Some(cm) = source.get("configMapRef") {
                    env.extend(compose_env(&self.find("ConfigMap", &string(&cm["name"]))["data"]));
                } else if let Some(s) = source.get("secretRef") {
                    let secret = self.find("Secret", &string(&s["name"]));
                    env.extend(compose_env(&secret["stringData"]));
                    env.extend(compose_env(&secret["data"]));
                } else {
                    panic!("unexpected envFrom {source:?}");
                }
            }
        }
        if let Some(list) = container["env"].as_sequence() {
            for e in list {
                env.insert(string(&e["name"]), e.get("value").map(string).unwrap_or_default());
            }
        }
        env
    }
}

/// Values that differ between environments on purpose: where the database is, the key.
fn is_site_specific(name: &str, value: &str) -> bool {
    value.contains("://") || name.contains("SECRET") || name.contains("KEY") || name.contains("PASSWORD")
}

/// The Kubernetes manifests run what compose runs; systemd runs the same subcommands.
#[test]
fn kubernetes_and_systemd_match_the_compose_topology() {
    let compose = yaml("compose.yaml");
    let img = image();
    let api = compose_service(&compose, "api", &img);
    let worker = compose_service(&compose, "worker", &img);
    let k8s = K8s::load();

    for (deployment, svc, name) in [("mailferry-api", &api, "api"), ("mailferry-worker", &worker, "worker")] {
        let d = k8s.find("Deployment", deployment);
        let containers = d["spec"]["template"]["spec"]["containers"].as_sequence().expect("containers");
        assert_eq!(containers.len(), 1, "{deployment}: one container");
        let c = &containers[0];
        // No `command`: the image's ENTRYPOINT (mailferry) runs, as in compose.
        let command = strings(&c["command"]);
        assert!(command.is_empty() || command == img.entrypoint, "{deployment} overrides the entrypoint: {command:?}");
        assert_eq!(strings(&c["args"]), svc.args, "{deployment} args vs compose {name} command");

        let k_env = k8s.env_of(d);
        let c_names: BTreeSet<&String> = svc.env.keys().collect();
        let k_names: BTreeSet<&String> = k_env.keys().collect();
        assert_eq!(k_names, c_names, "{deployment} environment names vs compose {name} (+ the image's ENV)");
        for (k, v) in &svc.env {
            if !is_site_specific(k, v) && !is_site_specific(k, &k_env[k]) {
                assert_eq!(&k_env[k], v, "{deployment}: {k} differs from compose {name}");
            }
        }
        // Selectors pick this deployment's pods.
        let labels = K8s::pod_labels(d);
        let selector = compose_env(&d["spec"]["selector"]["matchLabels"]);
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)), "{deployment}: selector {selector:?} vs labels {labels:?}");
        let pdbs: Vec<_> = k8s
            .all("PodDisruptionBudget")
            .into_iter()
            .filter(|p| compose_env(&p["spec"]["selector"]["matchLabels"]).iter().all(|(k, v)| labels.get(k) == Some(v)))
            .collect();
        assert_eq!(pdbs.len(), 1, "{deployment}: exactly one PodDisruptionBudget selects its pods");
    }

    // The Service routes to the API pods, on a port the container declares.
    let api_d = k8s.find("Deployment", "mailferry-api");
    let api_labels = K8s::pod_labels(api_d);
    let service = k8s.find("Service", "mailferry-api");
    let selector = compose_env(&service["spec"]["selector"]);
    assert!(selector.iter().all(|(k, v)| api_labels.get(k) == Some(v)), "Service selector {selector:?} vs API pod labels");
    let worker_labels = K8s::pod_labels(k8s.find("Deployment", "mailferry-worker"));
    assert!(!selector.iter().all(|(k, v)| worker_labels.get(k) == Some(v)), "the Service must not select worker pods");
    let container = &api_d["spec"]["template"]["spec"]["containers"][0];
    let port_names: Vec<String> = container["ports"].as_sequence().unwrap().iter().map(|p| string(&p["name"])).collect();
    for p in service["spec"]["ports"].as_sequence().unwrap() {
        let target = string(&p["targetPort"]);
        assert!(port_names.contains(&target) || target.parse::<u16>().is_ok(), "Service targetPort {target} not declared");
    }
    // The API listens where the probes and the Service look.
    let listen_port = api.args.iter().find_map(|a| a.parse::<SocketAddr>().ok()).map(|a| a.port());
    let container_port = container["ports"][0]["containerPort"].as_u64().map(|p| p as u16);
    assert_eq!(listen_port, container_port, "compose api --listen port vs the API containerPort");

    // Grace periods agree: compose, Kubernetes and systemd give a worker the same time.
    let compose_grace = compose_duration(&string(&compose["services"]["worker"]["stop_grace_period"]));
    let k8s_grace = k8s.find("Deployment", "mailferry-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("the worker Deployment sets terminationGracePeriodSeconds");
    assert_eq!(k8s_grace, compose_grace, "worker grace: Kubernetes vs compose");

    // systemd: the same subcommands; the worker unit runs exactly compose's worker command.
    let mut unit_subcommands = BTreeSet::new();
    for unit in ["mailferry.service", "mailferry-worker@.service"] {
        let text = read(&format!("systemd/{unit}"));
        let exec: Vec<String> = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert!(exec[0].ends_with("/mailferry"), "{unit} runs {}", exec[0]);
        unit_subcommands.insert(exec[1].clone());
        if unit.starts_with("mailferry-worker@") {
            assert_eq!(exec[1..], worker.args[..], "{unit} vs compose worker command");
        }
        let stop: u64 = text.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).map(compose_duration).unwrap_or(90);
        assert_eq!(stop, compose_grace, "{unit}: TimeoutStopSec vs the compose/Kubernetes grace period");
    }
    let compose_subcommands: BTreeSet<String> = [api.args[0].clone(), worker.args[0].clone()].into();
    assert_eq!(unit_subcommands, compose_subcommands, "systemd ExecStart subcommands vs compose");
}

fn small(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("Message-ID: <{tag}{i}@deploy>\r\nSubject: {tag} {i}\r\n\r\nbody {i} of {tag}\r\n").into_bytes())
        .collect()
}

struct Proc {
    child: Child,
    log: PathBuf,
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logs(procs: &[&Proc]) -> String {
    procs.iter().map(|p| format!("== {}\n{}\n", p.log.display(), std::fs::read_to_string(&p.log).unwrap_or_default())).collect()
}

/// compose's one API and two workers, from the manifests, against one PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_api_and_two_workers_drain_a_batch_exactly_once() {
    const MAILBOXES: usize = 16;
    const MESSAGES: usize = 40;
    let compose = yaml("compose.yaml");
    let img = image();
    let api_spec = compose_service(&compose, "api", &img);
    let worker_spec = compose_service(&compose, "worker", &img);
    let replicas = compose["services"]["worker"]["deploy"]["replicas"].as_u64().unwrap_or(1) as usize;
    assert_eq!(replicas, 2, "compose runs two worker replicas");
    let grace = Duration::from_secs(compose_duration(&string(&compose["services"]["worker"]["stop_grace_period"])));
    let services: Vec<String> = compose["services"].as_mapping().unwrap().keys().map(string).collect();

    let pg = FreshPg::create();
    // What the operator exports before `docker compose up` (compose.yaml's header says so):
    // a fresh key for each variable the file interpolates whose name says it is the secret
    // key. Any other variable without a default makes `interpolate` fail the test.
    let secret_key: String = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}-{:?}", pg.name, Instant::now()).as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    };
    let compose_text = read("compose.yaml");
    let vars: HashMap<&str, String> = compose_text
        .match_indices("${")
        .map(|(at, _)| {
            let rest = &compose_text[at + 2..];
            &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
        })
        .filter(|name| name.ends_with("SECRET_KEY"))
        .map(|name| (name, secret_key.clone()))
        .collect();

    let lab = Lab::start();
    let mut sources = Vec::new();
    for i in 0..MAILBOXES {
        lab.dovecot.add_user(&format!("s{i}"), SRC_PW);
        lab.dovecot.add_user(&format!("d{i}"), DST_PW);
        let msgs = small(MESSAGES, &format!("box{i}-"));
        lab.dovecot.seed(&format!("s{i}"), &msgs);
        sources.push(msgs);
    }

    // compose's MinIO, created by objects-init with Object Lock: moto on loopback, same bucket.
    let moto = mailferry_tests::Moto::start();
    let bucket = api_spec.env.get("MAILFERRY_ARCHIVE__S3__BUCKET").cloned().expect("compose configures archive blobs on S3");
    moto.create_locked_bucket(&bucket);
    let s3_endpoint = moto.endpoint();

    let logs_dir = tempfile::tempdir().unwrap();
    // Each container's filesystem: the image's VOLUMEs exist (empty) before it starts.
    let new_local = || {
        let local = Local { db_url: pg.url.clone(), s3: s3_endpoint.clone(), root: tempfile::tempdir().unwrap() };
        for v in &img.volumes {
            let rest = v.strip_prefix(IMAGE_ROOT).unwrap_or_else(|| panic!("VOLUME {v} outside {IMAGE_ROOT}"));
            std::fs::create_dir_all(local.root.path().join(rest.trim_start_matches('/'))).unwrap();
        }
        local
    };
    let workdir = |l: &Local| -> PathBuf {
        match img.workdir.strip_prefix(IMAGE_ROOT) {
            Some(rest) => l.root.path().join(rest.trim_start_matches('/')),
            None => l.root.path().to_owned(),
        }
    };

    // The API: compose's `api` service.
    let api_local = new_local();
    let (api_args, api_env) = localize(&api_spec, &api_local, &vars, &services);
    assert!(api_args.iter().any(|a| a == "--no-workers"), "compose's API runs no workers: {api_args:?}");
    let api_log = logs_dir.path().join("api.log");
    let mut api_child = spawn(&api_args, &api_env, &workdir(&api_local), &api_log);
    let mut stdout = BufReader::new(api_child.stdout.take().unwrap());
    let mut base = None;
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(at) = line.find("http://") {
            base = Some(line[at..].trim().to_owned());
            break;
        }
        line.clear();
    }
    let mut api = Proc { child: api_child, log: api_log, _stdout: Some(stdout) };
    let base = base.unwrap_or_else(|| panic!("the API printed no listening address\n{}", logs(&[&api])));

    // The probes and the image's HEALTHCHECK answer on the running API.
    let http = reqwest::Client::new();
    let k8s = K8s::load();
    let probe = &k8s.find("Deployment", "mailferry-api")["spec"]["template"]["spec"]["containers"][0];
    for path in [string(&probe["readinessProbe"]["httpGet"]["path"]), string(&probe["livenessProbe"]["httpGet"]["path"]), img.healthcheck_path.clone()] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
    }

    // An admin token, the way compose.yaml's header says: `exec api mailferry token create …`.
    let token_cmd: Vec<String> = compose_text
        .lines()
        .find_map(|l| l.split_once("exec api mailferry ").map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect()))
        .expect("compose.yaml says how to create a token");
    let out = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(&token_cmd)
        .env_clear()
        .envs(&api_env)
        .current_dir(workdir(&api_local))
        .output()
        .unwrap();
    assert!(out.status.success(), "mailferry {token_cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).split_whitespace().last().expect("the token is printed last").to_owned();
    let client = Api { http: http.clone(), base: base.clone(), token };

    // Two workers: compose's `worker` service, two replicas, each with its own volume.
    let mut workers = Vec::new();
    let mut worker_locals = Vec::new();
    for n in 0..replicas {
        let local = new_local();
        let (args, env) = localize(&worker_spec, &local, &vars, &services);
        let log = logs_dir.path().join(format!("worker{n}.log"));
        let child = spawn(&args, &env, &workdir(&local), &log);
        workers.push(Proc { child, log, _stdout: None });
        worker_locals.push(local);
    }
    // Both are polling before the batch arrives, so both can claim from it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !workers.iter().all(|w| std::fs::read_to_string(&w.log).unwrap_or_default().contains("worker started")) {
        // (Read from their logs: the manifests' log filter must let `info` through.)
        assert!(Instant::now() < deadline, "workers did not log `worker started`\n{}", logs(&workers.iter().collect::<Vec<_>>()));
        for w in &mut workers {
            assert!(w.child.try_wait().unwrap().is_none(), "a worker exited at start\n{}", logs(&[&*w]));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let jobs: Vec<_> = (0..MAILBOXES)
        .map(|i| {
            json!({
                "source": {"protocol": "pop3", "host": "127.0.0.1", "port": lab.dovecot.pop3_port(), "security": "none",
                           "username": format!("s{i}"), "password": SRC_PW},
                "target": {"protocol": "imap", "host": "127.0.0.1", "port": lab.dovecot.imap_port(), "security": "none",
                           "username": format!("d{i}"), "password": DST_PW, "folder": "INBOX"},
                "options": {"delete": "after-verified"}
            })
        })
        .collect();
    let (status, batch, text) = client.post("/api/v1/batches", &json!({"name": "deploy-topology", "jobs": jobs})).await;
    assert_eq!(status, 201, "{text}");
    let ids: Vec<i64> = batch["jobs"].as_array().unwrap().iter().map(|j| j.as_i64().unwrap()).collect();
    assert_eq!(ids.len(), MAILBOXES);

    // Sample lease owners while the batch runs: the API process must never own one.
    let owners_pg = pg.url.clone();
    let sampling = tokio::spawn(async move {
        let pool = sqlx::PgPool::connect(&owners_pg).await.unwrap();
        let mut owners = BTreeSet::new();
        loop {
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT lease_owner FROM jobs WHERE lease_owner IS NOT NULL").fetch_all(&pool).await.unwrap();
            owners.extend(rows.into_iter().map(|r| r.0));
            let open: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(&pool)
                .await
                .unwrap();
            if open == 0 {
                return owners;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    for id in &ids {
        let job = client.wait_state(*id, &["succeeded", "partial", "failed", "cancelled"], 180).await;
        if job["state"] != "succeeded" {
            panic!("job {id}: {job}\n{}", logs(&[&api, &workers[0], &workers[1]]));
        }
        assert_eq!(job["counts"]["copied"], MESSAGES, "job {id}: {job}");
        assert_eq!(job["counts"]["failed"], 0, "job {id}: {job}");
        assert_eq!(job["runs"], 1, "job {id} ran once: {job}");
    }
    let owners = tokio::time::timeout(Duration::from_secs(30), sampling).await.expect("sampling ends").unwrap();

    // Exactly once: every destination holds its source's messages, once each; sources are
    // empty (deleted only after the copy was verified).
    for (i, msgs) in sources.iter().enumerate() {
        assert_same_messages(msgs, &lab.dovecot.messages(&format!("d{i}")));
        assert_eq!(lab.dovecot.message_count(&format!("s{i}")), 0, "s{i} drained");
    }
    let overlaps = psql(
        &pg.url,
        "SELECT count(*) FROM runs a JOIN runs b ON a.job_id = b.job_id AND a.id < b.id
         WHERE b.started_at < COALESCE(a.finished_at, now())",
    );
    assert_eq!(overlaps, "0", "no two runs of one job overlapped");

    // Both workers ran jobs, and between them each job finished once; the API ran none.
    let finished: Vec<usize> = workers
        .iter()
        .map(|w| std::fs::read_to_string(&w.log).unwrap().lines().filter(|l| l.contains("job finished")).count())
        .collect();
    assert!(finished.iter().all(|&n| n > 0), "both workers ran jobs: {finished:?}\n{}", logs(&[&workers[0], &workers[1]]));
    assert_eq!(finished.iter().sum::<usize>(), MAILBOXES, "each job finished once: {finished:?}");
    eprintln!("jobs finished per worker: {finished:?}; lease owners seen: {owners:?}");
    // Lease owners are `host-pid-random#claim` (unique per process, fenced per claim).
    let api_pid = format!("-{}-", api.child.id());
    assert!(!owners.iter().any(|o| o.contains(&api_pid)), "the --no-workers API owned a lease: {owners:?}");
    let worker_pids: Vec<String> = workers.iter().map(|w| format!("-{}-", w.child.id())).collect();
    assert!(owners.iter().all(|o| worker_pids.iter().any(|p| o.contains(p))), "lease owners {owners:?} vs workers {worker_pids:?}");
    assert!(!std::fs::read_to_string(&api.log).unwrap().contains("job finished"), "the API ran a job");

    // An archive job through compose's archive settings: blobs in the bucket, index in the
    // shared PostgreSQL, whichever worker claims it.
    {
        lab.dovecot.add_user("arch", SRC_PW);
        lab.dovecot.seed("arch", &small(7, "arch-"));
        let body = json!({
            "source": {"protocol": "pop3", "host": "127.0.0.1", "port": lab.dovecot.pop3_port(), "security": "none",
                       "username": "arch", "password": SRC_PW},
            "target": {"protocol": "archive", "archive": "compose"},
            "options": {"delete": "after-verified"}
        });
        let (status, job, text) = client.post("/api/v1/jobs", &body).await;
        assert_eq!(status, 201, "{text}");
        let job = client.wait_state(job["id"].as_i64().unwrap(), &["succeeded", "failed", "partial"], 60).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", logs(&workers.iter().collect::<Vec<_>>()));
        let (_, list, text) = client.get("/api/v1/archives").await;
        assert_eq!((list["items"][0]["name"].as_str(), list["items"][0]["messages"].as_u64()), (Some("compose"), Some(7)), "{text}");
        assert_eq!(lab.dovecot.message_count("arch"), 0);
    }

    // SIGTERM everything: workers first (as `docker compose down` stops dependents first),
    // then the API; each exits 0 well within the manifests' grace period.
    for w in workers.iter_mut().chain(std::iter::once(&mut api)) {
        let (status, took) = terminate(&mut w.child, grace);
        assert!(status.success(), "graceful exit of {}: {status:?} after {took:?}\n{}", w.log.display(), logs(&[&*w]));
    }
    assert_eq!(psql(&pg.url, "SELECT count(*) FROM jobs WHERE lease_owner IS NOT NULL OR state <> 'succeeded'"), "0");
    drop(worker_locals);
}

/// One read of a job over the API, `None` while the API cannot answer (its database is
/// down: a 5xx, or no answer within a few seconds).
async fn job_if_readable(client: &Api, id: i64) -> Option<serde_json::Value> {
    let r = client
        .http
        .get(format!("{}/api/v1/jobs/{id}", client.base))
        .bearer_auth(&client.token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// How a job got through a restart of its database ([`restart_postgres_mid_job`]).
#[derive(Debug)]
struct Resumed {
    /// Runs of the job (1: the run itself retried; 2: the job was requeued and run again).
    runs: i64,
    /// The run's retries after a ledger error (`retryable failure` in the worker's log).
    retries: usize,
    /// The job went back to `queued` on the way.
    requeued: bool,
}

/// Issue 13, fault injection: the service's PostgreSQL restarted in the middle of a job
/// that deletes at the source (`after-verified`), with a ledger write cut off mid-statement.
/// The job must resume by itself and end `succeeded` with every message exactly once at
/// the destination, byte for byte, and the source empty. It runs its own PostgreSQL
/// ([`PrivatePg`]) and restarts that one, never the shared server the other tests use; the
/// topology is the one above: an API without workers and one worker process (with
/// `worker_env`), both on that database.
async fn restart_postgres_mid_job(worker_env: &[(&str, &str)]) -> Resumed {
    const MESSAGES: u64 = 2_000;
    /// Copied messages before the restart: the job is well under way, far from done.
    const RESTART_AFTER: u64 = 100;
    /// How long the database stays down (connections refused meanwhile).
    const DOWN: Duration = Duration::from_secs(2);

    let pg = PrivatePg::start();
    let lab = Lab::start();
    let msgs = small(MESSAGES as usize, "pg-restart-");
    lab.dovecot.seed("src", &msgs);

    let mut server = Server::start(&lab.dovecot, Some(&pg.url), &[], &["--no-workers"]);
    server.spawn_worker(worker_env);
    let client = server.client();

    let (status, job, text) = client.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "after-verified")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    let t0 = Instant::now();

    // Wait until the job is running and has copied some messages.
    let deadline = Instant::now() + Duration::from_secs(60);
    let copied_before = loop {
        let job = client.job(id).await;
        let copied = job["counts"]["copied"].as_u64().unwrap_or(0);
        if job["state"] == "running" && copied >= RESTART_AFTER {
            break copied;
        }
        assert!(
            !["succeeded", "partial", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")),
            "the job ended before the restart: {job}\n{}",
            server.logs()
        );
        assert!(Instant::now() < deadline, "job not under way after 60 s: {job}\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Make sure the restart cuts a ledger write off mid-statement (not only idle pooled
    // connections, which the pool would quietly replace): hold a lock that blocks writes to
    // the ledger until the worker waits on it, then restart.
    let mut blocker = Command::new("psql")
        .arg(&pg.url)
        .args(["-qc", "BEGIN; LOCK TABLE ledger IN SHARE MODE; SELECT pg_sleep(120);"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: u32 = psql(
            &pg.url,
            // Not the blocker itself, which waits on the lock while a write holds the table.
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%ledger%'
             AND query NOT ILIKE '%LOCK TABLE%'",
        )
        .parse()
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no ledger write waited on the lock within 20 s\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copied_before = job_if_readable(&client, id).await.map_or(copied_before, |j| j["counts"]["copied"].as_u64().unwrap_or(0));
    let restart_at = t0.elapsed();
    // The fast shutdown sends every backend SIGTERM at once; should the blocker's go first,
    // the waiting write could get its lock and commit before its own. Terminating the
    // waiting backends first (the same signal) makes sure the write is the one cut off.
    let cut_off = psql(
        &pg.url,
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query ILIKE '%ledger%' AND query NOT ILIKE '%LOCK TABLE%') t",
    );
    assert_ne!(cut_off, "0", "the waiting ledger write was gone before it could be cut off");
    let down_for = tokio::task::block_in_place(|| pg.restart(DOWN));
    // The fast shutdown ended the blocker's session too.
    let _ = blocker.kill();
    let _ = blocker.wait();

    // Follow the job to its end, noting each state (and error) it goes through.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let job = loop {
        let job = job_if_readable(&client, id).await;
        if let Some(job) = &job {
            let step = format!("{} (runs {}, copied {}, last_error {})", job["state"], job["runs"], job["counts"]["copied"], job["last_error"]);
            if seen.last().map(|s| s.split(" (").next()) != Some(step.split(" (").next()) {
                seen.push(step);
            }
            if ["succeeded", "partial", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
                break job.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not end within 180 s of the restart; states seen: {seen:#?}\nlast: {job:?}\n{}\n== postgresql\n{}",
            server.logs(),
            pg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total = t0.elapsed();
    let logs = server.logs();
    assert_eq!(job["state"], "succeeded", "states seen: {seen:#?}\n{job}\n{logs}\n== postgresql\n{}", pg.log());

    // Exactly once, byte for byte; nothing left at the source; the counts agree.
    assert_same_messages(&msgs, &lab.dst());
    assert_eq!(lab.dovecot.message_count("src"), 0, "the source is drained");
    assert_eq!(job["counts"]["copied"], MESSAGES, "{job}");
    assert_eq!(job["counts"]["deleted"], MESSAGES, "{job}");
    assert_eq!(job["counts"]["failed"], 0, "{job}");
    let ledger = psql(&pg.url, "SELECT state || '=' || count(*) FROM ledger GROUP BY state ORDER BY state");
    assert_eq!(ledger, format!("source-deleted={MESSAGES}"), "the ledger: one row per message, each copied then deleted");
    // The restart reached the job while it ran (it was not already done).
    assert!(copied_before < MESSAGES, "the job had copied everything before the restart");
    // The cut-off write surfaced as a retryable failure: retried within the run, or the job
    // went back to the queue.
    let retries = logs.lines().filter(|l| l.contains("retryable failure") && l.contains("ledger")).count();
    let requeued = seen.iter().any(|s| s.starts_with("\"queued\""))
        // The hand-back itself met the database still down: the job came back by its lease.
        || logs.contains("releasing the job failed; its lease will expire");
    assert!(retries > 0 || requeued, "the run never noticed the database going away; states {seen:?}\n{logs}");
    let overlaps = psql(
        &pg.url,
        "SELECT count(*) FROM runs a JOIN runs b ON a.job_id = b.job_id AND a.id < b.id
         WHERE b.started_at < COALESCE(a.finished_at, now())",
    );
    assert_eq!(overlaps, "0", "no two runs of the job overlapped");
    // Appended before the cut but recorded only after it: found at the destination, not
    // appended twice.
    let found = psql(&pg.url, "SELECT count(*) FROM ledger WHERE found_at_destination");

    // What the worker and the API went through (warnings and errors only), for the record.
    let noticed: Vec<&str> = logs.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    eprintln!("postgres restart: {} warning/error lines in the service's logs:", noticed.len());
    for line in noticed.iter().take(30) {
        eprintln!("  {line}");
    }
    eprintln!(
        "postgres restart: {MESSAGES} messages; restarted at {:.1} s with {copied_before} copied and {cut_off} ledger write(s) cut off; down {:.1} s; \
         job succeeded after {:.1} s in {} run(s), {retries} in-run retry(ies) on the ledger, requeued: {requeued}, {found} found already at the destination; states after the restart: {seen:?}",
        restart_at.as_secs_f64(),
        down_for.as_secs_f64(),
        total.as_secs_f64(),
        job["runs"]
    );
    Resumed { runs: job["runs"].as_i64().unwrap(), retries, requeued }
}

/// With the default retry policy a short outage is absorbed by the run: the cut-off ledger
/// write fails the attempt, the next attempt waits for the database and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_exactly_once_when_postgresql_restarts_mid_run() {
    let resumed = restart_postgres_mid_job(&[]).await;
    assert!(resumed.retries > 0 && resumed.runs == 1, "retried within its one run: {resumed:?}");
}

/// A run that gives up on the database (here at once: one attempt) hands the job back to
/// the queue instead of failing it; the next run resumes from the ledger, exactly once.
/// Slow by design: the requeued job waits 30 s before it is claimable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_run_gives_up_on_the_database_is_requeued_and_resumes_exactly_once() {
    let resumed = restart_postgres_mid_job(&[("MAILFERRY_WORKER__RETRY__ATTEMPTS", "1")]).await;
    assert!(resumed.requeued, "the job went back to the queue: {resumed:?}");
    // Two passes when the hand-back reached the database (a lease takeover is not a pass).
    assert!((1..=2).contains(&resumed.runs), "one run cut off, one that finished: {resumed:?}");
}
