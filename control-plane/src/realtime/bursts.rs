//! A stream's room hears its chat in short bursts. Each delivery costs a socket's writer a wake
//! and a `sendto` per flush, whatever it carries: emitted one by one, 25 messages a second to a
//! room of 10,000 are 250,000 flushes a second, more than two cores have, and the writers only
//! batch once a backlog has built up, which is then the latency (BENCHMARKS.md, "Live chat").
//! So the room's events wait at most `realtime.room_burst_ms` after the first one, and go out
//! together: every socket's writer then finds them queued at once and writes them in one flush,
//! with a bound on the wait instead of a backlog.
//!
//! Order is kept: one task per room emits its events in the order they were queued, so a
//! message's deletion or a ban never overtakes the message. A room's task ends after
//! [`IDLE`] without events (a send and the task's end take the same lock, so nothing queued
//! is lost). With a window of 0 every event is emitted at once by its caller, as before.

use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One queued emit (its broadcast operator, event and body already made by the caller).
pub(crate) type Emit = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// How long a room's task waits for more before it ends.
const IDLE: Duration = Duration::from_secs(30);

/// The rooms' queues.
pub(crate) struct Bursts {
    window: Duration,
    rooms: Mutex<HashMap<String, mpsc::UnboundedSender<Emit>>>,
    stop: CancellationToken,
}

impl Bursts {
    pub(crate) fn new(window: Duration, stop: CancellationToken) -> Arc<Bursts> {
        Arc::new(Bursts {
            window,
            rooms: Mutex::new(HashMap::new()),
            stop,
        })
    }

    /// Emits `emit` to `room` within the window, after what the room has queued. Unbounded: a
    /// room's events come from its handlers, each held by the chat's limits, and the queue is
    /// emptied every window.
    pub(crate) async fn send(self: &Arc<Self>, room: &str, emit: Emit) {
        if self.window.is_zero() {
            return emit().await;
        }
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let tx = rooms.entry(room.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().run(room.to_string(), rx));
            tx
        });
        if let Err(mpsc::error::SendError(emit)) = tx.send(emit) {
            // Only after the gateway stopped: nobody listens any more; drop it.
            drop(emit);
        }
    }

    /// A room's task: waits for an event, then the window, then emits all that queued, in order.
    async fn run(self: Arc<Self>, room: String, mut rx: mpsc::UnboundedReceiver<Emit>) {
        loop {
            let first = tokio::select! {
                () = self.stop.cancelled() => return,
                e = rx.recv() => e,
                () = tokio::time::sleep(IDLE) => {
                    let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
                    if rx.is_empty() {
                        rooms.remove(&room);
                        return;
                    }
                    continue;
                }
            };
            let Some(first) = first else { return };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(self.window) => {}
            }
            first().await;
            while let Ok(next) = rx.try_recv() {
                next().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn recorder(log: &Arc<Mutex<Vec<u32>>>, n: u32) -> Emit {
        let log = log.clone();
        Box::new(move || {
            Box::pin(async move { log.lock().unwrap().push(n) }) as BoxFuture<'static, ()>
        })
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_the_window_and_keep_their_order() {
        let bursts = Bursts::new(Duration::from_millis(50), CancellationToken::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        for n in 0..5 {
            bursts.send("room-a", recorder(&log, n)).await;
        }
        bursts.send("room-b", recorder(&log, 100)).await;
        tokio::time::sleep(Duration::from_millis(49)).await;
        assert!(log.lock().unwrap().is_empty(), "nothing before the window");
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut seen = log.lock().unwrap().clone();
        let b = seen.iter().position(|&n| n == 100).expect("room b emitted");
        seen.remove(b);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_room_ends_its_task_and_a_new_event_starts_another() {
        let bursts = Bursts::new(Duration::from_millis(10), CancellationToken::new());
        let count = Arc::new(AtomicU64::new(0));
        let emit = |c: &Arc<AtomicU64>| -> Emit {
            let c = c.clone();
            Box::new(move || {
                Box::pin(async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }) as BoxFuture<'static, ()>
            })
        };
        bursts.send("r", emit(&count)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
        assert!(
            bursts.rooms.lock().unwrap().is_empty(),
            "the idle task left"
        );
        bursts.send("r", emit(&count)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_zero_window_emits_at_once() {
        let bursts = Bursts::new(Duration::ZERO, CancellationToken::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        bursts.send("r", recorder(&log, 7)).await;
        assert_eq!(*log.lock().unwrap(), vec![7]);
    }
}
