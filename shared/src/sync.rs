//! Lock helpers for the control plane and the edge.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data even when another thread panicked while holding it: every
/// structure behind these mutexes stays consistent between statements, and one panicking
/// connection must not take down the state (and every other connection) with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
