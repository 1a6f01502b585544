//! [`SplitQueue`] behind the layout-free [`Virtqueue`] trait: each method
//! forwards to the inherent one of the same name.

use super::SplitQueue;
use crate::Result;
use crate::buffer::DmaBuffers;
use crate::hal::Hal;
use crate::queue::{QueueStats, Rejected, RingAddresses, Token, Used, Virtqueue};
use crate::reset::{QueueReset, ResetProof};
use crate::transport::{Notifier, Transport};

impl<H: Hal, B: DmaBuffers> Virtqueue<B> for SplitQueue<H, B> {
    #[inline]
    fn add(&mut self, buffers: B) -> core::result::Result<Token, Rejected<B>> {
        SplitQueue::add(self, buffers)
    }
    #[inline]
    fn should_notify(&mut self) -> Result<bool> {
        SplitQueue::should_notify(self)
    }
    #[inline]
    fn kick<T: Transport>(&mut self, transport: &mut T) -> Result<bool> {
        SplitQueue::kick(self, transport)
    }
    #[inline]
    fn kick_with<N: Notifier + ?Sized>(&mut self, notifier: &N) -> Result<bool> {
        SplitQueue::kick_with(self, notifier)
    }
    fn queue_index(&self) -> u16 {
        self.index
    }
    fn size(&self) -> u16 {
        self.size
    }
    fn num_free(&self) -> u16 {
        self.num_free
    }
    fn in_flight(&self) -> u16 {
        self.in_flight
    }
    fn ring_addresses(&self) -> RingAddresses {
        SplitQueue::ring_addresses(self)
    }
    #[inline]
    fn pop_used(&mut self) -> Result<Option<Used<B>>> {
        SplitQueue::pop_used(self)
    }
    #[inline]
    fn enable_interrupts(&mut self) -> Result<bool> {
        SplitQueue::enable_interrupts(self)
    }
    #[inline]
    fn disable_interrupts(&mut self) -> Result {
        SplitQueue::disable_interrupts(self)
    }
    fn reset_queue<T: Transport>(&mut self, transport: &mut T) -> Result<QueueReset> {
        SplitQueue::reset_queue(self, transport)
    }
    fn reclaim<P: ResetProof>(
        &mut self,
        proof: &P,
        reclaim: impl FnMut(Token, B),
    ) -> Result<usize> {
        SplitQueue::reclaim(self, proof, reclaim)
    }
    fn restart<T: Transport>(&mut self, transport: &mut T) -> Result {
        SplitQueue::restart(self, transport)
    }
    fn stats(&self) -> QueueStats {
        self.stats
    }
    fn reset_stats(&mut self) {
        self.stats = QueueStats::default();
    }
}
