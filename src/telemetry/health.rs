//! Which long-running parts are alive, for readiness (`/readyz`). Each part
//! (the spool's commit thread, every delivery worker) registers when it
//! starts and holds its `Alive` while it runs; it is dead once that is
//! dropped, by a normal stop or by a panic. A panic is caught where the
//! part runs, reported once as a typed `task.panicked` event with its
//! message (the metrics count it), and the part stays dead.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::events::{Event, EventKind, Events};
use crate::locks::Recover;

#[derive(Default)]
pub struct Health {
    parts: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
    /// Set once the application's events exist (the commit thread starts
    /// before them).
    events: OnceLock<Arc<dyn Events>>,
}

/// A registered part, alive until dropped.
pub struct Alive {
    /// Weak: the health holds the events, which hold the spool, which
    /// holds the commit thread that holds this; a strong reference would
    /// keep the store open after shutdown.
    health: Weak<Health>,
    name: &'static str,
    flag: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Where panics are reported from now on.
    pub fn report_to(&self, events: Arc<dyn Events>) {
        let _ = self.events.set(events);
    }

    /// A part that readiness waits for, alive from now until the returned
    /// guard is dropped.
    pub fn register(self: &Arc<Self>, name: &'static str) -> Alive {
        let flag = Arc::new(AtomicBool::new(true));
        self.parts.lock_or_recover().push((name, flag.clone()));
        Alive {
            health: Arc::downgrade(self),
            name,
            flag,
        }
    }

    /// Every kind of part with some stopped: (name, stopped, registered).
    pub fn stopped(&self) -> Vec<(&'static str, usize, usize)> {
        let mut out: Vec<(&'static str, usize, usize)> = Vec::new();
        for (name, flag) in self.parts.lock_or_recover().iter() {
            let dead = usize::from(!flag.load(Ordering::SeqCst));
            match out.iter_mut().find(|(n, _, _)| n == name) {
                Some((_, d, all)) => {
                    *d += dead;
                    *all += 1;
                }
                None => out.push((name, dead, 1)),
            }
        }
        out.retain(|(_, dead, _)| *dead > 0);
        out
    }

    fn panicked(&self, name: &'static str, payload: &(dyn Any + Send)) {
        let event = Event::new(EventKind::TaskPanicked)
            .target(name)
            .error(panic_message(payload));
        match self.events.get() {
            Some(events) => events.emit(event),
            None => tracing::error!(event = "task.panicked", target = name, error = event.error),
        }
    }
}

/// A panic's message (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a text message)".into())
}

impl Alive {
    /// Runs `task` as a task of its own; a panic in it is reported. The
    /// part is alive until the task ends.
    pub async fn run<F>(self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Err(e) = tokio::spawn(task).await
            && let Ok(payload) = e.try_into_panic()
        {
            self.panicked(&*payload);
        }
    }

    /// Runs `f` here (a thread of its own); a panic in it is caught and
    /// reported. The part is alive until `f` returns.
    pub fn run_blocking(self, f: impl FnOnce()) {
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            self.panicked(&*payload);
        }
    }

    fn panicked(&self, payload: &(dyn Any + Send)) {
        // Stopped before it is said: whoever hears the event finds
        // readiness red already.
        self.flag.store(false, Ordering::SeqCst);
        match self.health.upgrade() {
            Some(health) => health.panicked(self.name, payload),
            None => {
                tracing::error!(event = "task.panicked", target = self.name, error = %panic_message(payload))
            }
        }
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Listener;

    #[derive(Default)]
    struct Heard(Mutex<Vec<Event>>);
    impl Listener for Heard {
        fn hear(&self, e: &Event) {
            self.0.lock_or_recover().push(e.clone());
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_message_and_counts_as_stopped() {
        let health = Health::new();
        let heard = Arc::new(Heard::default());
        health.report_to(heard.clone());
        let ok = health.register("worker");
        let bad = health.register("worker");
        assert!(health.stopped().is_empty());
        bad.run(async { panic!("boom {}", 7) }).await;
        assert_eq!(health.stopped(), [("worker", 1, 2)]);
        let events = heard.0.lock_or_recover().clone();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::TaskPanicked);
        assert_eq!(events[0].target.as_deref(), Some("worker"));
        assert_eq!(events[0].error.as_deref(), Some("boom 7"));

        let thread = health.register("thread");
        std::thread::spawn(move || thread.run_blocking(|| panic!("static text")))
            .join()
            .unwrap();
        assert_eq!(
            heard.0.lock_or_recover()[1].error.as_deref(),
            Some("static text")
        );
        drop(ok);
        assert_eq!(health.stopped(), [("worker", 2, 2), ("thread", 1, 1)]);
    }
}
