//! [`OnWake`]: a future polled only after one of its own wake-ups.
//!
//! A connection's task waits on hyper's connection and, beside it, on its
//! timers and watches (the idle and stall deadline, eviction, the drain,
//! a client CA reload, the maximum age). A `select!` polls every branch
//! each time the task wakes, and the task wakes for the socket several
//! times per request: about 800 instructions a request went to polling
//! timers and watches that had not fired (callgrind, docs/BENCHMARKS.md).
//! Wrapped in `OnWake`, they are polled with a waker of their own, which
//! notes that one of them fired and then wakes the task; a wake-up for
//! the socket finds the note unset and skips them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Polls `F` only when one of the wakers it was given has been woken (and
/// at its first poll).
pub struct OnWake<F> {
    inner: Pin<Box<F>>,
    note: Arc<Note>,
    waker: Waker,
}

/// Set by `F`'s wake-ups; holds the task's waker to pass them on.
struct Note {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Note {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> OnWake<F> {
    pub fn new(inner: F) -> OnWake<F> {
        let note = Arc::new(Note {
            // The first poll registers `inner`'s timers and watches.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        OnWake {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&note)),
            note,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        {
            let mut task = this
                .note
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // The note is cleared before `inner` is polled, so a wake-up during
        // the poll is not lost: it sets the note again for the next one.
        if !this.note.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set; keeps the last waker.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_its_own_wake_ups() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(Mutex::new(None));
        let mut future = OnWake::new(Probe {
            polls: Arc::clone(&polls),
            ready: Arc::clone(&ready),
            waker: Arc::clone(&inner_waker),
        });
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);
        let mut future = Pin::new(&mut future);

        // The first poll reaches the inner future.
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Wake-ups of the task for other reasons do not.
        for _ in 0..5 {
            assert!(future.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The inner future's own wake-up wakes the task, and the next poll
        // reaches it.
        ready.store(true, Ordering::SeqCst);
        let waker = inner_waker.lock().unwrap().take().expect("a waker");
        waker.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(future.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_timer_inside_fires_through_it() {
        use std::time::Duration;
        let started = tokio::time::Instant::now();
        // A wake-up lost on the way would hang: bounded, it fails instead.
        tokio::time::timeout(
            Duration::from_secs(5),
            OnWake::new(tokio::time::sleep(Duration::from_millis(20))),
        )
        .await
        .expect("the timer's wake-up reached the task");
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
