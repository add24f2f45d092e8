//! A stored receipt read back as JSON text, a page of entries at a time (the API streams
//! it; `mailferry migrate --receipt` writes it to a file).

use crate::{JobId, RunId, StoredReceipt};

/// Entries read per page.
const PAGE: u32 = 500;

/// Reads a stored receipt back as JSON text, a page of entries at a time: the API streams
/// it, `mailferry migrate --receipt` writes it to a file. Memory stays flat whatever the
/// number of entries.
pub struct ReceiptReader {
    store: std::sync::Arc<dyn crate::Store>,
    stored: StoredReceipt,
    after: i64,
    state: ReadState,
}

#[derive(Debug, PartialEq, Eq)]
enum ReadState {
    Head,
    Entries { first: bool },
    Done,
}

impl std::fmt::Debug for ReceiptReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptReader").field("run", &self.stored.run).field("after", &self.after).finish()
    }
}

impl ReceiptReader {
    /// The receipt of `run` of `job` (the latest when `None`); `Ok(None)` when there is none.
    pub async fn open(store: std::sync::Arc<dyn crate::Store>, job: JobId, run: Option<RunId>) -> crate::Result<Option<Self>> {
        let Some(stored) = store.receipt(job, run).await? else { return Ok(None) };
        Ok(Some(Self { store, stored, after: -1, state: ReadState::Head }))
    }

    pub fn run(&self) -> RunId {
        self.stored.run
    }

    /// The next piece of the document; `None` once it is complete.
    pub async fn next_chunk(&mut self) -> crate::Result<Option<String>> {
        match self.state {
            ReadState::Head => {
                self.state = ReadState::Entries { first: true };
                Ok(Some(mailferry_proof::receipt::document_prefix(
                    &self.stored.header,
                    &self.stored.signature,
                    &self.stored.public_key,
                )))
            }
            ReadState::Entries { first } => {
                let lines = self.store.receipt_lines(self.stored.entries_run, self.after, PAGE).await?;
                let Some((last, _)) = lines.last() else {
                    self.state = ReadState::Done;
                    return Ok(Some("]}\n".into()));
                };
                self.after = *last;
                let mut out = String::new();
                for (i, (_, line)) in lines.iter().enumerate() {
                    if !(first && i == 0) {
                        out.push(',');
                    }
                    out.push_str(line);
                }
                self.state = ReadState::Entries { first: false };
                Ok(Some(out))
            }
            ReadState::Done => Ok(None),
        }
    }
}
