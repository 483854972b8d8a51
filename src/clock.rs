//! The wall clock, in Unix seconds: protocol code and every lifetime receive `now` from here.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Clones share an offset, so tests can move the whole application forward in time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> i64 {
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        wall + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock and all its clones `seconds` forward.
    #[cfg(any(test, feature = "testing"))]
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
    }
}
