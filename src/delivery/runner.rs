//! The queue runner: hands due messages to delivery workers (one transport
//! each), records every recipient's outcome in the spool, schedules retries,
//! bounces, and queues DSNs, whatever the transport.
//!
//! Per attempt, one spool write records the outcome of every recipient
//! tried, together with the DSN it causes. A recipient recorded as delivered
//! or bounced is never sent again, even after a crash. The only window for a
//! duplicate is between the next hop's final reply and that commit: a crash
//! there sends the message again to the recipients of that attempt.
//!
//! A worker does not wait for that commit before its next delivery: the
//! write goes to the group committer, which puts the outcomes of every
//! worker (and the messages being accepted meanwhile) into one fsync. The
//! message stays "in flight" until its outcome is durable, so it is never
//! handed out twice.
//!
//! If that commit fails, the message was still sent: its outcome is kept in
//! memory and retried (`unrecorded`), the message stays in flight, and no
//! worker sends anything until the spool takes the outcomes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dsn::{self, Action, Report};
use super::transport::{Diagnostic, Outcome, Outgoing, Transport};
use super::unrecorded::Unrecorded;
use crate::clock::Clock;
use crate::events::{Event, EventKind, Events};
use crate::locks::Recover;
use crate::spool::{QueueEntry, QueueId, QueueState, QueueWrite, RcptStatus, Spool};
use crate::store::StoreError;
use crate::telemetry::health::Health;

/// How retries and reports work (the `[delivery]` keys).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub hostname: String,
    pub retry_schedule: Vec<Duration>,
    pub max_age: Duration,
    pub delay_warning: Duration,
}

impl QueueSettings {
    /// The wait after the `attempts`-th attempt that left work (1-based);
    /// the schedule's last entry repeats.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.retry_schedule.len() - 1);
        self.retry_schedule[i]
    }
}

/// What the workers share.
pub struct Runner {
    pub spool: Arc<dyn Spool>,
    pub clock: Arc<dyn Clock>,
    pub settings: QueueSettings,
    pub events: Arc<dyn Events>,
    /// Every worker registers here (readiness); a panic in one is reported.
    pub health: Arc<Health>,
    /// With several nodes: where each attempt checks that the sender is
    /// not blocked (a block on another node may not have held this
    /// node's copy yet).
    pub shared_blocks: Option<crate::store::SharedData>,
}

/// The names the delivery tasks have for readiness and in `task.panicked`.
pub const WORKER: &str = "delivery worker";
pub const RETRY: &str = "delivery outcome retry";

/// A worker closes its idle connection after this long without work.
const IDLE: Duration = Duration::from_secs(10);
/// How often a worker looks again whether the store takes writes.
const WRITES_REFUSED: Duration = Duration::from_millis(250);
/// Due messages read from the schedule per pass; a longer backlog is
/// handed out slice by slice.
const DUE_PER_PASS: usize = 1024;

/// After a wake-up, let a burst of new messages gather; at least twice as
/// long as listing the spool took, so a long queue is not listed for every
/// message that arrives.
const GATHER: Duration = Duration::from_millis(5);

/// Runs until `shutdown`: one dispatcher and one worker per transport,
/// and the task that retries outcomes the spool refused.
pub async fn run_queue(
    runner: Arc<Runner>,
    transports: Vec<Box<dyn Transport>>,
    shutdown: CancellationToken,
) {
    let (jobs, queue) = mpsc::channel::<QueueId>(transports.len());
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let in_flight: Arc<Mutex<HashSet<QueueId>>> = Arc::default();
    let unrecorded = Arc::new(Unrecorded::new());
    // Stopped after the workers, so it sees every outcome they kept.
    let stop_retry = CancellationToken::new();
    let retry = tokio::spawn(runner.health.register(RETRY).run(unrecorded.clone().retry(
        runner.clone(),
        in_flight.clone(),
        stop_retry.clone(),
    )));
    let workers = TaskTracker::new();
    for transport in transports {
        // A panic ends this worker only: reported, and readiness turns red.
        workers.spawn(runner.health.register(WORKER).run(worker(
            runner.clone(),
            transport,
            queue.clone(),
            in_flight.clone(),
            unrecorded.clone(),
            shutdown.clone(),
        )));
    }
    workers.close();
    dispatch(&runner, jobs, &in_flight, &shutdown).await;
    workers.wait().await;
    stop_retry.cancel();
    let _ = retry.await;
}

/// Lists the spool, sends every due message not already in flight to the
/// workers, then waits for new work or the next due time.
async fn dispatch(
    runner: &Runner,
    jobs: mpsc::Sender<QueueId>,
    in_flight: &Mutex<HashSet<QueueId>>,
    shutdown: &CancellationToken,
) {
    let spool = &runner.spool;
    loop {
        let listing = std::time::Instant::now();
        let (due, next_due) = match spool.due(DUE_PER_PASS).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(event = "delivery.error", error = %e, "cannot read the queue");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let gather = GATHER.max(listing.elapsed() * 2);
        let now = spool.now();
        let more = due.len() == DUE_PER_PASS;
        for id in due {
            if !in_flight.lock_or_recover().insert(id) {
                continue;
            }
            tokio::select! {
                sent = jobs.send(id) => if sent.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
        if more {
            // A backlog: the next slice, once these are handed out.
            tokio::time::sleep(gather).await;
            continue;
        }
        // Due within a second: poll finely (the spool counts whole seconds).
        let wait = match next_due {
            Some(t) if t <= now + 1 => Duration::from_millis(200),
            Some(t) => Duration::from_secs(t - now).min(Duration::from_secs(5)),
            None => Duration::from_secs(5),
        };
        tokio::select! {
            _ = spool.wait_for_work(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        tokio::time::sleep(gather).await;
    }
}

async fn worker(
    runner: Arc<Runner>,
    mut transport: Box<dyn Transport>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<QueueId>>>,
    in_flight: Arc<Mutex<HashSet<QueueId>>>,
    unrecorded: Arc<Unrecorded>,
    shutdown: CancellationToken,
) {
    let commits = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT));
    let recorders = TaskTracker::new();
    loop {
        // Outcomes are waiting for the spool: whatever is sent now could
        // not be recorded either.
        if unrecorded.is_stalled() {
            tokio::select! {
                _ = unrecorded.resumed() => continue,
                _ = shutdown.cancelled() => break,
            }
        }
        // Another write met an I/O error: the store takes none until it
        // is reopened.
        if !runner.spool.accepts_writes() {
            tokio::select! {
                _ = tokio::time::sleep(WRITES_REFUSED) => continue,
                _ = shutdown.cancelled() => break,
            }
        }
        let next = tokio::select! {
            next = tokio::time::timeout(IDLE, async { queue.lock().await.recv().await }) => next,
            _ = shutdown.cancelled() => break,
        };
        let id = match next {
            Ok(Some(id)) => id,
            Ok(None) => break,
            Err(_) => {
                transport.idle().await;
                continue;
            }
        };
        if unrecorded.is_stalled() || !runner.spool.accepts_writes() {
            // Handed out as the spool began to fail: not sent, so it goes
            // back to the dispatcher.
            in_flight.lock_or_recover().remove(&id);
            continue;
        }
        let attempted = match runner.attempt(&mut *transport, id).await {
            Ok(Some(attempted)) => attempted,
            Ok(None) => {
                in_flight.lock_or_recover().remove(&id);
                continue;
            }
            Err(e) => {
                // Nothing was sent: the message can be handed out again.
                tracing::error!(event = "delivery.error", message_id = %id, error = %e);
                in_flight.lock_or_recover().remove(&id);
                // The spool is failing: do not spin on it.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        let Ok(permit) = commits.clone().acquire_owned().await else {
            break;
        };
        let (runner, in_flight, unrecorded) =
            (runner.clone(), in_flight.clone(), unrecorded.clone());
        recorders.spawn(async move {
            match runner.record(attempted).await {
                Ok(()) => {
                    in_flight.lock_or_recover().remove(&id);
                }
                // Sent but not recorded: kept, and still in flight, so it
                // is not handed out again.
                Err((attempted, e)) => {
                    tracing::error!(event = "delivery.error", message_id = %id, error = %e, "sent, but the outcome could not be recorded: kept, not sent again");
                    unrecorded.keep(&runner, attempted, &e);
                }
            }
            drop(permit);
        });
    }
    recorders.close();
    recorders.wait().await;
    transport.idle().await;
}

/// Outcomes a worker may have handed to the committer and not yet seen
/// durable; past this it waits, so a slow disk slows delivery down.
const COMMITS_IN_FLIGHT: usize = 64;

/// An attempt whose outcome is not yet in the spool.
pub struct Attempted {
    entry: QueueEntry,
    tally: Tally,
    writes: Vec<QueueWrite>,
    target: String,
    dsn_id: Option<QueueId>,
    finished: bool,
}

impl Attempted {
    pub fn id(&self) -> QueueId {
        self.entry.id
    }
}

/// What one attempt did, for the events after the commit.
#[derive(Default)]
struct Tally {
    delivered: Vec<(usize, Diagnostic)>,
    /// Refused permanently by the next hop, or failed here.
    bounced: Vec<(usize, Diagnostic)>,
    /// Still failing temporarily at the maximum age.
    expired: Vec<(usize, Diagnostic)>,
    deferred: Vec<(usize, Diagnostic)>,
}

impl Runner {
    /// Whether the shared store says the sender is blocked now. Unreadable
    /// (the database away): not blocked here; this node's copy was held
    /// when it heard of the block.
    async fn sender_blocked(&self, account: &str) -> bool {
        let Some(shared) = self.shared_blocks.clone() else {
            return false;
        };
        let key = account.to_string();
        match tokio::task::spawn_blocking(move || shared.account_get(&key)).await {
            Ok(Ok(Some(a))) => a.block.is_some(),
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::warn!(event = "store.error", error = %e, "cannot check the sender's block before delivery");
                false
            }
            Err(_) => false,
        }
    }

    /// One delivery attempt of message `id` through `transport`; the
    /// outcome still has to be recorded (`record`). None: nothing to send.
    pub async fn attempt(
        &self,
        transport: &mut dyn Transport,
        id: QueueId,
    ) -> Result<Option<Attempted>, crate::store::StoreError> {
        let spool = &self.spool;
        // Fresh from the spool: it may have been held, deleted or retried
        // since it was listed.
        let Some(mut entry) = spool.get(id).await? else {
            return Ok(None);
        };
        if entry.state != QueueState::Queued || entry.next_attempt > spool.now() {
            return Ok(None);
        }
        if self.sender_blocked(&entry.envelope.account).await {
            spool
                .apply(vec![QueueWrite::SetState(id, QueueState::Held)])
                .await?;
            return Ok(None);
        }
        let Some(body) = spool.body(id).await? else {
            return Ok(None);
        };
        let pending: Vec<usize> = (0..entry.envelope.recipients.len())
            .filter(|&i| entry.rcpt_state(i).status == RcptStatus::Pending)
            .collect();
        if pending.is_empty() {
            spool.apply(vec![QueueWrite::Remove(id)]).await?;
            return Ok(None);
        }
        let outcomes = transport
            .deliver(&Outgoing {
                id,
                envelope: &entry.envelope,
                body: &body,
                recipients: &pending,
            })
            .await;
        debug_assert_eq!(outcomes.len(), pending.len());
        let now = spool.now();
        let expires = entry
            .envelope
            .received_at
            .saturating_add(self.settings.max_age.as_secs());

        let mut tally = Tally::default();
        let mut reports = Vec::new();
        for (&i, outcome) in pending.iter().zip(outcomes) {
            let recipient = entry.envelope.recipients[i].clone();
            let state = &mut entry.rcpt_states()[i];
            state.attempts += 1;
            state.last_attempt = Some(now);
            match outcome {
                Outcome::Delivered {
                    reply,
                    dsn_passed_on,
                } => {
                    state.status = RcptStatus::Delivered;
                    state.last_reply = Some(reply.line());
                    if !dsn_passed_on && dsn::wanted(&entry.envelope, &recipient, Action::Relayed) {
                        reports.push(Report {
                            index: i,
                            action: Action::Relayed,
                            status: reply.status_for(2),
                            diagnostic: reply.clone(),
                        });
                    }
                    tally.delivered.push((i, reply));
                }
                Outcome::Failed(d) => {
                    state.status = RcptStatus::Bounced;
                    state.last_reply = Some(d.line());
                    tally.bounced.push((i, d));
                }
                Outcome::Deferred(d) => {
                    state.last_reply = Some(d.line());
                    if now >= expires {
                        state.status = RcptStatus::Bounced;
                        tally.expired.push((i, d));
                    } else {
                        tally.deferred.push((i, d));
                    }
                }
            }
        }
        // Failure reports: refused recipients carry the relay's status,
        // expired ones 5.4.7.
        let failed = tally.bounced.iter().map(|(i, d)| (i, d, d.status_for(5)));
        let expired = tally
            .expired
            .iter()
            .map(|(i, d)| (i, d, "5.4.7".to_string()));
        for (i, d, status) in failed.chain(expired) {
            let recipient = &entry.envelope.recipients[*i];
            if dsn::wanted(&entry.envelope, recipient, Action::Failed) {
                reports.push(Report {
                    index: *i,
                    action: Action::Failed,
                    status,
                    diagnostic: d.clone(),
                });
            }
        }
        if !tally.deferred.is_empty() {
            entry.attempts += 1;
            let wait = self.settings.backoff(entry.attempts).as_secs();
            entry.next_attempt = now.saturating_add(wait).min(expires).max(now + 1);
            entry.last_error = Some(tally.deferred[0].1.line());
            let waited = now.saturating_sub(entry.envelope.received_at);
            if waited >= self.settings.delay_warning.as_secs() {
                for (i, d) in &tally.deferred {
                    let recipient = &entry.envelope.recipients[*i];
                    if entry.rcpt_state(*i).delay_notified
                        || !dsn::wanted(&entry.envelope, recipient, Action::Delayed)
                    {
                        continue;
                    }
                    entry.rcpt_states()[*i].delay_notified = true;
                    reports.push(Report {
                        index: *i,
                        action: Action::Delayed,
                        status: d.status_for(4),
                        diagnostic: d.clone(),
                    });
                }
            }
        }
        reports.sort_by_key(|r| r.index);

        let mut writes = Vec::new();
        let mut dsn_id = None;
        if !reports.is_empty() {
            let id = spool.new_id();
            let (envelope, message) = dsn::build(
                &self.settings.hostname,
                id,
                &entry,
                &body,
                &reports,
                self.clock.now(),
                Some(expires),
            );
            writes.push(QueueWrite::Insert {
                entry: QueueEntry::new(id, envelope),
                body: message,
            });
            dsn_id = Some(id);
        }
        let finished = entry.rcpts.iter().all(|r| r.status != RcptStatus::Pending);
        if finished {
            writes.push(QueueWrite::Remove(id));
        } else {
            writes.push(QueueWrite::Progress(entry.clone()));
        }
        Ok(Some(Attempted {
            entry,
            tally,
            writes,
            target: transport.target(),
            dsn_id,
            finished,
        }))
    }

    /// Makes an attempt's outcome durable, then tells the events and the
    /// scorer. If the spool fails, the attempt comes back with the error:
    /// its recipients were sent, so it must be kept, not tried again.
    pub async fn record(&self, attempted: Attempted) -> Result<(), (Attempted, StoreError)> {
        self.record_all(vec![attempted])
            .await
            .map_err(|(mut back, e)| (back.remove(0), e))
    }

    /// `record` for several attempts, in one commit.
    pub(super) async fn record_all(
        &self,
        attempts: Vec<Attempted>,
    ) -> Result<(), (Vec<Attempted>, StoreError)> {
        // A copy: on failure the writes are needed again.
        let writes = attempts
            .iter()
            .flat_map(|a| a.writes.iter().cloned())
            .collect();
        if let Err(e) = self.spool.apply(writes).await {
            return Err((attempts, e));
        }
        for a in attempts {
            self.report(&a.entry, &a.tally, a.target, a.dsn_id, a.finished);
        }
        Ok(())
    }

    /// The events (the scorer hears the outcome), once the outcome is durable.
    fn report(
        &self,
        entry: &QueueEntry,
        tally: &Tally,
        target: String,
        dsn_id: Option<QueueId>,
        finished: bool,
    ) {
        let env = &entry.envelope;
        let event = |kind, list: &[(usize, Diagnostic)]| {
            let first = &list[0].1;
            let mut e = Event::new(kind)
                .account(&env.account)
                .message_id(entry.id.to_string())
                .recipients(list.len())
                .size(env.size)
                .target(target.clone())
                .reason(first.reason);
            if let Some(code) = first.code {
                e = e.code(code);
            }
            e
        };
        if !tally.delivered.is_empty() {
            self.events
                .emit(event(EventKind::DeliverySuccess, &tally.delivered).reason("delivered"));
        }
        let failed: Vec<(usize, Diagnostic)> = tally
            .bounced
            .iter()
            .chain(&tally.expired)
            .cloned()
            .collect();
        if !failed.is_empty() {
            let reason = if tally.bounced.is_empty() {
                "expired"
            } else {
                tally.bounced[0].1.reason
            };
            self.events
                .emit(event(EventKind::DeliveryFailed, &failed).reason(reason));
        }
        if !tally.deferred.is_empty() {
            self.events
                .emit(event(EventKind::DeliveryDeferred, &tally.deferred));
        }
        if let Some(id) = dsn_id {
            self.events.emit(
                Event::new(EventKind::DeliveryDsn)
                    .account(&env.account)
                    .message_id(id.to_string())
                    .target(entry.id.to_string()),
            );
        }
        if finished {
            tracing::debug!(event = "delivery.done", message_id = %entry.id);
        }
        // The scorer hears about the user's mail only: what the next hop
        // accepted, and what it refused for good. Expiry and failures
        // decided here (SMTPUTF8, 8BITMIME) say nothing about the sender.
        let system =
            env.from.is_empty() && env.account == format!("postmaster@{}", self.settings.hostname);
        let refused = tally.bounced.iter().filter(|(_, d)| d.is_remote()).count();
        if !system && (!tally.delivered.is_empty() || refused > 0) {
            self.events.emit(
                Event::new(EventKind::DeliveryOutcome)
                    .account(&env.account)
                    .message_id(entry.id.to_string())
                    .outcome(tally.delivered.len(), refused),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_wait_repeats() {
        let s = QueueSettings {
            hostname: "h".into(),
            retry_schedule: vec![Duration::from_secs(60), Duration::from_secs(300)],
            max_age: Duration::from_secs(3600),
            delay_warning: Duration::from_secs(600),
        };
        assert_eq!(s.backoff(1), Duration::from_secs(60));
        assert_eq!(s.backoff(2), Duration::from_secs(300));
        assert_eq!(s.backoff(9), Duration::from_secs(300));
        assert_eq!(s.backoff(0), Duration::from_secs(60));
    }
}
