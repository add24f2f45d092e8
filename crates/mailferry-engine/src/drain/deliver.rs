//! The sink side of a run: the source task retrieves into a bounded channel, this side
//! takes what arrives in batches and delivers each batch: skips and failures recorded,
//! copies the destination index already holds recorded without an APPEND, the rest marked
//! `copying`, appended (one MULTIAPPEND or archive put per batch), recorded `copied` as the
//! destination confirms them, and read back at the job's verify level.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use mailferry_imap::{AppendMessage, AppendOutcome, DestinationIndex};
use mailferry_pop3::Pop3Session;
use mailferry_store::{CopyDone, CopyIntent, ReadBackResult};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, Span};

use super::context::{close_message, Item, Planned, RunContext};
use super::retrieve::{kib, retrieve, SourceError};
use crate::error::{EngineError, Result};
use crate::message::header_facts;
use crate::sink::{Sink, Target};
use crate::spool::{Received, SpoolConfig};
use crate::verify::Sent;

/// One batch, sorted: what the destination index already holds, and what is to be appended.
#[derive(Default)]
struct Sorted {
    found: Found,
    to_append: ToAppend,
    /// The batch's share of the memory budget, held until the batch is delivered.
    permits: Vec<OwnedSemaphorePermit>,
}

/// Copies found at the destination by the index, which hashed the destination's own bytes:
/// they are read back already.
#[derive(Default)]
struct Found {
    copies: Vec<CopyDone>,
    read_back: Vec<ReadBackResult>,
    spans: Vec<Span>,
}

/// Messages to append, in one order: the ledger's intent, the message, its span, and its
/// body digest (with whether it holds a NUL) for the read-back.
#[derive(Default)]
struct ToAppend {
    intents: Vec<CopyIntent>,
    msgs: Vec<AppendMessage>,
    spans: Vec<Span>,
    body_digests: Vec<(String, bool)>,
}

/// What the destination's answers to one APPEND batch mean for each message.
#[derive(Default)]
struct Settled<'a> {
    /// Stored at the destination: recorded `copied`.
    done: Vec<CopyDone>,
    done_spans: Vec<Span>,
    /// Refused by the destination: back to `listed`, and failed with the reason.
    refused: Vec<(&'a String, String, Span)>,
    /// No answer (the batch failed part-way): left `copying` for the next run to resolve.
    unknown: Vec<Span>,
    /// What to read back from the destination.
    sent: Vec<Sent>,
    /// Wire bytes stored.
    bytes: u64,
}

impl RunContext<'_> {
    /// Source task retrieves into the channel; this task appends in batches.
    pub(super) async fn copy(
        &self,
        pop: Pop3Session,
        mut appender: Sink,
        to_copy: Vec<Planned>,
        mut index: Option<DestinationIndex>,
    ) -> Result<(Pop3Session, Sink)> {
        // The smallest limit wins; messages over it (by their LIST size) are skipped unread
        // with the reason. The POP3 client's own cap counts too: a message over it would
        // otherwise end the session (and the job) on every run.
        let limit = [
            self.job.max_message_bytes.map(|n| (n, "the job's max_message_bytes")),
            appender.append_limit().map(|n| (n, "the destination's APPENDLIMIT (RFC 7889)")),
            Some((self.config.pop3.max_message_bytes, "the configured pop3.max_message_bytes")),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(n, _)| *n);
        let window = if pop.capabilities().pipelining { self.config.retr_window.max(1) } else { 1 };
        let (tx, rx) = mpsc::channel::<Item>(self.config.channel_capacity.max(1));
        let spool = SpoolConfig { normalize: self.job.target.normalizes_line_endings(), ..self.config.spool.clone() };
        let budget = Arc::new(Semaphore::new(kib(self.config.memory_budget) as usize));
        let source = tokio::spawn(retrieve(pop, to_copy, window, limit, spool, budget, tx).in_current_span());

        // More APPEND sessions into the folder while the source starts retrieving (lanes.rs).
        let mut extra = self.open_extra_lanes(index.is_some()).await;
        let lanes: Vec<&mut Sink> = std::iter::once(&mut appender).chain(extra.sinks.iter_mut()).collect();
        // When every lane has stopped, the receiver is dropped: that stops the source task
        // at its next send.
        let sink_result = self.run_lanes(lanes, rx, index.take()).await;
        for sink in extra.sinks.drain(..) {
            sink.close().await;
        }
        let (pop, source_result) =
            source.await.map_err(|e| EngineError::Internal(format!("source task panicked: {e}")))?;
        sink_result?;
        source_result.map_err(|e| match e {
            SourceError::Pop3(e) => self.source_err(e),
            SourceError::Spool(e) => EngineError::Spool(e),
        })?;
        Ok((pop, appender))
    }

    /// Wait for the next item, then take what else is waiting, up to the batch limits.
    /// `None`: the source is done, or the run was cancelled.
    pub(super) async fn next_batch(&self, rx: &mut mpsc::Receiver<Item>) -> Option<Vec<Item>> {
        let first = tokio::select! {
            item = rx.recv() => item?,
            () = self.cancel.cancelled() => return None,
        };
        let mut batch = vec![first];
        let mut bytes = 0;
        while batch.len() < self.config.batch_messages && bytes < self.config.batch_bytes {
            match rx.try_recv() {
                Ok(item) => {
                    if let Item::Retrieved(_, r, _, _) = &item {
                        bytes += r.wire_size;
                    }
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    pub(super) async fn sink_batch(&self, appender: &mut Sink, batch: Vec<Item>, index: Option<&mut DestinationIndex>) -> Result<()> {
        let Sorted { found, to_append, permits: _permits } = self.sort_batch(appender, batch, index).await?;
        self.record_found(found).await?;
        let ToAppend { intents, msgs, spans, body_digests } = to_append;
        if msgs.is_empty() {
            return Ok(());
        }
        // Recorded before the APPEND leaves: a crash from here on leaves `copying` rows that
        // the next run resolves against the destination.
        self.store.mark_copying(self.job_id, self.run, &intents).await?;
        let uidls: Vec<String> = intents.iter().map(|i| i.uidl.clone()).collect();
        // A failure part-way still reports what the destination answered before it: the
        // messages it confirmed are stored there, so they are recorded `copied` (below, before
        // anything else can fail) and only then is the error returned. The unknown ones stay
        // `copying` for the next run to resolve against the destination.
        let (outcomes, failure) = match appender.deliver(&msgs, &uidls).await {
            Ok(outcomes) => (outcomes.into_iter().map(Some).collect::<Vec<_>>(), None),
            Err(e) => (e.outcomes, Some(e.error)),
        };
        let archive = matches!(self.job.target, Target::Archive(_));
        let settled = settle(archive, &intents, outcomes, spans, body_digests);
        let sent = self.record_settled(settled).await?;
        if let Some(e) = failure {
            return Err(self.sink_err(e));
        }
        self.read_back(appender, &sent).await
    }

    /// Record skips and failures, and sort the retrieved messages into those the
    /// destination index already holds and those to append.
    async fn sort_batch(&self, appender: &Sink, batch: Vec<Item>, mut index: Option<&mut DestinationIndex>) -> Result<Sorted> {
        let store = &self.store;
        let retrieved_at = Utc::now().fixed_offset();
        let mut sorted = Sorted::default();
        for item in batch {
            match item {
                Item::Skip(p, reason, span) => {
                    store.mark_skipped(self.job_id, self.run, &p.uidl, &reason).await?;
                    self.progress.send_modify(|p| p.skipped += 1);
                    close_message(span, "skipped");
                }
                Item::Failed(p, error, span) => {
                    store.mark_failed(self.job_id, self.run, &p.uidl, &error).await?;
                    self.progress.send_modify(|p| p.failed += 1);
                    close_message(span, "failed");
                }
                Item::Retrieved(p, r, permit, span) => {
                    sorted.permits.push(permit);
                    span.record("message.size", r.size).record("message.wire_size", r.wire_size);
                    self.sort_retrieved(appender, &mut sorted, index.as_deref_mut(), p, r, span, retrieved_at).await?;
                }
            }
        }
        Ok(sorted)
    }

    /// One retrieved message: skipped when the destination could not take it, found when
    /// the index holds it, else to append.
    #[allow(clippy::too_many_arguments)]
    async fn sort_retrieved(
        &self,
        appender: &Sink,
        sorted: &mut Sorted,
        index: Option<&mut DestinationIndex>,
        p: Planned,
        r: Received,
        span: Span,
        retrieved_at: DateTime<FixedOffset>,
    ) -> Result<()> {
        let facts = header_facts(&r.head, retrieved_at);
        let msg = AppendMessage {
            body: r.body,
            flags: appender.flags(match &self.job.target {
                Target::Imap(t) => &t.flags,
                Target::Archive(_) => &[],
            }),
            internal_date: Some(facts.internal_date),
            has_nul: r.has_nul,
        };
        if let Some(reason) = appender.precheck(&msg) {
            self.store.mark_skipped(self.job_id, self.run, &p.uidl, &reason).await?;
            self.progress.send_modify(|p| p.skipped += 1);
            close_message(span, "skipped");
            return Ok(());
        }
        if let Some(uid) = index.and_then(|i| i.claim(&r.wire_digest)) {
            // The index hashed the destination's own bytes: this copy was read back.
            let found = &mut sorted.found;
            found.read_back.push(ReadBackResult::exact(p.uidl.clone(), Some(r.wire_digest.clone())));
            found.copies.push(CopyDone { uidl: p.uidl, dest_uid: Some(uid), dest_uidvalidity: None, found_at_destination: true });
            found.spans.push(span);
            return Ok(());
        }
        let to_append = &mut sorted.to_append;
        to_append.spans.push(span);
        to_append.body_digests.push((r.body_digest, r.has_nul));
        to_append.intents.push(CopyIntent {
            uidl: p.uidl,
            size: r.size,
            digest: r.digest,
            wire_digest: r.wire_digest,
            wire_size: r.wire_size,
            normalized: r.normalized,
            message_id: facts.message_id,
            internal_date: Some(facts.internal_date.to_rfc3339()),
            internal_date_source: facts.date_source.as_str(),
        });
        to_append.msgs.push(msg);
        Ok(())
    }

    /// Record the copies the destination index found: copied, and read back exactly.
    async fn record_found(&self, found: Found) -> Result<()> {
        if found.copies.is_empty() {
            return Ok(());
        }
        self.store.mark_copied(self.job_id, self.run, &found.copies).await?;
        self.store.record_readback(self.job_id, self.run, &found.read_back).await?;
        self.progress.send_modify(|p| p.copied += found.copies.len() as u64);
        found.spans.into_iter().for_each(|s| close_message(s, "already-present"));
        Ok(())
    }

    /// Record what the destination answered: stored copies `copied`, refused ones failed
    /// (and back to `listed`). Returns the copies to read back.
    async fn record_settled(&self, settled: Settled<'_>) -> Result<Vec<Sent>> {
        let store = &self.store;
        let Settled { done, done_spans, refused, unknown, sent, bytes } = settled;
        unknown.into_iter().for_each(|s| close_message(s, "error"));
        store.mark_copied(self.job_id, self.run, &done).await?;
        done_spans.into_iter().for_each(|s| close_message(s, "copied"));
        self.progress.send_modify(|p| {
            p.copied += done.len() as u64;
            p.bytes += bytes;
        });
        for (uidl, reason, span) in refused {
            store.revert_copying(self.job_id, std::slice::from_ref(uidl)).await?;
            let error = format!("the destination refused the message: {reason}");
            store.mark_failed(self.job_id, self.run, uidl, &error).await?;
            self.progress.send_modify(|p| p.failed += 1);
            close_message(span, "refused");
        }
        Ok(sent)
    }

    /// Verified means read back (issue 14): only a copy that reads back matching may be
    /// deleted at the source. A mismatch is this message's failure, never the run's.
    async fn read_back(&self, appender: &mut Sink, sent: &[Sent]) -> Result<()> {
        if sent.is_empty() || !self.job.verify.reads_back() {
            return Ok(());
        }
        let results = crate::verify::read_back(appender, sent, self.job.verify).await.map_err(|e| self.sink_err(e))?;
        let mismatched = results.iter().filter(|r| r.error.is_some()).count() as u64;
        for r in results.iter().filter(|r| r.error.is_some()) {
            tracing::warn!(uidl = %r.uidl, error = r.error.as_deref().unwrap_or_default(), "copy failed verification; kept at the source");
        }
        self.store.record_readback(self.job_id, self.run, &results).await?;
        self.progress.send_modify(|p| p.failed += mismatched);
        Ok(())
    }
}

/// Pair each appended message with the destination's answer (`None`: none came, the batch
/// failed before it). `archive`: the destination is an archive, whose identity for a copy
/// is the exact retrieved bytes, not the bytes sent.
fn settle<'a>(
    archive: bool,
    intents: &'a [CopyIntent],
    outcomes: Vec<Option<AppendOutcome>>,
    spans: Vec<Span>,
    body_digests: Vec<(String, bool)>,
) -> Settled<'a> {
    let mut settled = Settled::default();
    for (((intent, outcome), span), (body_digest, has_nul)) in intents.iter().zip(outcomes).zip(spans).zip(body_digests) {
        match outcome {
            Some(AppendOutcome::Appended { uid, uid_validity }) => {
                settled.bytes += intent.wire_size;
                settled.sent.push(Sent {
                    uidl: intent.uidl.clone(),
                    uid,
                    wire_digest: if archive { intent.digest.clone() } else { intent.wire_digest.clone() },
                    wire_size: intent.wire_size,
                    body_digest: Some(body_digest),
                    message_id: intent.message_id.clone(),
                    has_nul,
                });
                settled.done.push(CopyDone {
                    uidl: intent.uidl.clone(),
                    dest_uid: uid,
                    dest_uidvalidity: uid_validity,
                    found_at_destination: false,
                });
                settled.done_spans.push(span);
            }
            Some(AppendOutcome::Refused(reason)) => settled.refused.push((&intent.uidl, reason, span)),
            None => settled.unknown.push(span),
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(uidl: &str, wire_size: u64) -> CopyIntent {
        CopyIntent {
            uidl: uidl.into(),
            size: wire_size - 1,
            digest: format!("retrieved-{uidl}"),
            wire_digest: format!("sent-{uidl}"),
            wire_size,
            normalized: true,
            message_id: Some(format!("<{uidl}@x>")),
            internal_date: None,
            internal_date_source: "date",
        }
    }

    fn settled(archive: bool, intents: &[CopyIntent], outcomes: Vec<Option<AppendOutcome>>) -> Settled<'_> {
        let spans = intents.iter().map(|_| Span::none()).collect();
        let digests = intents.iter().map(|i| (format!("body-{}", i.uidl), i.uidl == "b")).collect();
        settle(archive, intents, outcomes, spans, digests)
    }

    #[test]
    fn each_answer_settles_its_own_message() {
        let intents = [intent("a", 100), intent("b", 200), intent("c", 300), intent("d", 400)];
        let outcomes = vec![
            Some(AppendOutcome::Appended { uid: Some(7), uid_validity: Some(9) }),
            Some(AppendOutcome::Appended { uid: None, uid_validity: None }),
            Some(AppendOutcome::Refused("too large".into())),
            None,
        ];
        let s = settled(false, &intents, outcomes);
        assert_eq!(s.done.iter().map(|d| (d.uidl.as_str(), d.dest_uid, d.dest_uidvalidity)).collect::<Vec<_>>(), [
            ("a", Some(7), Some(9)),
            ("b", None, None)
        ]);
        assert!(s.done.iter().all(|d| !d.found_at_destination));
        assert_eq!(s.done_spans.len(), 2);
        assert_eq!(s.bytes, 300, "wire bytes of the stored copies only");
        assert_eq!(s.refused.iter().map(|(u, why, _)| (u.as_str(), why.as_str())).collect::<Vec<_>>(), [("c", "too large")]);
        assert_eq!(s.unknown.len(), 1, "no answer for d: left copying");
        let sent: Vec<_> = s.sent.iter().map(|x| (x.uidl.as_str(), x.uid, x.wire_digest.as_str(), x.has_nul)).collect();
        assert_eq!(sent, [("a", Some(7), "sent-a", false), ("b", None, "sent-b", true)]);
        assert_eq!(s.sent[0].body_digest.as_deref(), Some("body-a"));
        assert_eq!(s.sent[0].message_id.as_deref(), Some("<a@x>"));
    }

    #[test]
    fn an_archive_copy_is_read_back_by_the_retrieved_bytes() {
        let intents = [intent("a", 100)];
        let s = settled(true, &intents, vec![Some(AppendOutcome::Appended { uid: None, uid_validity: None })]);
        assert_eq!(s.sent[0].wire_digest, "retrieved-a");
        assert_eq!(s.sent[0].wire_size, 100);
    }

    #[test]
    fn a_batch_that_failed_at_once_settles_nothing() {
        let intents = [intent("a", 100), intent("b", 200)];
        let s = settled(false, &intents, vec![None, None]);
        assert!(s.done.is_empty() && s.refused.is_empty() && s.sent.is_empty());
        assert_eq!((s.unknown.len(), s.bytes), (2, 0));
    }
}
