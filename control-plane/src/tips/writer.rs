//! Group commit of tips. A tip alone is a transaction of about twenty statements whose last
//! one, the creator's feed row, every tip to that creator waits on until the commit (offsets
//! commit in order): at hundreds of tips a second to one creator the commits, each a WAL flush,
//! run one after the other, and the round trips are what the database and this process spend
//! their time on. So tips that arrive while earlier ones are being written wait and then go
//! together: one transaction for up to [`MAX_BATCH`] tips, in a few statements for the whole
//! batch ([`super::batch`]). A lone tip goes at once, alone; under load the batches grow by
//! themselves, and [`PARALLEL`] transactions at most are in flight.
//!
//! Each tip's answer is its own: a refusal concerns only it. When the batch's transaction fails
//! as a whole (a deadlock the database broke, a lost connection), each of its tips is written
//! again alone, so one tip never fails another. Two tips with the same key never share a batch
//! (the second waits for the next one and then finds the first's answer).
//!
//! At most [`MAX_QUEUED`] tips wait: past that a tip is refused at once as busy (try again with
//! the same key), rather than waiting longer than any client would.

use super::{Queued, Refused, Sent, batch};
use crate::db::Db;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most tips one transaction writes (its widest statement binds 9 values a tip).
pub const MAX_BATCH: usize = 64;

/// The most tip transactions in flight at once, of the pool's connections.
pub const PARALLEL: usize = 2;

/// The most tips waiting for a transaction; more are refused as busy. At 500 tips a second this
/// is about four seconds of them.
pub const MAX_QUEUED: usize = 2048;

struct Job {
    tip: Queued,
    answer: oneshot::Sender<Result<Sent, Refused>>,
}

/// The queue of tips to write; cloned into every handler.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

fn stopping() -> Refused {
    Refused::Busy("The server is stopping; send the tip again with the same key.".to_string())
}

impl Writer {
    /// Starts the task that writes; it ends when the last `Writer` is dropped. `sizes` observes
    /// how many tips each transaction wrote.
    pub fn start(db: Db, sizes: prometheus::Histogram) -> Writer {
        Writer::with_room(db, sizes, MAX_QUEUED)
    }

    /// As [`Writer::start`], with room for `queued` waiting tips.
    fn with_room(db: Db, sizes: prometheus::Histogram, queued: usize) -> Writer {
        let (queue, jobs) = mpsc::channel(queued);
        tokio::spawn(dispatch(db, jobs, sizes));
        Writer { queue }
    }

    /// Writes `tip` (with others that arrive meanwhile) and answers once it is committed.
    pub(super) async fn send(&self, tip: Queued) -> Result<Sent, Refused> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .try_send(Job { tip, answer })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Refused::Busy(format!(
                    "The server has {} tips waiting to be written; nothing was done with this \
                     one. Send it again in a moment with the same key.",
                    self.queue.max_capacity()
                )),
                mpsc::error::TrySendError::Closed(_) => stopping(),
            })?;
        answered.await.map_err(|_| stopping())?
    }
}

/// Takes the queued tips in batches, as transactions become free. A tip whose key is already in
/// the batch is held for the next one.
async fn dispatch(db: Db, mut jobs: mpsc::Receiver<Job>, sizes: prometheus::Histogram) {
    let free = Arc::new(Semaphore::new(PARALLEL));
    let mut held: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match held.pop_front() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let Ok(slot) = free.clone().acquire_owned().await else {
            return;
        };
        // What queued up while every transaction was busy goes together.
        let mut keys = HashSet::new();
        let (mut batch, mut later) = (Vec::new(), VecDeque::new());
        let mut offer = |job: Job, batch: &mut Vec<Job>| {
            let key = (job.tip.tenant_id.clone(), job.tip.key.clone());
            if batch.len() < MAX_BATCH && keys.insert(key) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        };
        offer(first, &mut batch);
        for job in std::mem::take(&mut held) {
            offer(job, &mut batch);
        }
        while batch.len() < MAX_BATCH
            && let Ok(job) = jobs.try_recv()
        {
            offer(job, &mut batch);
        }
        held = later;
        sizes.observe(batch.len() as f64);
        let db = db.clone();
        tokio::spawn(async move {
            commit(&db, batch).await;
            drop(slot);
        });
    }
}

/// Writes a batch and answers each of its tips.
async fn commit(db: &Db, batch: Vec<Job>) {
    let tips: Vec<&Queued> = batch.iter().map(|j| &j.tip).collect();
    match batch::write(db, &tips).await {
        Ok(answers) => {
            for (job, answer) in batch.into_iter().zip(answers) {
                let _ = job.answer.send(answer);
            }
        }
        Err(e) if batch.len() > 1 => {
            tracing::warn!(error = %e, tips = batch.len(), "tips: a batch failed; writing each alone");
            for job in batch {
                let answer = match batch::write(db, &[&job.tip]).await {
                    Ok(mut answers) => answers.pop().unwrap_or_else(|| Err(stopping())),
                    Err(e) => Err(Refused::Database(e)),
                };
                let _ = job.answer.send(answer);
            }
        }
        Err(e) => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.answer.send(Err(Refused::Database(e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onda_shared::api::CreateTip;
    use std::task::Poll;

    fn tip(key: usize) -> Queued {
        Queued {
            tenant_id: "ten_x".into(),
            payer: "fan".into(),
            key: format!("key-{key}"),
            req: CreateTip {
                creator_id: "creator".into(),
                amount: 5,
                message: String::new(),
                stream_id: None,
            },
            hash: "h".into(),
        }
    }

    /// While the database holds every transaction up, tips fill the queue and the rest are
    /// refused as busy at once; once it lets go, every queued tip is answered, none as busy, and
    /// a busy tip sent again with its key is taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_as_busy_and_loses_nothing_it_took() {
        let (_dir, db) = crate::db::scratch(PARALLEL as u32 + 1).await;
        // The write lock, held: the writer's transactions wait at their BEGIN.
        let lock = db.begin().await.expect("lock");
        let sizes = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("s", "s"))
            .expect("histogram");
        const ROOM: usize = 4;
        const SENT: usize = 200;
        let writer = Writer::with_room(db.clone(), sizes, ROOM);
        let (mut waiting, mut busy) = (Vec::new(), Vec::new());
        for i in 0..SENT {
            // One poll enqueues the tip or refuses it.
            let mut send = Box::pin(writer.send(tip(i)));
            let once = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
            match once {
                Poll::Pending => waiting.push(send),
                Poll::Ready(Err(Refused::Busy(m))) => {
                    assert!(m.contains(&format!("{ROOM} tips waiting")), "{m}");
                    busy.push(i);
                }
                Poll::Ready(other) => panic!("tip {i} answered while the lock was held: {other:?}"),
            }
        }
        // At most two transactions' batches and the tip waiting for a third were taken off the
        // queue; the rest of what did not fit in it was refused.
        assert!(
            busy.len() >= SENT - (PARALLEL * MAX_BATCH + 1 + ROOM),
            "{} busy of {SENT}",
            busy.len()
        );
        lock.rollback().await.expect("release");
        // A tip lost in the writer would never be answered: bounded, it fails the test.
        let answers = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            futures_util::future::join_all(waiting),
        )
        .await
        .expect("every queued tip answered within 60 s of the lock's release");
        for (n, answer) in answers.into_iter().enumerate() {
            assert!(
                !matches!(answer, Err(Refused::Busy(_))),
                "queued tip {n}: {answer:?}"
            );
        }
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            writer.send(tip(busy[0])),
        )
        .await
        .expect("answered");
        assert!(!matches!(again, Err(Refused::Busy(_))), "{again:?}");
    }
}
