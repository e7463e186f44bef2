//! A transaction that pauses for the caller: the store's runtime reads and
//! locks, hands what it read to the caller, waits for the caller's answer
//! (computed there, by a closure that need not be `Send`), then writes and
//! commits. Dropping the caller's side rolls back.
//!
//! Two callers: `Caller` blocks its thread while it waits (the store's
//! synchronous methods), `AsyncCaller` awaits (the scorer's decision at the
//! end of DATA, which holds no thread while the database answers).

use std::future::Future;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{PgStore, wait};
use crate::store::StoreError;

/// Where the runtime's side hands what it read.
enum First<A> {
    Blocking(SyncSender<Result<A, StoreError>>),
    Async(oneshot::Sender<Result<A, StoreError>>),
}

impl<A> First<A> {
    fn send(self, value: Result<A, StoreError>) {
        match self {
            Self::Blocking(tx) => {
                let _ = tx.send(value);
            }
            Self::Async(tx) => {
                let _ = tx.send(value);
            }
        }
    }
}

/// The runtime's side.
pub(crate) struct Exchange<A, B> {
    first: Option<First<A>>,
    reply: Option<oneshot::Receiver<B>>,
}

impl<A, B> Exchange<A, B> {
    /// Hands what was read to the caller.
    pub(crate) fn send(&mut self, a: A) {
        if let Some(first) = self.first.take() {
            first.send(Ok(a));
        }
    }

    /// The caller's answer; `None` if it gave up (roll back).
    pub(crate) async fn answer(&mut self) -> Option<B> {
        self.reply.take()?.await.ok()
    }
}

/// The caller's side, blocking.
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

/// The caller's side, awaiting.
pub(crate) struct AsyncCaller<A, B> {
    store: PgStore,
    first: Option<oneshot::Receiver<Result<A, StoreError>>>,
    reply: Option<oneshot::Sender<B>>,
    done: JoinHandle<Result<(), StoreError>>,
}

impl<A, B> AsyncCaller<A, B> {
    /// What the transaction read (after its locks are held).
    pub(crate) async fn read(&mut self) -> Result<A, StoreError> {
        let out = match self.first.take() {
            // Dropped unsent: the call failed or timed out before it read.
            Some(rx) => rx.await.unwrap_or_else(|_| Err(unfinished())),
            None => Err(unfinished()),
        };
        self.store.note(&out);
        out
    }

    /// Answers and waits for the commit.
    pub(crate) async fn answer(mut self, b: B) -> Result<(), StoreError> {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(b);
        }
        let out = (&mut self.done).await.unwrap_or_else(|_| Err(unfinished()));
        self.store.note(&out);
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
        let (done_tx, done) = sync_channel(1);
        // On a timeout the body (and its sender) is dropped, but the
        // blocking receiver must hear why.
        let fallback = first_tx.clone();
        let (reply, _task) = self.spawn_exchange(
            body,
            First::Blocking(first_tx),
            move |e| {
                let _ = fallback.try_send(Err(e));
            },
            Some(done_tx),
        );
        Caller {
            store: None,
            first,
            reply: Some(reply),
            done,
        }
    }

    /// `exchange` for an async caller: nothing blocks while it waits.
    pub(crate) fn exchange_async<A, B, F, Fut>(&self, body: F) -> AsyncCaller<A, B>
    where
        A: Send + 'static,
        B: Send + 'static,
        F: FnOnce(Exchange<A, B>) -> Fut + Send + 'static,
        Fut: Future<Output = (Exchange<A, B>, Result<(), StoreError>)> + Send + 'static,
    {
        let (first_tx, first) = oneshot::channel();
        let (reply, done) = self.spawn_exchange(body, First::Async(first_tx), |_| {}, None);
        AsyncCaller {
            store: self.clone(),
            first: Some(first),
            reply: Some(reply),
            done,
        }
    }

    /// Runs `body` on the store's runtime within the call time limit
    /// (`timed_out` hears the error when it runs out); the outcome goes to
    /// `done` too, if given (a blocking caller waits there).
    fn spawn_exchange<A, B, F, Fut>(
        &self,
        body: F,
        first: First<A>,
        timed_out: impl FnOnce(StoreError) + Send + 'static,
        done: Option<SyncSender<Result<(), StoreError>>>,
    ) -> (oneshot::Sender<B>, JoinHandle<Result<(), StoreError>>)
    where
        A: Send + 'static,
        B: Send + 'static,
        F: FnOnce(Exchange<A, B>) -> Fut + Send + 'static,
        Fut: Future<Output = (Exchange<A, B>, Result<(), StoreError>)> + Send + 'static,
    {
        let (reply, reply_rx) = oneshot::channel();
        let limit = self.op_timeout();
        let ex = Exchange {
            first: Some(first),
            reply: Some(reply_rx),
        };
        let task = self.handle().spawn(async move {
            let out = match tokio::time::timeout(limit, body(ex)).await {
                Ok((mut ex, out)) => {
                    // Failed before it read: the caller hears it there.
                    if let (Some(first), Err(e)) = (ex.first.take(), &out) {
                        first.send(Err(e.clone()));
                    }
                    out
                }
                Err(_) => {
                    let e = StoreError::Failed("PostgreSQL unavailable: the call timed out".into());
                    timed_out(e.clone());
                    Err(e)
                }
            };
            if let Some(done) = done {
                let _ = done.send(out.clone());
            }
            out
        });
        (reply, task)
    }
}
