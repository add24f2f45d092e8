//! Several APPEND sessions into one folder (issue 18): one IMAP connection runs one
//! server transaction at a time (Dovecot fsyncs once per APPEND), so a single session is
//! the ceiling of a mailbox's copy. The run opens `append_sessions` connections to the
//! destination folder; each is a *lane* that takes the next batch from the one retrieval
//! channel and delivers it exactly as a single session would: `copying` marks before its
//! APPEND, `copied` as the server confirms, read back on the lane's own connection. Exactly
//! once does not depend on which lane carried a message, so in-doubt resolution after a
//! crash is unchanged. What changes: UIDs of neighbouring messages may interleave between
//! lanes; INTERNALDATE (what clients sort by) is each message's own, as before.

use mailferry_imap::DestinationIndex;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::context::{Item, RunContext};
use crate::error::Result;
use crate::metrics::Session;
use crate::sink::{Sink, Target};

/// The extra destination connections of a run, beyond the one that resolved doubts.
pub(super) struct ExtraLanes {
    pub sinks: Vec<Sink>,
    _sessions: Vec<Session>,
}

impl RunContext<'_> {
    /// Open up to `append_sessions - 1` more connections to the destination folder, one
    /// after the other. Only for IMAP, and not while a destination index is in use (it is
    /// claimed message by message and lives with the first lane). The first refusal ends
    /// the opening: the server may cap sessions per user (Dovecot's
    /// `mail_max_userip_connections`), and asking again at once would only be refused
    /// again; the run goes on with the lanes it has.
    pub(super) async fn open_extra_lanes(&self, index_in_use: bool) -> ExtraLanes {
        let mut lanes = ExtraLanes { sinks: Vec::new(), _sessions: Vec::new() };
        let Target::Imap(endpoint) = &self.job.target else { return lanes };
        let wanted = self.config.append_sessions.saturating_sub(1);
        if index_in_use {
            return lanes;
        }
        for _ in 0..wanted {
            if self.cancel.is_cancelled() {
                break;
            }
            match crate::connect::connect_imap(endpoint, &self.config.imap, self.tokens).await {
                Ok(session) => {
                    lanes._sessions.push(Session::open("imap", &endpoint.host));
                    lanes.sinks.push(Sink::Imap(session.into_appender()));
                }
                Err(e) => {
                    tracing::warn!(error = %e.redacted(), lanes = lanes.sinks.len() + 1, "the destination refused another APPEND session; going on with the lanes open");
                    break;
                }
            }
        }
        lanes
    }

    /// Deliver batches from `rx` on every sink at once until the source is done, the run is
    /// cancelled, or a lane fails; a failing lane stops the others after their current
    /// batch (each settles what its server answered). Returns the first error.
    pub(super) async fn run_lanes(
        &self,
        sinks: Vec<&mut Sink>,
        rx: mpsc::Receiver<Item>,
        mut index: Option<DestinationIndex>,
    ) -> Result<()> {
        let rx = Mutex::new(rx);
        let halt = self.cancel.child_token();
        let lanes = sinks.into_iter().enumerate().map(|(n, sink)| {
            let index = if n == 0 { index.take() } else { None };
            self.lane(sink, &rx, index, &halt)
        });
        let results = futures::future::join_all(lanes).await;
        results.into_iter().collect()
    }

    async fn lane(
        &self,
        sink: &mut Sink,
        rx: &Mutex<mpsc::Receiver<Item>>,
        mut index: Option<DestinationIndex>,
        halt: &CancellationToken,
    ) -> Result<()> {
        loop {
            let batch = {
                let mut rx = rx.lock().await;
                tokio::select! {
                    batch = self.next_batch(&mut rx) => batch,
                    () = halt.cancelled() => None,
                }
            };
            let Some(batch) = batch else { return Ok(()) };
            if let Err(e) = self.sink_batch(sink, batch, index.as_mut()).await {
                halt.cancel();
                return Err(e);
            }
        }
    }
}
