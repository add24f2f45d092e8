//! eDiscovery export: the distinct messages matching a query, as an mbox (mboxrd quoting,
//! so `From ` lines round-trip) or a zip of `.eml` files, each with a SHA-256 manifest.
//! Every message is read through the verified path; every export is logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::archive::Archive;
use crate::chain::EventKind;
use crate::digest::Digest;
use crate::error::Result;
use crate::index::rows::fmt_ts;
use crate::search::SearchQuery;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// mboxrd; the manifest goes beside it as `<file>.sha256`.
    Mbox,
    /// `messages/<sha256>.eml` plus `manifest.sha256` (sha256sum -c format) inside the zip.
    EmlZip,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub digest: Digest,
    /// Path inside the zip, or `mbox:<n>` (1-based position) for mbox.
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    pub format: ExportFormat,
    pub path: PathBuf,
    pub messages: u64,
    pub bytes: u64,
    /// SHA-256 of the export file itself.
    pub file_sha256: String,
    pub manifest: Vec<ManifestEntry>,
}

/// mboxrd: a line starting with zero or more `>` then `From ` gets one more `>`.
pub fn mboxrd_quote(msg: &[u8], out: &mut Vec<u8>) {
    for line in msg.split_inclusive(|&b| b == b'\n') {
        let stripped = line
            .iter()
            .position(|&b| b != b'>')
            .map_or(&line[line.len()..], |i| &line[i..]);
        if stripped.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !msg.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// Inverse of the export, for tests and re-import: splits an mboxrd file into messages.
pub fn mboxrd_split(data: &[u8]) -> Vec<Vec<u8>> {
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            msgs.push(Vec::new());
            continue;
        }
        let Some(cur) = msgs.last_mut() else { continue };
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            cur.extend_from_slice(&line[1..]);
        } else {
            cur.extend_from_slice(line);
        }
    }
    // Each message is followed by one blank separator line.
    for m in &mut msgs {
        if m.ends_with(b"\n\n") || m.ends_with(b"\r\n\n") {
            m.pop();
        }
    }
    msgs
}

impl Archive {
    /// Exports the distinct messages matching `q` to `out` (overwritten). Returns the report,
    /// which is also recorded (without the per-message list) in the event log.
    pub async fn export(
        &self,
        q: &SearchQuery,
        format: ExportFormat,
        out: &Path,
        who: &str,
    ) -> Result<ExportReport> {
        let digests = self.search_digests(q).await?;
        let file = std::fs::File::create(out)?;
        let mut manifest = Vec::with_capacity(digests.len());
        let mut bytes = 0u64;
        match format {
            ExportFormat::Mbox => {
                let mut w = std::io::BufWriter::new(file);
                let mut buf = Vec::new();
                for (i, d) in digests.iter().enumerate() {
                    let msg = self.get(d).await?;
                    buf.clear();
                    // Fixed envelope sender/date: the message's own headers carry the truth,
                    // and a stable line keeps exports reproducible.
                    buf.extend_from_slice(b"From mailferry-archive Thu Jan  1 00:00:00 1970\n");
                    mboxrd_quote(&msg, &mut buf);
                    buf.push(b'\n');
                    w.write_all(&buf)?;
                    bytes += msg.len() as u64;
                    manifest.push(ManifestEntry {
                        digest: *d,
                        name: format!("mbox:{}", i + 1),
                        size: msg.len() as u64,
                    });
                }
                w.flush()?;
                w.get_ref().sync_all()?;
                let mut side = String::new();
                for m in &manifest {
                    side.push_str(&format!("{}  {}\n", m.digest, m.name));
                }
                let mut side_path = out.as_os_str().to_owned();
                side_path.push(".sha256");
                std::fs::write(PathBuf::from(side_path), side)?;
            }
            ExportFormat::EmlZip => {
                let mut zip = zip::ZipWriter::new(file);
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .large_file(false);
                let mut listing = String::new();
                for d in &digests {
                    let msg = self.get(d).await?;
                    let name = format!("messages/{d}.eml");
                    zip.start_file(name.as_str(), opts)?;
                    zip.write_all(&msg)?;
                    listing.push_str(&format!("{d}  {name}\n"));
                    bytes += msg.len() as u64;
                    manifest.push(ManifestEntry {
                        digest: *d,
                        name,
                        size: msg.len() as u64,
                    });
                }
                zip.start_file("manifest.sha256", opts)?;
                zip.write_all(listing.as_bytes())?;
                let mut f = zip.finish()?;
                f.flush()?;
                f.sync_all()?;
            }
        }
        let file_sha256 = {
            let mut f = std::fs::File::open(out)?;
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h)?;
            hex::encode(h.finalize())
        };
        let report = ExportReport {
            format,
            path: out.to_path_buf(),
            messages: manifest.len() as u64,
            bytes,
            file_sha256,
            manifest,
        };
        self.log_event(
            EventKind::Export,
            who,
            serde_json::json!({
                "format": format, "query": q, "messages": report.messages, "bytes": report.bytes,
                "file_sha256": report.file_sha256, "at": fmt_ts(Utc::now()),
            }),
        )
        .await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mboxrd_round_trips_from_lines() {
        let msgs: Vec<&[u8]> = vec![
            b"Subject: a\r\n\r\nFrom here\r\n>From there\r\n>>From x\r\nok\r\n",
            b"Subject: b\n\nFrom \n\n",
            b"Subject: c\r\n\r\n",
        ];
        let mut out = Vec::new();
        for m in &msgs {
            out.extend_from_slice(b"From x Thu Jan  1 00:00:00 1970\n");
            mboxrd_quote(m, &mut out);
            out.push(b'\n');
        }
        let back = mboxrd_split(&out);
        assert_eq!(back.len(), 3);
        for (a, b) in msgs.iter().zip(&back) {
            assert_eq!(&a[..], &b[..]);
        }
    }
}
