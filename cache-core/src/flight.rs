//! A load in flight: the outcome its waiters are parked on.
//!
//! The leader holds an `Arc<Flight>`, and its placeholder in the store a
//! pointer to it; callers that find the placeholder wait on it. A flight
//! ends exactly once, with a value, an error, or `Abandoned` when the
//! leader panicked or was dropped; waiters of an abandoned flight go back
//! to the store, where one of them becomes the next leader (see `load.rs`,
//! which runs that protocol). A waiter that is dropped takes its waker out,
//! so a cancelled caller leaves nothing behind.
//!
//! This file knows nothing of the store or of loading: it is the one-shot
//! broadcast that both use.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::sync::{Mutex, lock};

/// An error shared by every caller of a failed flight.
pub(crate) type SharedError = Arc<dyn Any + Send + Sync>;

/// How a flight ended.
pub(crate) enum Outcome<V> {
    Value(V),
    Error(SharedError),
    /// A batch loader answered without this key: it has no value.
    Absent,
    /// A batch loader panicked, with this message.
    Panicked(Arc<str>),
    /// The leader's loader failed and kept its error: each waiter makes its
    /// own attempt (errors that cannot be shared, see [`Errors`](crate::load::Errors)).
    Failed,
    /// The leader panicked or was cancelled before it finished.
    Abandoned,
}

impl<V: Clone> Clone for Outcome<V> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Value(v) => Outcome::Value(v.clone()),
            Outcome::Error(e) => Outcome::Error(Arc::clone(e)),
            Outcome::Absent => Outcome::Absent,
            Outcome::Panicked(message) => Outcome::Panicked(Arc::clone(message)),
            Outcome::Failed => Outcome::Failed,
            Outcome::Abandoned => Outcome::Abandoned,
        }
    }
}

pub(crate) struct Flight<V> {
    outcome: OnceLock<Outcome<V>>,
    waiters: Mutex<Waiters>,
    /// With `stale_for`: the `HELD` slot (index and meta) of the expired
    /// entry this load replaces. Set under the store's lock before anyone
    /// can join.
    stale: OnceLock<(u32, u32)>,
    /// Whether a waiter ever registered. Written under `waiters`' lock.
    waited: AtomicBool,
}

#[derive(Default)]
struct Waiters {
    wakers: Vec<Option<Waker>>,
    vacant: Vec<usize>,
}

impl<V> std::fmt::Debug for Flight<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight").field("done", &self.outcome.get().is_some()).finish()
    }
}

impl<V> Flight<V> {
    pub(crate) fn new() -> Self {
        Flight {
            outcome: OnceLock::new(),
            waiters: Mutex::new(Waiters::default()),
            stale: OnceLock::new(),
            waited: AtomicBool::new(false),
        }
    }

    /// Whether a flight that nobody else holds is as new: nobody waited on
    /// it and it holds no stale entry, so another load may use it without
    /// [`reset`](Self::reset) (whose `&mut` costs `Arc::get_mut`'s atomic
    /// compare-exchange, on every miss). The caller has seen, with
    /// acquire ordering, that it holds the only `Arc`: the registrations
    /// of waiters that have dropped theirs are then visible.
    #[inline]
    pub(crate) fn is_pristine(&self) -> bool {
        !self.waited.load(Ordering::Relaxed) && self.stale.get().is_none() && self.outcome.get().is_none()
    }

    /// Makes a flight that nobody else holds new again, keeping nothing of
    /// its load: for another. One that was finished is not reset (its
    /// outcome may hold a user value, whose drop is user code).
    #[inline]
    pub(crate) fn reset(&mut self) {
        debug_assert!(self.outcome.get().is_none(), "a finished flight is not reused");
        self.stale = OnceLock::new();
        *self.waited.get_mut() = false;
        let waiters = self.waiters.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nobody else holds the flight, so every waiter has unregistered:
        // the wakers' places are all empty. A herd's worth is not kept.
        debug_assert!(waiters.wakers.iter().all(Option::is_none));
        if waiters.wakers.capacity() > 0 {
            *waiters = Waiters::default();
        }
    }

    /// Notes the stale entry this load replaces (see the field).
    pub(crate) fn hold_stale(&self, idx: u32, meta: u32) {
        let _ = self.stale.set((idx, meta));
    }

    /// The stale entry this load replaces, if any: its slot and meta as held.
    pub(crate) fn stale(&self) -> Option<(u32, u32)> {
        self.stale.get().copied()
    }

    /// Ends the flight and wakes every waiter. Later calls do nothing.
    pub(crate) fn finish(&self, outcome: Outcome<V>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        // Taken under the lock, woken outside it: a waiter registering now
        // either sees the outcome or has its waker taken here.
        let wakers = std::mem::take(&mut lock(&self.waiters).wakers);
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Waits for the outcome.
    pub(crate) fn wait(self: Arc<Self>) -> Wait<V> {
        Wait { flight: self, place: None }
    }
}

/// The future returned by [`Flight::wait`].
pub(crate) struct Wait<V> {
    flight: Arc<Flight<V>>,
    place: Option<usize>,
}

impl<V> Wait<V> {
    /// Takes this waiter's waker out, unless the flight is over: `finish`
    /// has taken every waker already, and skipping the lock matters when ten
    /// thousand waiters wake at once.
    fn unregister(&mut self) {
        let Some(place) = self.place.take() else {
            return;
        };
        if self.flight.outcome.get().is_some() {
            return;
        }
        let mut waiters = lock(&self.flight.waiters);
        // `finish` may have run since the check: then the place is stale.
        if let Some(slot) = waiters.wakers.get_mut(place) {
            *slot = None;
            waiters.vacant.push(place);
        }
    }
}

impl<V: Clone> Future for Wait<V> {
    type Output = Outcome<V>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<V>> {
        let this = &mut *self;
        if let Some(outcome) = this.flight.outcome.get() {
            let outcome = outcome.clone();
            this.unregister();
            return Poll::Ready(outcome);
        }
        {
            let mut waiters = lock(&this.flight.waiters);
            if this.flight.outcome.get().is_none() {
                match this.place {
                    Some(place) => match &mut waiters.wakers[place] {
                        Some(waker) => waker.clone_from(cx.waker()),
                        slot => *slot = Some(cx.waker().clone()),
                    },
                    None => {
                        this.flight.waited.store(true, Ordering::Relaxed);
                        let waker = Some(cx.waker().clone());
                        let place = match waiters.vacant.pop() {
                            Some(place) => {
                                waiters.wakers[place] = waker;
                                place
                            }
                            None => {
                                waiters.wakers.push(waker);
                                waiters.wakers.len() - 1
                            }
                        };
                        this.place = Some(place);
                    }
                }
                return Poll::Pending;
            }
        }
        // Finished between the first check and the lock.
        let outcome = this.flight.outcome.get().expect("checked above").clone();
        this.unregister();
        Poll::Ready(outcome)
    }
}

impl<V> Drop for Wait<V> {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_gets_the_outcome() {
        let flight = Arc::new(Flight::<u32>::new());
        let waiters: Vec<_> = (0..20).map(|_| tokio::spawn(Arc::clone(&flight).wait())).collect();
        tokio::task::yield_now().await;
        flight.finish(Outcome::Value(7));
        for w in waiters {
            let got = tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
            assert!(matches!(got, Outcome::Value(7)));
        }
        // A late waiter sees it at once.
        assert!(matches!(Arc::clone(&flight).wait().await, Outcome::Value(7)));
    }

    /// A flight is kept for another load without a reset only if nothing
    /// of its load is left in it: no waiter ever (their places), no stale
    /// entry, no outcome.
    #[tokio::test]
    async fn only_a_flight_nobody_waited_on_is_pristine() {
        let mut flight = Arc::new(Flight::<u32>::new());
        assert!(flight.is_pristine());
        let mut wait = Box::pin(Arc::clone(&flight).wait());
        assert!(std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await.is_pending());
        drop(wait);
        assert!(!flight.is_pristine(), "a waiter came and went");
        Arc::get_mut(&mut flight).unwrap().reset();
        assert!(flight.is_pristine());
        assert_eq!(lock(&flight.waiters).wakers.capacity(), 0, "a reset keeps no waiters' places");
        flight.hold_stale(3, 4);
        assert!(!flight.is_pristine(), "it holds a stale entry");
        Arc::get_mut(&mut flight).unwrap().reset();
        assert!(flight.is_pristine());
        flight.finish(Outcome::Abandoned);
        assert!(!flight.is_pristine(), "it ended");
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_no_waker_behind() {
        let flight = Arc::new(Flight::<u32>::new());
        let mut wait = Box::pin(Arc::clone(&flight).wait());
        let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        assert_eq!(lock(&flight.waiters).wakers.iter().flatten().count(), 1);
        drop(wait);
        assert_eq!(lock(&flight.waiters).wakers.iter().flatten().count(), 0);
        flight.finish(Outcome::Abandoned);
    }
}
