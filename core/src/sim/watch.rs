//! A watch channel for openraft (its `Watch`) that wakes waiting receivers in the order they
//! began to wait. tokio's watch spreads its waiters over eight `Notify`s picked at random by
//! tokio's own generator, so two runs of one seed woke openraft's replication tasks in
//! different orders; one `Notify` keeps them in a queue.
//!
//! Semantics follow tokio's watch: a receiver has seen the value it was created or cloned with;
//! `changed` returns once a newer value was sent, and fails once every sender is gone (after
//! any value not yet seen); `send` fails, keeping nothing, once every receiver is gone.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft_rt::watch::{self, RecvError, SendError};
use openraft_rt::{OptionalSend, OptionalSync};
use tokio::sync::Notify;

/// openraft's watch channels in this crate (see the module's text).
pub struct SimWatch;

struct Shared<T> {
    value: RwLock<T>,
    /// Bumped by every change of the value.
    version: AtomicU64,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    changed: Notify,
}

impl<T> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct SimWatchSender<T>(Arc<Shared<T>>);

pub struct SimWatchReceiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

impl watch::Watch for SimWatch {
    type Sender<T: OptionalSend + OptionalSync> = SimWatchSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = SimWatchReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Self::Sender<T>, Self::Receiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            version: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            changed: Notify::new(),
        });
        (
            SimWatchSender(shared.clone()),
            SimWatchReceiver { shared, seen: 0 },
        )
    }
}

impl<T> Clone for SimWatchSender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::SeqCst);
        SimWatchSender(self.0.clone())
    }
}

impl<T> Drop for SimWatchSender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

impl<T> Clone for SimWatchReceiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        SimWatchReceiver {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Drop for SimWatchReceiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> watch::WatchSender<SimWatch, T> for SimWatchSender<T>
where
    T: OptionalSend + OptionalSync,
{
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.0.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(value));
        }
        let mut value = Some(value);
        self.send_if_modified(|current| {
            if let Some(v) = value.take() {
                *current = v;
            }
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut value = self.0.value.write().unwrap_or_else(|e| e.into_inner());
            let modified = modify(&mut value);
            if modified {
                self.0.version.fetch_add(1, Ordering::SeqCst);
            }
            modified
        };
        if modified {
            self.0.changed.notify_waiters();
        }
        modified
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.0.read()
    }

    fn subscribe(&self) -> SimWatchReceiver<T> {
        self.0.receivers.fetch_add(1, Ordering::SeqCst);
        SimWatchReceiver {
            shared: self.0.clone(),
            seen: self.0.version.load(Ordering::SeqCst),
        }
    }
}

impl<T> watch::WatchReceiver<SimWatch, T> for SimWatchReceiver<T>
where
    T: OptionalSend + OptionalSync,
{
    async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            // Registered before the checks, so a send between them still wakes this.
            let notified = self.shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let version = self.shared.version.load(Ordering::SeqCst);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.senders.load(Ordering::SeqCst) == 0 {
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        let value = self.shared.read();
        self.seen = self.shared.version.load(Ordering::SeqCst);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft_rt::watch::{Watch, WatchReceiver, WatchSender};

    #[tokio::test]
    async fn a_receiver_sees_each_newer_value_once_and_fails_after_the_last_sender_is_gone() {
        let (tx, mut rx) = SimWatch::channel(0u32);
        let mut late = tx.subscribe();
        tx.send(1).expect("send");
        rx.changed().await.expect("changed");
        assert_eq!(*rx.borrow_and_update(), 1);
        assert!(!tx.send_if_modified(|_| false), "not modified: no change");
        tx.send(2).expect("send");
        drop(tx);
        late.changed()
            .await
            .expect("a value not yet seen comes first");
        assert_eq!(*late.borrow_watched(), 2);
        rx.changed().await.expect("2 not yet seen");
        assert!(rx.changed().await.is_err(), "every sender is gone");
    }

    #[tokio::test]
    async fn waiting_receivers_wake_in_the_order_they_began_to_wait_and_send_fails_without_receivers(
    ) {
        let (tx, rx) = SimWatch::channel(0u32);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (mut rx, order) = (rx.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                rx.changed().await.expect("changed");
                order.lock().expect("lock").push(i);
            }));
            tokio::task::yield_now().await;
        }
        tx.send(1).expect("send");
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().expect("lock"), (0..8).collect::<Vec<_>>());
        drop(rx);
        assert!(tx.send(2).is_err(), "no receiver is left");
        assert_eq!(*tx.borrow_watched(), 1, "a refused send keeps nothing");
    }
}
