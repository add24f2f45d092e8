//! The source side of a run: RETR with up to a window of requests in flight (RFC 2449
//! PIPELINING), each response streamed into memory or a spool file, checked against the
//! server's own LIST size, and handed to the sink through a bounded channel.

use std::collections::VecDeque;
use std::sync::Arc;

use mailferry_pop3::Pop3Session;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::Span;

use super::context::{close_message, message_span, Item, Planned};
use crate::spool::{Incoming, Received, SpoolConfig};

#[derive(Debug)]
pub(super) enum SourceError {
    Pop3(mailferry_pop3::Pop3Error),
    Spool(std::io::Error),
}

/// The source task: RETR with up to `window` requests in flight, each response streamed
/// into memory or a spool file, then handed to the sink through the bounded channel
/// (backpressure: a slow destination stops retrieval, memory stays bounded).
pub(super) async fn retrieve(
    mut pop: Pop3Session,
    plan: Vec<Planned>,
    window: usize,
    limit: Option<(u64, &'static str)>,
    spool: SpoolConfig,
    budget: Arc<Semaphore>,
    tx: mpsc::Sender<Item>,
) -> (Pop3Session, std::result::Result<(), SourceError>) {
    // Spawned inside the run's span: each message's span is its child.
    let run = Span::current();
    let mut fetch = Vec::new();
    for p in plan {
        // LIST sizes are exact per RFC 1939 §5, so oversize messages are skipped unread.
        match limit {
            Some((max, which)) if p.size > max => {
                let reason = format!("message of {} bytes exceeds {which} of {max} bytes", p.size);
                let span = message_span(&run, &p);
                if tx.send(Item::Skip(p, reason, span)).await.is_err() {
                    return (pop, Ok(()));
                }
            }
            _ => fetch.push(p),
        }
    }
    let budget_total = u32::try_from(budget.available_permits()).unwrap_or(u32::MAX);
    let result = async {
        let mut queue: VecDeque<(&Planned, Span)> = VecDeque::new();
        // Retrievals whose size disagreed with LIST: retrieved again once the pipeline is
        // empty, with the first retrieval's digest and size to compare.
        let mut suspects: Vec<(&Planned, Span, String, u64)> = Vec::new();
        let mut next = 0;
        while next < fetch.len() || !queue.is_empty() {
            if queue.len() < window && next < fetch.len() {
                let upto = (next + window - queue.len()).min(fetch.len());
                let numbers: Vec<u32> = fetch[next..upto].iter().map(|p| p.number).collect();
                pop.send_retr_many(&numbers).await.map_err(SourceError::Pop3)?;
                queue.extend(fetch[next..upto].iter().map(|p| (p, message_span(&run, p))));
                next = upto;
            }
            let (p, span) = queue.pop_front().expect("a RETR is in flight");
            let item = match retrieve_one(&mut pop, &spool, p, span).await? {
                Ok((received, span)) if !size_agrees(received.size, p.size) => {
                    suspects.push((p, span, received.digest, received.size));
                    continue;
                }
                Ok((received, span)) => {
                    let permit = hold_budget(&budget, &received, budget_total).await;
                    Item::Retrieved(p.clone(), received, permit, span)
                }
                Err(refused) => refused,
            };
            if tx.send(item).await.is_err() {
                return Ok(());
            }
        }
        for (p, span, first_digest, first_size) in suspects {
            pop.send_retr_many(&[p.number]).await.map_err(SourceError::Pop3)?;
            let item = match retrieve_one(&mut pop, &spool, p, span).await? {
                Ok((received, span)) => match incomplete(&received, p.size, &first_digest, first_size) {
                    None => {
                        let permit = hold_budget(&budget, &received, budget_total).await;
                        Item::Retrieved(p.clone(), received, permit, span)
                    }
                    Some(why) => Item::Failed(p.clone(), why, span),
                },
                Err(refused) => refused,
            };
            if tx.send(item).await.is_err() {
                break;
            }
        }
        Ok(())
    }
    .await;
    (pop, result)
}

/// Read one RETR response: its status, then its body streamed into memory or a spool file.
/// `Ok(Err(item))`: the server refused this message (-ERR, RFC 1939 §7: the session goes
/// on), reported by `item`. `Err`: the session failed (the span is closed as an error).
async fn retrieve_one(
    pop: &mut Pop3Session,
    spool: &SpoolConfig,
    p: &Planned,
    span: Span,
) -> std::result::Result<std::result::Result<(Received, Span), Item>, SourceError> {
    let read = async {
        pop.read_retr_status().await.map_err(SourceError::Pop3)?;
        let mut incoming = Incoming::expecting(spool, p.size);
        while let Some(chunk) = pop.read_retr_chunk().await.map_err(SourceError::Pop3)? {
            incoming.push(chunk).map_err(SourceError::Spool)?;
        }
        incoming.finish().map_err(SourceError::Spool)
    };
    match read.await {
        Ok(received) => Ok(Ok((received, span))),
        Err(SourceError::Pop3(mailferry_pop3::Pop3Error::Server { text, .. })) => {
            Ok(Err(Item::Failed(p.clone(), format!("the source refused RETR: {text}"), span)))
        }
        Err(e) => {
            close_message(span, "error");
            Err(e)
        }
    }
}

/// Hold the message's share of the memory budget until the sink has appended it.
async fn hold_budget(budget: &Arc<Semaphore>, received: &Received, budget_total: u32) -> OwnedSemaphorePermit {
    let in_memory = match &received.body {
        mailferry_imap::AppendBody::Memory(v) => v.len(),
        mailferry_imap::AppendBody::Spooled { .. } => 0,
    };
    Arc::clone(budget)
        .acquire_many_owned(kib(in_memory).min(budget_total))
        .await
        .expect("the budget semaphore is never closed")
}

/// RFC 1939 §5: LIST gives the exact size in octets. The retrieved (unstuffed) bytes agree
/// with it, or exceed it by exactly the CRLF a server must add before the terminating dot
/// to a message stored without a final line ending.
pub(super) fn size_agrees(retrieved: u64, listed: u64) -> bool {
    retrieved == listed || retrieved == listed.saturating_add(2)
}

/// Judge a second retrieval of a message whose first one disagreed with LIST: `None` when
/// it may be copied. It agrees with LIST now (the first reply was cut), or both retrievals
/// are the same bytes and more than LIST said (a server that reports approximate sizes,
/// e.g. counting bare LF line ends its RETR sends as CRLF). Fewer bytes than LIST, twice,
/// look like a server that cuts messages: never taken as a complete copy.
fn incomplete(second: &Received, listed: u64, first_digest: &str, first_size: u64) -> Option<String> {
    if size_agrees(second.size, listed) {
        return None;
    }
    if second.digest == first_digest && second.size > listed {
        tracing::warn!(listed, retrieved = second.size, "LIST size is approximate; two retrievals agree byte for byte");
        return None;
    }
    Some(format!(
        "retrieved {first_size} and then {} bytes, but the server's LIST size is {listed}: the message may be incomplete, so it was not copied and stays at the source",
        second.size
    ))
}

/// Budget permits are KiB, rounded up, so a semaphore's u32 count covers large budgets.
pub(super) fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}
