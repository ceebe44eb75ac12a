//! The sweep of unsent attachments: an end user's upload (`POST /v1/me/attachments`) that no
//! message carried within `media.unsent_attachment_grace_secs` is deleted, and its blob with it
//! when no other row (another attachment or a media file of the same content) names it.
//!
//! Every replica sweeps ([`Sweeper::spawn`]); the sweep is idempotent and safe to run anywhere
//! at once, because each round is one conditional DELETE (`db::attachments::delete_unsent`) of
//! rows never marked sent, and a send marks its attachment in the message's own transaction
//! (`db::attachments::mark_sent`): a send and a sweep that meet on one row are ordered by the
//! row's lock, and either the message is stored and the attachment kept, or the attachment is
//! gone and the message refused as naming no attachment. Blobs go after the commit, under the
//! store's reference lock, as when a message is deleted.

use super::MediaStore;
use crate::db::{self, Db};
use std::sync::Arc;
use std::time::Duration;

/// Rows one statement deletes; a round repeats until fewer come back.
const BATCH: i64 = 500;

/// How often a replica sweeps for a grace period: half of it, between 1 s and 10 minutes.
pub fn interval(grace: Duration) -> Duration {
    (grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// The sweeping task of a replica.
#[derive(Clone)]
pub struct Sweeper {
    pub db: Db,
    pub media: Arc<MediaStore>,
    /// How long an upload may wait for its first message.
    pub grace: Duration,
    /// Counts the rounds and what they removed.
    pub metrics: crate::metrics::MediaMetrics,
}

impl Sweeper {
    /// One round at the current time: deletes every attachment unsent for longer than the
    /// grace period (in batches) and the blobs no row names any more. Answers how many went.
    pub async fn run_once(&self) -> Result<usize, sqlx::Error> {
        let grace_ms = i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        let before = db::now_millis().saturating_sub(grace_ms);
        let mut removed = 0;
        loop {
            let refs = self.media.lock_refs().await;
            let mut tx = self.db.begin().await?;
            let mut hashes = db::attachments::delete_unsent(&mut tx, before, BATCH).await?;
            tx.commit().await?;
            let deleted = hashes.len();
            hashes.sort();
            hashes.dedup();
            for sha256 in &hashes {
                self.media
                    .remove_if_unreferenced(&refs, &self.db, sha256)
                    .await;
            }
            drop(refs);
            self.metrics.unsent_removed.inc_by(deleted as u64);
            removed += deleted;
            if i64::try_from(deleted).unwrap_or(i64::MAX) < BATCH {
                break;
            }
        }
        if removed > 0 {
            tracing::info!(attachments = removed, "unsent attachments removed");
        }
        Ok(removed)
    }

    /// Sweeps every [`interval`] of the grace period until `stop` is cancelled.
    pub fn spawn(self, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = crate::ticker::Ticker::new(interval(self.grace), stop);
            while ticker.next().await {
                let result = match self.run_once().await {
                    Ok(_) => "ok",
                    Err(e) => {
                        tracing::warn!(error = %e, "sweeping unsent attachments failed; retrying later");
                        "error"
                    }
                };
                self.metrics
                    .unsent_sweeps
                    .with_label_values(&[result])
                    .inc();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_twice_per_grace_period_within_bounds() {
        assert_eq!(
            interval(Duration::from_secs(86_400)),
            Duration::from_secs(600)
        );
        assert_eq!(interval(Duration::from_secs(60)), Duration::from_secs(30));
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
