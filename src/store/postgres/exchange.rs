//! A transaction that pauses for the caller: the store's runtime reads and
//! locks, hands what it read to the caller's thread, waits for the
//! caller's answer (computed there, by a closure that need not be `Send`),
//! then writes and commits. Dropping the caller's side rolls back.

use std::future::Future;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tokio::sync::oneshot;

use super::{PgStore, wait};
use crate::store::StoreError;

/// The runtime's side.
pub(crate) struct Exchange<A, B> {
    first: Option<SyncSender<Result<A, StoreError>>>,
    reply: Option<oneshot::Receiver<B>>,
}

impl<A, B> Exchange<A, B> {
    /// Hands what was read to the caller.
    pub(crate) fn send(&mut self, a: A) {
        if let Some(first) = self.first.take() {
            let _ = first.send(Ok(a));
        }
    }

    /// The caller's answer; `None` if it gave up (roll back).
    pub(crate) async fn answer(&mut self) -> Option<B> {
        self.reply.take()?.await.ok()
    }
}

/// The caller's side.
pub(crate) struct Caller<A, B> {
    /// Told whether the database answered (`None`: the portal's calls).
    store: Option<PgStore>,
    first: Receiver<Result<A, StoreError>>,
    reply: Option<oneshot::Sender<B>>,
    done: Receiver<Result<(), StoreError>>,
}

fn unfinished() -> StoreError {
    StoreError::Failed("PostgreSQL unavailable: the call did not finish".into())
}

impl<A, B> Caller<A, B> {
    /// What the transaction read (after its locks are held).
    pub(crate) fn read(&self) -> Result<A, StoreError> {
        let out = wait(|| self.first.recv()).unwrap_or_else(|_| Err(unfinished()));
        if let Some(store) = &self.store {
            store.note(&out);
        }
        out
    }

    /// Answers and waits for the commit.
    pub(crate) fn answer(mut self, b: B) -> Result<(), StoreError> {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(b);
        }
        let out = wait(|| self.done.recv()).unwrap_or_else(|_| Err(unfinished()));
        if let Some(store) = &self.store {
            store.note(&out);
        }
        out
    }
}

impl PgStore {
    /// Starts `body` on the store's runtime; the caller reads with
    /// `Caller::read` and answers with `Caller::answer`.
    pub(crate) fn exchange<A, B, F, Fut>(&self, body: F) -> Caller<A, B>
    where
        A: Send + 'static,
        B: Send + 'static,
        F: FnOnce(Exchange<A, B>) -> Fut + Send + 'static,
        Fut: Future<Output = (Exchange<A, B>, Result<(), StoreError>)> + Send + 'static,
    {
        let mut caller = self.exchange_quietly(body);
        caller.store = Some(self.clone());
        caller
    }

    /// `exchange`, without telling whether the database answered.
    pub(crate) fn exchange_quietly<A, B, F, Fut>(&self, body: F) -> Caller<A, B>
    where
        A: Send + 'static,
        B: Send + 'static,
        F: FnOnce(Exchange<A, B>) -> Fut + Send + 'static,
        Fut: Future<Output = (Exchange<A, B>, Result<(), StoreError>)> + Send + 'static,
    {
        let (first_tx, first) = sync_channel(1);
        let (reply, reply_rx) = oneshot::channel();
        let (done_tx, done) = sync_channel(1);
        let limit = self.op_timeout();
        let fallback = first_tx.clone();
        let ex = Exchange {
            first: Some(first_tx),
            reply: Some(reply_rx),
        };
        self.handle().spawn(async move {
            let out = match tokio::time::timeout(limit, body(ex)).await {
                Ok((mut ex, out)) => {
                    // Failed before it read: the caller hears it there.
                    if let (Some(first), Err(e)) = (ex.first.take(), &out) {
                        let _ = first.send(Err(e.clone()));
                    }
                    out
                }
                Err(_) => {
                    let e = StoreError::Failed("PostgreSQL unavailable: the call timed out".into());
                    let _ = fallback.try_send(Err(e.clone()));
                    Err(e)
                }
            };
            let _ = done_tx.send(out);
        });
        Caller {
            store: None,
            first,
            reply: Some(reply),
            done,
        }
    }
}
