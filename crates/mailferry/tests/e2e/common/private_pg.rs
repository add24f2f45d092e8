//! A private PostgreSQL for one test, made from the installed server binaries (`initdb` +
//! `pg_ctl`) in a temp dir and listening on a free loopback port, so a test can stop and
//! restart *its* database without touching the shared cluster (5432) that other tests use.
//!
//! PostgreSQL refuses to run as root: when the test runs as root the server is initialised
//! and run as the `postgres` user (`runuser`), in a temp dir chowned to it. Dropping the
//! value stops the server (`pg_ctl stop -m immediate`), a panicking test included.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long `pg_ctl` and `pg_isready` may take to bring the server up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Run the server binaries as `postgres` (we are root).
    as_postgres: bool,
    /// `postgres://postgres@127.0.0.1:PORT/mailferry` (trust authentication).
    pub url: String,
    // Last field: removed after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `pg_ctl`, else
/// `pg_config --bindir`.
fn server_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(o) if o.status.success() => {
            let bin = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            assert!(bin.join("initdb").is_file(), "no initdb in {} (pg_config --bindir)", bin.display());
            bin
        }
        _ => panic!("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"),
    }
}

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run id");
    assert!(out.status.success(), "id {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("id prints a number")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

impl PrivatePg {
    /// initdb, start on a free port, create the database `mailferry`. Panics with the
    /// server's log if it does not come up.
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new().prefix("mf-private-pg-").tempdir().expect("temp dir");
        let as_postgres = id(&["-u"]) == 0;
        if as_postgres {
            let (uid, gid) = (id(&["-u", "postgres"]), id(&["-g", "postgres"]));
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir to postgres");
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgresql.log");
        let mut pg = Self { bin, data, log, port: 0, as_postgres, url: String::new(), dir };

        let out = pg.run("initdb", &[
            "-D",
            &pg.data.display().to_string(),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        assert!(out.status.success(), "initdb: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

        // Another process may take the port between our probe and the server's bind: retry
        // with a new one then.
        for attempt in 1..=5 {
            pg.port = free_port();
            if pg.try_start() {
                break;
            }
            let log = pg.log();
            assert!(
                attempt < 5 && log.contains("could not bind"),
                "the private PostgreSQL did not start on port {}:\n{log}",
                pg.port
            );
        }
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
        let out = Command::new("psql").arg(&admin).args(["-qc", "CREATE DATABASE mailferry"]).output().expect("psql");
        assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
        pg.url = format!("postgres://postgres@127.0.0.1:{}/mailferry", pg.port);
        pg
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Run one of the server's binaries, as `postgres` when we are root, in the temp dir
    /// (the postgres user may not be able to enter the test's working directory).
    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.try_run(program, args).unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    fn try_run(&self, program: &str, args: &[&str]) -> std::io::Result<Output> {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(self.dir.path()).output()
    }

    /// `pg_ctl start` on `self.port`, then wait for `pg_isready`; false if it did not start.
    fn try_start(&self) -> bool {
        // Loopback TCP only, the socket in our own dir (never /var/run/postgresql).
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let out = self.run("pg_ctl", &[
            "start",
            "-w",
            "-t",
            &START_TIMEOUT.as_secs().to_string(),
            "-D",
            &self.data.display().to_string(),
            "-l",
            &self.log.display().to_string(),
            "-o",
            &options,
        ]);
        out.status.success() && self.wait_ready()
    }

    fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `pg_ctl stop -m MODE` (`smart`, `fast`, `immediate`), waiting until it is down.
    pub fn stop(&self, mode: &str) {
        let out = self.run("pg_ctl", &["stop", "-w", "-m", mode, "-D", &self.data.display().to_string()]);
        assert!(out.status.success(), "pg_ctl stop -m {mode}: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
    }

    /// Start it again (same data, same port) and wait until it accepts connections.
    pub fn start_again(&self) {
        assert!(self.try_start(), "the private PostgreSQL did not start again on port {}:\n{}", self.port, self.log());
    }

    /// Stop (`fast`: clients are disconnected, as in a restart for maintenance), stay down
    /// for `down`, start again. Returns how long the server was unreachable.
    pub fn restart(&self, down: Duration) -> Duration {
        let t = Instant::now();
        self.stop("fast");
        std::thread::sleep(down);
        self.start_again();
        t.elapsed()
    }

    /// The server's log (pg_ctl's `-l` file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if !self.data.join("postmaster.pid").exists() {
            return;
        }
        // Never panic here: this may run while a failed test unwinds.
        let _ = self.try_run("pg_ctl", &["stop", "-w", "-t", "10", "-m", "immediate", "-D", &self.data.display().to_string()]);
    }
}
