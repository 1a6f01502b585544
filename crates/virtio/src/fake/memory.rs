//! Host memory as a device would see it: [`FakeHal`] (coherent, like
//! vireo's kernel) and [`BounceHal`] (nothing is visible to the device
//! until shared; buffers are bounced through copies), both keeping a
//! registry of what the device may touch, which [`DeviceMemory`] checks on
//! every access.
//!
//! Addresses are host pointers (physical = virtual on the host).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::BTreeMap;
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use crate::hal::{Hal, PAGE_SIZE, PhysAddr, Sharing};

/// A device access outside memory it may touch: never allocated, freed,
/// never shared, or no longer shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaFault {
    /// First byte of the access.
    pub addr: PhysAddr,
    /// Bytes accessed.
    pub len: usize,
    /// Whether the device was writing.
    pub write: bool,
}

impl fmt::Display for DmaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.write { "write" } else { "read" };
        write!(f, "device {what} of {} bytes at {:#x} outside shared memory", self.len, self.addr)
    }
}

/// What the HAL has handed out and what is still live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// `dma_alloc` regions not yet freed (leaked ones included).
    pub live_allocations: usize,
    /// Pages reported leaked through `dma_leaked`.
    pub leaked_pages: usize,
    /// Ring areas shared coherently and not yet unshared.
    pub live_coherent: usize,
    /// Buffer sharings (bounces) not yet unshared.
    pub live_bounces: usize,
    /// Buffer sharings ever made.
    pub bounces: u64,
    /// Bytes copied into bounce slots (at `share`).
    pub bytes_in: u64,
    /// Bytes copied back out of bounce slots (at `unshare`).
    pub bytes_out: u64,
    /// Shares refused because the bounce window was full.
    pub refused: u64,
    /// Device accesses refused ([`DmaFault`]s).
    pub faults: usize,
}

/// A range the device may access.
#[derive(Clone, Copy, Debug)]
struct Window {
    len: usize,
    /// For a bounce slot: the driver memory it stands for.
    bounce: Option<(PhysAddr, Sharing)>,
}

#[derive(Default)]
struct Registry {
    /// Driver memory from `dma_alloc`: start → bytes.
    allocations: BTreeMap<PhysAddr, usize>,
    /// Coherent shares (ring areas): start → bytes.
    coherent: BTreeMap<PhysAddr, usize>,
    /// What the device may access: start → range.
    windows: BTreeMap<PhysAddr, Window>,
    /// Bytes of bounce slots live, and the most allowed (`None`: no limit).
    bounce_bytes: usize,
    bounce_limit: Option<usize>,
    faults: Vec<DmaFault>,
    stats: MemoryStats,
}

fn containing(map: &BTreeMap<PhysAddr, usize>, addr: PhysAddr, len: usize) -> bool {
    map.range(..=addr).next_back().is_some_and(|(&start, &n)| {
        addr.checked_add(len as u64).is_some_and(|end| end <= start + n as u64)
    })
}

impl Registry {
    fn window_of(&self, addr: PhysAddr, len: usize) -> bool {
        self.windows.range(..=addr).next_back().is_some_and(|(&start, w)| {
            addr.checked_add(len as u64).is_some_and(|end| end <= start + w.len as u64)
        })
    }
}

/// The device's view of host memory, shared by a fake HAL and the fake
/// devices: every access is checked against what the HAL says the device
/// may reach right now, and refused (counted, kept in
/// [`DeviceMemory::faults`]) otherwise.
#[derive(Clone, Default)]
pub struct DeviceMemory {
    registry: Arc<Mutex<Registry>>,
}

impl fmt::Debug for DeviceMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceMemory").field("stats", &self.stats()).finish()
    }
}

impl DeviceMemory {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies `buf.len()` bytes at device address `addr` into `buf`.
    ///
    /// # Errors
    ///
    /// A [`DmaFault`] if the range is not all device-visible.
    pub fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), DmaFault> {
        let mut registry = self.lock();
        if !registry.window_of(addr, buf.len()) {
            return Err(fault(&mut registry, addr, buf.len(), false));
        }
        // SAFETY: the range lies in a live window (an allocation or a
        // bounce slot the registry keeps allocated while it is listed, and
        // the lock keeps it listed during the copy).
        unsafe { copy_volatile(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` to device address `addr`.
    ///
    /// # Errors
    ///
    /// A [`DmaFault`] if the range is not all device-visible.
    pub fn write(&self, addr: PhysAddr, data: &[u8]) -> Result<(), DmaFault> {
        let mut registry = self.lock();
        if !registry.window_of(addr, data.len()) {
            return Err(fault(&mut registry, addr, data.len(), true));
        }
        // SAFETY: as in `read`; the device owns these bytes while shared.
        unsafe { copy_volatile(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }

    /// Reads a little-endian `u16` (one access when aligned).
    ///
    /// # Errors
    ///
    /// As [`DeviceMemory::read`].
    pub fn read_u16(&self, addr: PhysAddr) -> Result<u16, DmaFault> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a little-endian `u16` (one access when aligned).
    ///
    /// # Errors
    ///
    /// As [`DeviceMemory::write`].
    pub fn write_u16(&self, addr: PhysAddr, v: u16) -> Result<(), DmaFault> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Every refused access so far.
    pub fn faults(&self) -> Vec<DmaFault> {
        self.lock().faults.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MemoryStats {
        let registry = self.lock();
        MemoryStats { faults: registry.faults.len(), ..registry.stats }
    }
}

fn fault(registry: &mut Registry, addr: PhysAddr, len: usize, write: bool) -> DmaFault {
    let f = DmaFault { addr, len, write };
    registry.faults.push(f);
    f
}

/// Copies like a device: one volatile access per aligned 8/4/2-byte field
/// (so an index the other side polls is never torn), bytes otherwise.
///
/// # Safety
///
/// Both ranges must be valid for `len` bytes and not overlap.
unsafe fn copy_volatile(src: *const u8, dst: *mut u8, len: usize) {
    let aligned = |n: usize| (src as usize | dst as usize).is_multiple_of(n) && len == n;
    // SAFETY: the caller's ranges; each branch accesses exactly `len` bytes.
    unsafe {
        if aligned(2) {
            dst.cast::<u16>().write_volatile(src.cast::<u16>().read_volatile());
        } else if aligned(4) {
            dst.cast::<u32>().write_volatile(src.cast::<u32>().read_volatile());
        } else if aligned(8) {
            dst.cast::<u64>().write_volatile(src.cast::<u64>().read_volatile());
        } else {
            for i in 0..len {
                dst.add(i).write_volatile(src.add(i).read_volatile());
            }
        }
    }
}

fn page_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

impl DeviceMemory {
    fn alloc(&self, pages: usize, device_visible: bool) -> Option<(PhysAddr, NonNull<u8>)> {
        let layout = page_layout(pages)?;
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let p = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        let addr = p.as_ptr() as PhysAddr;
        let mut registry = self.lock();
        registry.allocations.insert(addr, layout.size());
        if device_visible {
            registry.windows.insert(addr, Window { len: layout.size(), bounce: None });
        }
        registry.stats.live_allocations += 1;
        Some((addr, p))
    }

    fn dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        let layout = page_layout(pages).expect("layout of a live allocation");
        let mut registry = self.lock();
        let len = registry.allocations.remove(&paddr);
        assert_eq!(len, Some(layout.size()), "dma_dealloc of {paddr:#x}: not a live allocation");
        let end = paddr + layout.size() as u64;
        assert!(
            registry.coherent.range(paddr..end).next().is_none(),
            "dma_dealloc of {paddr:#x} while part of it is still shared"
        );
        registry.windows.remove(&paddr);
        registry.stats.live_allocations -= 1;
        drop(registry);
        // SAFETY: allocated by `alloc` with this layout (checked above).
        unsafe { dealloc(vaddr.as_ptr(), layout) }
    }

    fn leaked(&self, pages: usize) {
        self.lock().stats.leaked_pages += pages;
    }

    fn share_coherent(&self, paddr: PhysAddr, len: usize, in_place: bool) -> Option<PhysAddr> {
        let mut registry = self.lock();
        assert!(
            containing(&registry.allocations, paddr, len),
            "coherent share of {paddr:#x}+{len}: not inside a live dma_alloc region"
        );
        let fresh = registry.coherent.insert(paddr, len).is_none();
        assert!(fresh, "{paddr:#x} shared coherently twice");
        if in_place {
            registry.windows.insert(paddr, Window { len, bounce: None });
        }
        registry.stats.live_coherent += 1;
        Some(paddr)
    }

    fn unshare_coherent(&self, paddr: PhysAddr, in_place: bool) {
        let mut registry = self.lock();
        let shared = registry.coherent.remove(&paddr).is_some();
        assert!(shared, "coherent unshare of {paddr:#x}: not shared");
        if in_place {
            registry.windows.remove(&paddr);
        }
        registry.stats.live_coherent -= 1;
    }

    fn bounce_in(&self, paddr: PhysAddr, len: usize, sharing: Sharing) -> Option<PhysAddr> {
        let mut registry = self.lock();
        if registry.bounce_limit.is_some_and(|limit| registry.bounce_bytes + len > limit) {
            registry.stats.refused += 1;
            return None;
        }
        let layout = Layout::from_size_align(len, 8).ok()?;
        // SAFETY: `len > 0`: the ring never shares an empty segment.
        let slot = unsafe { alloc_zeroed(layout) };
        if slot.is_null() {
            return None;
        }
        // Copied in for both directions: the device may write only part of
        // a FromDevice buffer, and the rest must come back unchanged.
        // SAFETY: the caller of `share` owns `len` bytes at `paddr`; the slot
        // was just allocated with `len` bytes.
        unsafe { copy_volatile(paddr as *const u8, slot, len) };
        let device = slot as PhysAddr;
        registry.windows.insert(device, Window { len, bounce: Some((paddr, sharing)) });
        registry.bounce_bytes += len;
        registry.stats.live_bounces += 1;
        registry.stats.bounces += 1;
        registry.stats.bytes_in += len as u64;
        Some(device)
    }

    fn bounce_out(&self, device: PhysAddr, paddr: PhysAddr, len: usize, sharing: Sharing) {
        let mut registry = self.lock();
        let w = registry.windows.remove(&device);
        assert!(
            w.is_some_and(|w| w.len == len && w.bounce == Some((paddr, sharing))),
            "unshare({device:#x}, {paddr:#x}, {len}, {sharing:?}) matches no live share"
        );
        if sharing == Sharing::FromDevice {
            // SAFETY: the slot is live (just unlisted, not yet freed); the
            // caller of `unshare` owns `len` bytes at `paddr` again.
            unsafe { copy_volatile(device as *const u8, paddr as *mut u8, len) };
            registry.stats.bytes_out += len as u64;
        }
        registry.bounce_bytes -= len;
        registry.stats.live_bounces -= 1;
        drop(registry);
        let layout = Layout::from_size_align(len, 8).expect("layout of a live slot");
        // SAFETY: allocated in `bounce_in` with this layout, now unlisted so
        // no device access can reach it.
        unsafe { dealloc(device as *mut u8, layout) }
    }
}

/// A coherent HAL over host memory, like a kernel on x86 without an IOMMU:
/// every `dma_alloc` region is visible to the device at its own address
/// until freed, and buffers are not shared ([`Hal::SHARES_BUFFERS`] is
/// `false`: the ring's fast path). A device access to memory that was
/// never allocated, or was freed, is a [`DmaFault`].
#[derive(Clone, Debug, Default)]
pub struct FakeHal {
    memory: DeviceMemory,
}

impl FakeHal {
    /// A HAL with an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The device's view of this HAL's memory (give it to the fake device).
    pub fn memory(&self) -> &DeviceMemory {
        &self.memory
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MemoryStats {
        self.memory.stats()
    }
}

// SAFETY: allocations come zeroed and page aligned from the global
// allocator, owned by nobody else until `dma_dealloc`; on the host the
// device (the fakes) reaches them at their own address, coherently, so
// identity is the right answer for every sharing.
unsafe impl Hal for FakeHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        self.memory.alloc(pages, true)
    }
    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        self.memory.dealloc(paddr, vaddr, pages);
    }
    fn dma_leaked(&self, _paddr: PhysAddr, pages: usize) {
        self.memory.leaked(pages);
    }
    unsafe fn share(&self, paddr: PhysAddr, len: usize, sharing: Sharing) -> Option<PhysAddr> {
        // Only ring areas come here (buffers are not shared).
        assert_eq!(sharing, Sharing::Coherent, "FakeHal does not share buffers");
        self.memory.share_coherent(paddr, len, false)
    }
    unsafe fn unshare(&self, _device: PhysAddr, paddr: PhysAddr, _len: usize, _s: Sharing) {
        self.memory.unshare_coherent(paddr, false);
    }
}

/// A HAL for platforms where the device sees nothing it was not given:
/// a confidential guest's shared window, an IOMMU, a device that can reach
/// only some memory. `dma_alloc` memory is private; ring areas become
/// visible in place when shared coherently; every request buffer is
/// *bounced*: copied into a fresh slot the device sees at another address
/// at `share`, copied back (for [`Sharing::FromDevice`]) and freed at
/// `unshare`. So a device model that reads or writes anything the ring did
/// not share — or still uses a slot after it was unshared — gets a
/// [`DmaFault`], and data only arrives if the ring shares and unshares at
/// the right moments.
#[derive(Clone, Debug, Default)]
pub struct BounceHal {
    memory: DeviceMemory,
}

impl BounceHal {
    /// A bouncing HAL with an unlimited bounce window.
    pub fn new() -> Self {
        Self::default()
    }

    /// A bouncing HAL whose live bounce slots hold at most `bytes` bytes:
    /// a share beyond it is refused ([`crate::Error::DmaShare`]).
    pub fn with_window(bytes: usize) -> Self {
        let hal = Self::default();
        hal.memory.lock().bounce_limit = Some(bytes);
        hal
    }

    /// The device's view of this HAL's memory (give it to the fake device).
    pub fn memory(&self) -> &DeviceMemory {
        &self.memory
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MemoryStats {
        self.memory.stats()
    }
}

// SAFETY: allocations as for `FakeHal`, but listed as device-visible only
// while shared; a coherent share exposes the allocation itself (the device
// sees the CPU's bytes, coherently); a buffer share hands out a fresh slot
// holding a copy of the buffer, which reaches nothing else and is copied
// back (FromDevice) and freed only at `unshare`.
unsafe impl Hal for BounceHal {
    const SHARES_BUFFERS: bool = true;

    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        self.memory.alloc(pages, false)
    }
    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        self.memory.dealloc(paddr, vaddr, pages);
    }
    fn dma_leaked(&self, _paddr: PhysAddr, pages: usize) {
        self.memory.leaked(pages);
    }
    unsafe fn share(&self, paddr: PhysAddr, len: usize, sharing: Sharing) -> Option<PhysAddr> {
        match sharing {
            Sharing::Coherent => self.memory.share_coherent(paddr, len, true),
            _ => self.memory.bounce_in(paddr, len, sharing),
        }
    }
    unsafe fn unshare(&self, device: PhysAddr, paddr: PhysAddr, len: usize, sharing: Sharing) {
        match sharing {
            Sharing::Coherent => self.memory.unshare_coherent(paddr, true),
            _ => self.memory.bounce_out(device, paddr, len, sharing),
        }
    }
}
