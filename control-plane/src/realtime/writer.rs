//! Group commit of sent messages. Every `send-message` is a transaction of about ten
//! statements (checks, the message, both members' rows, the notification and its unread
//! count, three feed events, metering); at thousands of messages a second the round trips, not
//! the rows, are what the database and this process spend their time on. So messages that
//! arrive while earlier ones are being written wait and then go together: one transaction for
//! up to [`MAX_BATCH`] messages, with the same statements, each writing all of their rows. A
//! lone message goes at once, alone; under load the batches grow by themselves, and
//! [`PARALLEL`] transactions at most are in flight. A batch is `db::messages::reach_all` and
//! `insert_all` for all its messages, then per tenant the webhook events,
//! `notifications::store_many`, one feed append (`recovery::record`) and one metering row.
//!
//! Each message's answer is its own: a refusal (an unknown receiver, a block, someone else's
//! attachment) concerns only it, decided inside the batch before anything is written. When the
//! batch's transaction fails as a whole (a deadlock the database broke, a lost connection),
//! each of its messages is tried again alone, so one message never fails another.

use super::protocol::{self, Refusal};
use super::recovery::{self, Entry, Recorded};
use crate::db::{self, Conn, Db};
use crate::notifications;
use crate::webhooks::Outbox;
use onda_shared::api::{MediaType, Message, WebhookEventType};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most messages one transaction writes (its widest statement binds 12 values a message).
pub const MAX_BATCH: usize = 64;

/// The most message transactions in flight at once, of the pool's connections.
pub const PARALLEL: usize = 2;

/// A message a connected user sends, checked for form (not yet against the database).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub tenant_id: String,
    pub sender_id: String,
    pub receiver_id: String,
    pub content: String,
    /// The attachment's id and the media type the sender stated, if any.
    pub attachment: Option<(String, Option<String>)>,
}

/// A stored message and the feed events to send for it once committed.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    pub recorded: Vec<Recorded>,
}

struct Job {
    out: Outgoing,
    answer: oneshot::Sender<Result<Sent, Refusal>>,
}

/// The queue of messages to store; cloned into every handler.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the task that writes; it ends when the last `Writer` is dropped. Messages carry
    /// their attachment's URL on `public_url` (`http.public_url`) when it is set.
    pub fn start(db: Db, sizes: prometheus::Histogram, public_url: Option<Arc<str>>) -> Writer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(db, jobs, sizes, public_url));
        Writer { queue }
    }

    /// Stores `out` (with others that arrive meanwhile) and answers once it is committed.
    pub async fn send(&self, out: Outgoing) -> Result<Sent, Refusal> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job { out, answer })
            .map_err(|_| stopping())?;
        answered.await.map_err(|_| stopping())?
    }
}

fn stopping() -> Refusal {
    Refusal::new("internal", "The server is stopping; send it again.")
}

/// Takes the queued messages in batches, as transactions become free. The queue needs no
/// bound of its own: every job is a handler awaiting its answer, and each connection's event
/// budget bounds how many handlers it runs.
async fn dispatch(
    db: Db,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    sizes: prometheus::Histogram,
    public_url: Option<Arc<str>>,
) {
    let free = Arc::new(Semaphore::new(PARALLEL));
    while let Some(first) = jobs.recv().await {
        let Ok(slot) = free.clone().acquire_owned().await else {
            return;
        };
        // What queued up while every transaction was busy goes together.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(job) = jobs.try_recv()
        {
            batch.push(job);
        }
        sizes.observe(batch.len() as f64);
        let db = db.clone();
        let public_url = public_url.clone();
        tokio::spawn(async move {
            commit(&db, public_url.as_deref(), batch).await;
            drop(slot);
        });
    }
}

/// Writes a batch and answers each of its messages.
async fn commit(db: &Db, public_url: Option<&str>, batch: Vec<Job>) {
    let outs: Vec<&Outgoing> = batch.iter().map(|j| &j.out).collect();
    match write(db, public_url, &outs).await {
        Ok(answers) => {
            for (job, answer) in batch.into_iter().zip(answers) {
                let _ = job.answer.send(answer);
            }
        }
        Err(e) if batch.len() > 1 => {
            tracing::warn!(error = %e, messages = batch.len(), "realtime: a batch of messages failed; writing each alone");
            for job in batch {
                let answer = match write(db, public_url, &[&job.out]).await {
                    Ok(mut answers) => answers.pop().unwrap_or_else(|| Err(stopping())),
                    Err(e) => Err(protocol::stored(&e)),
                };
                let _ = job.answer.send(answer);
            }
        }
        Err(e) => {
            let refusal = protocol::stored(&e);
            for job in batch {
                let _ = job.answer.send(Err(refusal.clone()));
            }
        }
    }
}

/// Whether `out` may be stored (neither user blocked the other, the receiver exists, the
/// attachment is the sender's own and unsent): its media (url, type) and the sender's name.
async fn accept(
    tx: &mut Conn,
    (out, reach): (&Outgoing, db::messages::Reach),
    public_url: Option<&str>,
    now: i64,
) -> Result<Result<(Option<(String, MediaType)>, String), Refusal>, sqlx::Error> {
    if let Err(refusal) =
        super::moderation::unblocked(reach.blocked_by_sender, reach.blocked_by_receiver)
    {
        return Ok(Err(refusal));
    }
    if !reach.receiver_exists {
        return Ok(Err(Refusal::new(
            "not_found",
            format!("There is no user {:?} to send to.", out.receiver_id),
        )));
    }
    let media = match &out.attachment {
        Some((id, stated)) => {
            let sent = sender_attachment(tx, out, id, stated.as_deref(), now).await?;
            match sent.map(|(id, t)| (db::attachments::public_url(public_url, &id), t)) {
                Ok(media) => Some(media),
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        None => None,
    };
    // The sender is connected, so their profile exists; their id stands in if it went
    // meanwhile.
    let name = reach.sender_name.unwrap_or_else(|| out.sender_id.clone());
    Ok(Ok((media, name)))
}

/// One transaction for `outs`: each message's answer, or the error that undid them all.
async fn write(
    db: &Db,
    public_url: Option<&str>,
    outs: &[&Outgoing],
) -> Result<Vec<Result<Sent, Refusal>>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let asks: Vec<(&str, &str, &str)> = outs
        .iter()
        .map(|o| (&*o.tenant_id, &*o.sender_id, &*o.receiver_id))
        .collect();
    let reaches = db::messages::reach_all(&mut tx, &asks).await?;
    let now = db::now_millis();
    let mut answers: Vec<Result<Sent, Refusal>> = Vec::with_capacity(outs.len());
    // (index in outs, id, media url and type, sender's name) of each message to store.
    let mut accepted = Vec::new();
    for (i, (out, reach)) in outs.iter().zip(reaches).enumerate() {
        match accept(&mut tx, (out, reach), public_url, now).await? {
            Ok((media, name)) => {
                answers.push(Err(stopping()));
                accepted.push((i, crate::secrets::new_time_id("msg", now), media, name));
            }
            Err(refusal) => answers.push(Err(refusal)),
        }
    }
    let new: Vec<db::messages::NewMessage<'_>> = accepted
        .iter()
        .map(|(i, id, media, _)| {
            let out = outs[*i];
            db::messages::NewMessage {
                id,
                tenant_id: &out.tenant_id,
                sender_id: &out.sender_id,
                receiver_id: &out.receiver_id,
                content: &out.content,
                media_url: media.as_ref().map(|(url, _)| url.as_str()),
                media_type: media.as_ref().map(|(_, t)| t.as_str()),
                created_ms: now,
            }
        })
        .collect();
    let messages = db::messages::insert_all(&mut tx, &new).await?;
    // The rest goes per tenant: its webhook endpoints, its users' feeds, its metering.
    let mut tenants = BTreeMap::<&str, Vec<usize>>::new();
    for (k, (i, ..)) in accepted.iter().enumerate() {
        tenants.entry(&outs[*i].tenant_id).or_default().push(k);
    }
    let mut sent: Vec<Option<Sent>> = vec![None; messages.len()];
    for (tenant_id, ks) in tenants {
        let outbox = Outbox::load(&mut tx, tenant_id).await?;
        for &k in &ks {
            outbox
                .enqueue(&mut tx, WebhookEventType::MessageCreated, &messages[k])
                .await?;
        }
        let contents: Vec<notifications::Content> = ks
            .iter()
            .map(|&k| notifications::for_message(&accepted[k].3, &messages[k]))
            .collect();
        let items: Vec<(&str, &notifications::Content)> = ks
            .iter()
            .zip(&contents)
            .map(|(&k, c)| (messages[k].receiver_id.as_str(), c))
            .collect();
        let notices = notifications::store_many(&mut tx, &outbox, &items, now).await?;
        // Every device of both users but the one that sent it (which has the ack), and the
        // receiver's notification.
        let mut entries = Vec::with_capacity(3 * ks.len());
        for (&k, notice) in ks.iter().zip(&notices) {
            let m = &messages[k];
            let body = json!(m);
            entries.push(Entry::new(&m.receiver_id, "receive-message", body.clone()));
            entries.push(Entry::new(&m.sender_id, "receive-message", body));
            entries.push(Entry::new(
                &m.receiver_id,
                protocol::NOTIFICATION,
                json!(notice),
            ));
        }
        let mut recorded = recovery::record(&mut tx, tenant_id, entries)
            .await?
            .into_iter();
        for &k in &ks {
            sent[k] = Some(Sent {
                message: messages[k].clone(),
                recorded: recorded.by_ref().take(3).collect(),
            });
        }
        // Metered with the messages, so they are billed exactly when they were stored. Last: on
        // PostgreSQL the tenant's usage row of the day stays locked until the commit.
        db::realtime_usage::add(&mut tx, tenant_id, now, 0, ks.len() as u64).await?;
    }
    tx.commit().await?;
    for ((i, ..), sent) in accepted.iter().zip(sent) {
        answers[*i] = sent.ok_or_else(stopping);
    }
    Ok(answers)
}

/// The attachment a message carries: one its sender uploaded, in their tenant, marked sent in
/// the message's transaction (so the sweep of unsent uploads keeps it). Another's (of this
/// tenant or another) is refused exactly as an unknown one, so an id tells no one whether it
/// exists. Answers its id and media type.
async fn sender_attachment(
    conn: &mut Conn,
    out: &Outgoing,
    id: &str,
    stated_type: Option<&str>,
    now_ms: i64,
) -> Result<Result<(String, MediaType), Refusal>, sqlx::Error> {
    let not_yours = || {
        Refusal::new(
            "not_found",
            "mediaUrl names no attachment of yours: upload the file with POST \
             /v1/me/attachments and send the url it answers.",
        )
    };
    let Some(stored) = db::attachments::get(conn, id)
        .await?
        .filter(|a| a.tenant_id == out.tenant_id && a.user_id == out.sender_id)
    else {
        return Ok(Err(not_yours()));
    };
    let media_type = match protocol::media_type(stated_type, stored.attachment.media_type) {
        Ok(t) => t,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // Marked only once the message will be stored; gone meanwhile (swept) is as unknown.
    if !db::attachments::mark_sent(conn, id, &out.tenant_id, &out.sender_id, now_ms).await? {
        return Ok(Err(not_yours()));
    }
    Ok(Ok((stored.attachment.id, media_type)))
}
