//! What the crate deliberately leaked because a device might still use it.
//!
//! A queue dropped without a [reset proof](crate::reset) keeps its rings,
//! its indirect tables and every in-flight request's buffers allocated
//! forever: leaking is safe, a device writing freed memory is not. These
//! counters (global, for the whole system) make each leak visible; the
//! [`Hal::dma_leaked`](crate::Hal::dma_leaked) hook reports the pages to the
//! HAL that gave them, per region.

use core::sync::atomic::{AtomicU64, Ordering};

static QUEUES: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static DMA_PAGES: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the leak counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakCounts {
    /// Queues dropped while their device might still use their rings.
    pub queues: u64,
    /// In-flight requests whose buffers were leaked with their queue.
    pub requests: u64,
    /// Pages of [`crate::Dma`] regions never returned to their HAL.
    pub dma_pages: u64,
}

/// The leak counters since boot.
pub fn leak_counts() -> LeakCounts {
    LeakCounts {
        queues: QUEUES.load(Ordering::Relaxed),
        requests: REQUESTS.load(Ordering::Relaxed),
        dma_pages: DMA_PAGES.load(Ordering::Relaxed),
    }
}

pub(crate) fn count_queue(requests: u64) {
    QUEUES.fetch_add(1, Ordering::Relaxed);
    REQUESTS.fetch_add(requests, Ordering::Relaxed);
}

pub(crate) fn count_pages(pages: usize) {
    DMA_PAGES.fetch_add(pages as u64, Ordering::Relaxed);
}
