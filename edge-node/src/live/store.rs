//! Where live streams' segments are kept: one file per segment, in a directory of the edge's
//! own (`hls.segment_dir`, else a private one under the system's temporary directory).
//! A stream's window then sits in the kernel's page cache, which the kernel reclaims under
//! memory pressure, instead of in the edge's own memory, as nginx-rtmp and SRS keep theirs.
//!
//! One thread writes and deletes the files, in the order asked, so no async task waits on the
//! disk: each completed part is written at its offset in its segment's file, and served from
//! memory until it is. When too many writes wait or one fails, the part stays in memory;
//! nothing is lost. Deletions always queue (they are small), so no file outlives its segment.

use bytes::Bytes;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

/// Writes waiting for the writer; beyond this a part stays in memory (a disk this far behind
/// is better not waited for).
const QUEUE: usize = 256;

/// Stale directories of an edge that did not stop cleanly start with this.
const PREFIX: &str = "live-";

/// What the writer reports when a segment's file is written (or not).
pub(crate) type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

enum Job {
    Write {
        path: PathBuf,
        at: u64,
        data: Bytes,
        done: Done,
    },
    Remove(PathBuf),
    RemoveDir(PathBuf),
}

/// The writer's queue: jobs in order, and how many of them are writes.
#[derive(Clone)]
struct Queue {
    jobs: Sender<Job>,
    writes: Arc<AtomicUsize>,
}

/// The edge's segment directory and its writer thread.
pub(crate) struct Store {
    root: tempfile::TempDir,
    queue: Queue,
    next: AtomicU64,
}

impl Store {
    /// A fresh directory for this edge: under `dir` (created if missing; what an edge that was
    /// killed left there is removed), else under the system's temporary directory. The
    /// directory goes when the store does.
    pub(crate) fn open(dir: Option<&Path>) -> io::Result<Store> {
        let root = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                for entry in std::fs::read_dir(dir)?.flatten() {
                    if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
                tempfile::Builder::new().prefix(PREFIX).tempdir_in(dir)?
            }
            None => tempfile::Builder::new().prefix("onda-hls-").tempdir()?,
        };
        let (jobs, rx) = channel();
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = writes.clone();
        std::thread::Builder::new()
            .name("onda-hls-files".into())
            .spawn(move || work(&rx, &counted))?;
        Ok(Store {
            root,
            queue: Queue { jobs, writes },
            next: AtomicU64::new(0),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.root.path()
    }

    /// A directory for one stream's segments (made with its first file).
    pub(crate) fn stream(&self) -> Files {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Files {
            dir: self.root.path().join(n.to_string()),
            queue: self.queue.clone(),
        }
    }
}

fn work(rx: &Receiver<Job>, writes: &AtomicUsize) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Write {
                path,
                at,
                data,
                done,
            } => {
                let r = write(&path, at, &data);
                writes.fetch_sub(1, Ordering::Relaxed);
                done(r);
            }
            Job::Remove(path) => {
                let _ = std::fs::remove_file(path);
            }
            Job::RemoveDir(path) => {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

/// Writes `data` at offset `at` of the file at `path`, made (with its stream's directory) when
/// missing. At an offset rather than appended, so a part whose write failed leaves the next
/// ones where they belong. Only the stream's directory is made: once the edge's own is gone
/// (the edge stopped), a late write fails instead of leaving a directory behind.
fn write(path: &Path, at: u64, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                match std::fs::create_dir(dir) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
            }
            open()?
        }
        r => r?,
    };
    file.write_all_at(data, at)
}

/// One stream's segment files; the directory goes when this does.
pub(crate) struct Files {
    dir: PathBuf,
    queue: Queue,
}

impl Files {
    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq}.ts"))
    }

    /// Queues `data` to be written at `at` in segment `seq`'s file; `done` hears how it went.
    /// False (and `done` dropped uncalled) when `QUEUE` writes already wait or the writer is
    /// gone.
    pub(crate) fn write(&self, seq: u64, at: u64, data: Bytes, done: Done) -> bool {
        let waiting = &self.queue.writes;
        if waiting.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            waiting.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let job = Job::Write {
            path: self.path(seq),
            at,
            data,
            done,
        };
        if self.queue.jobs.send(job).is_err() {
            waiting.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues segment `seq`'s file for deletion, after every write queued before.
    pub(crate) fn remove(&self, seq: u64) {
        let _ = self.queue.jobs.send(Job::Remove(self.path(seq)));
    }

    /// `range` of segment `seq`'s file, read on a blocking thread.
    pub(crate) async fn read(&self, seq: u64, range: Range<u64>) -> io::Result<Bytes> {
        let path = self.path(seq);
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| io::Error::other("range too long"))?;
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            let file = std::fs::File::open(path)?;
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, range.start)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        let _ = self.queue.jobs.send(Job::RemoveDir(dir));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// What `done` heard, waited for (the writer is another thread).
    fn written_at(files: &Files, seq: u64, at: u64, data: &'static [u8]) -> io::Result<()> {
        let (tx, rx) = channel();
        let queued = files.write(
            seq,
            at,
            Bytes::from_static(data),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        assert!(queued);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the writer answers")
    }

    fn written(files: &Files, seq: u64, data: &'static [u8]) -> io::Result<()> {
        written_at(files, seq, 0, data)
    }

    #[tokio::test]
    async fn segments_are_written_read_by_range_and_removed_with_their_directory() {
        let parent = tempfile::tempdir().expect("tempdir");
        let stale = parent.path().join("live-old");
        std::fs::create_dir_all(stale.join("0")).expect("stale dir");
        let keep = parent.path().join("other");
        std::fs::write(&keep, b"not ours").expect("file");
        let store = Store::open(Some(parent.path())).expect("store");
        assert!(!stale.exists(), "a killed edge's directory is removed");
        assert!(keep.exists(), "what is not ours stays");
        let files = store.stream();
        // Parts land at their offsets, in whatever order they are written.
        written_at(&files, 7, 5, b"56789").expect("written");
        written_at(&files, 7, 0, b"01234").expect("written");
        assert_eq!(files.read(7, 2..8).await.expect("read"), &b"234567"[..]);
        assert_eq!(
            files.read(8, 0..1).await.map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        files.remove(7);
        // The writer works in order: once a later write is done, the removal is too.
        written(&files, 9, b"x").expect("written");
        assert!(!files.path(7).exists());
        let dir = files.dir.clone();
        drop(files);
        let other = store.stream();
        written(&other, 0, b"y").expect("written");
        assert!(!dir.exists(), "a dropped stream's directory goes");
        let root = store.path().to_path_buf();
        drop(other);
        let late = store.stream();
        drop(store);
        assert!(!root.exists(), "the edge's directory goes with it");
        assert!(
            written(&late, 0, b"z").is_err(),
            "a write after the edge stopped fails"
        );
        assert!(!root.exists(), "and does not make the directory again");
    }

    #[test]
    fn a_write_that_fails_says_so() {
        let store = Store::open(None).expect("store");
        let files = store.stream();
        // A file where the stream's directory should be.
        std::fs::write(&files.dir, b"in the way").expect("file");
        assert!(written(&files, 0, b"z").is_err());
    }
}
