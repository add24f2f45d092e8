//! A real S3-compatible server on loopback for archive tests: moto (`pip install
//! 'moto[server]'`, which `scripts/test` installs), one process per test, killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto. Panics when it is not installed: `scripts/test` installs it, and an S3
    /// test that quietly passed without a server would prove nothing.
    pub fn start() -> Self {
        let installed = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(installed, "moto_server is not installed: run ./scripts/test, or pip install 'moto[server]'");
        let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("port").port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A bare HTTP request (moto does not check signatures on these), for bucket setup.
    pub fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect moto");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .expect("write to moto");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read from moto");
        out
    }

    /// Creates a bucket with Object Lock (and so versioning) enabled, as production uses.
    pub fn create_locked_bucket(&self, bucket: &str) {
        let r = self.http("PUT", &format!("/{bucket}"), "x-amz-bucket-object-lock-enabled: true\r\n", "");
        assert!(r.starts_with("HTTP/1.1 200"), "create bucket {bucket}: {r}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
