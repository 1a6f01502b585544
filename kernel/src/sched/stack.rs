//! Kernel thread stacks: mapped page by page with an unmapped guard page
//! below, so an overflow faults (on the page-fault IST stack) instead of
//! corrupting a neighbour. Stacks of dead threads go back to a pool and are
//! reused as they are, so their mappings never change and no TLB shootdown
//! is needed to recycle them.

use crate::mm::paging::{MapError, map_page};
use crate::mm::{PAGE_SIZE, VirtAddr, frame, vmap};
use crate::sync::IrqSpinLock;
use alloc::vec::Vec;
use x86_64::structures::paging::PageTableFlags as Flags;

/// Pages per kernel stack.
pub const STACK_PAGES: u64 = 16;

/// One mapped kernel stack.
#[derive(Debug)]
pub struct KernelStack {
    bottom: VirtAddr,
}

impl KernelStack {
    /// The address one past the highest byte (16-byte aligned).
    pub fn top(&self) -> VirtAddr {
        self.bottom + STACK_PAGES * PAGE_SIZE
    }

    fn map_new() -> Result<Self, MapError> {
        // One extra page reserved below the stack stays unmapped: the guard.
        let guard = vmap::reserve(STACK_PAGES + 1);
        let bottom = guard + PAGE_SIZE;
        for page in 0..STACK_PAGES {
            let phys = frame::alloc()?;
            map_page(bottom + page * PAGE_SIZE, phys, Flags::WRITABLE | Flags::NO_EXECUTE)?;
        }
        Ok(Self { bottom })
    }
}

static POOL: IrqSpinLock<Vec<KernelStack>> = IrqSpinLock::new(Vec::new());

/// A stack from the pool, or a newly mapped one.
///
/// # Errors
/// [`MapError`] when memory for a new stack runs out.
pub fn take() -> Result<KernelStack, MapError> {
    match POOL.lock().pop() {
        Some(stack) => Ok(stack),
        None => KernelStack::map_new(),
    }
}

/// Returns a stack whose thread is gone for good.
pub fn give_back(stack: KernelStack) {
    POOL.lock().push(stack);
}
