//! Lock helpers shared by every layer of the edge.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data even when another thread panicked while holding it: every
/// structure behind these mutexes stays consistent between statements, and one panicking
/// connection must not take the mount (and every listener on it) down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
