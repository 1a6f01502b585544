//! Just enough qcow2 (QEMU's docs/interop/qcow2.txt, version 2) for
//! `blk-flush-durable`: create an empty image and read the guest's view of
//! it back, without qemu-img.
//!
//! Why qcow2: with a raw file every guest write is a `pwrite` before QEMU
//! completes it, so the host's page cache keeps it through a SIGKILL
//! whether or not the guest flushed. qcow2 keeps a new cluster's L2 table
//! entry in QEMU's own metadata cache until a flush (or an eviction)
//! writes it out: a write that was never flushed is gone after `kill -9`,
//! so the check can tell a flush from none.

use std::fs;
use std::path::Path;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// L2 entries per table: one cluster of 8-byte entries.
const L2_ENTRIES: u64 = CLUSTER / 8;
/// The offset bits of L1 and L2 entries (bits 9-55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;

/// Writes an empty image of `size` guest bytes: header (cluster 0),
/// refcount table (1), refcount block (2), L1 table (3), each cluster's
/// refcount 1.
pub fn create(path: &Path, size: u64) -> Result<(), String> {
    let l1_entries = size.div_ceil(CLUSTER * L2_ENTRIES);
    if l1_entries * 8 > CLUSTER {
        return Err("image too large for a one-cluster L1 table".into());
    }
    let mut image = vec![0u8; 4 * CLUSTER as usize];
    let put32 = |image: &mut [u8], at: usize, value: u32| {
        image[at..at + 4].copy_from_slice(&value.to_be_bytes())
    };
    let put64 = |image: &mut [u8], at: usize, value: u64| {
        image[at..at + 8].copy_from_slice(&value.to_be_bytes())
    };
    image[0..4].copy_from_slice(b"QFI\xfb");
    put32(&mut image, 4, 2); // version
    put32(&mut image, 20, CLUSTER_BITS);
    put64(&mut image, 24, size);
    put32(&mut image, 32, 0); // no encryption
    put32(&mut image, 36, l1_entries as u32);
    put64(&mut image, 40, 3 * CLUSTER); // L1 table
    put64(&mut image, 48, CLUSTER); // refcount table
    put32(&mut image, 56, 1); // refcount table clusters
    put64(&mut image, CLUSTER as usize, 2 * CLUSTER); // -> refcount block
    for cluster in 0..4 {
        // Refcounts are 16-bit in version 2.
        let at = 2 * CLUSTER as usize + cluster * 2;
        image[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    fs::write(path, image).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The guest's view of the image's first `size` bytes (unallocated
/// clusters read as zeroes).
pub fn read_guest(path: &Path, size: u64) -> Result<Vec<u8>, String> {
    let file = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let be64 = |at: u64| -> Result<u64, String> {
        let at = at as usize;
        let bytes = file
            .get(at..at + 8)
            .ok_or(format!("{}: offset {at:#x} past the end", path.display()))?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    };
    if file.get(0..4) != Some(b"QFI\xfb") {
        return Err(format!("{} is not a qcow2 image", path.display()));
    }
    let l1_table = be64(40)?;
    let mut guest = vec![0u8; size as usize];
    for cluster in 0..size.div_ceil(CLUSTER) {
        let l2_table = be64(l1_table + cluster / L2_ENTRIES * 8)? & OFFSET_MASK;
        if l2_table == 0 {
            continue;
        }
        let entry = be64(l2_table + cluster % L2_ENTRIES * 8)?;
        if entry & COMPRESSED != 0 {
            return Err(format!("cluster {cluster} is compressed"));
        }
        let data = entry & OFFSET_MASK;
        if data == 0 {
            continue;
        }
        let start = (cluster * CLUSTER) as usize;
        let end = (start + CLUSTER as usize).min(guest.len());
        let from = file
            .get(data as usize..data as usize + (end - start))
            .ok_or(format!("cluster {cluster} at {data:#x} is past the file's end"))?;
        guest[start..end].copy_from_slice(from);
    }
    Ok(guest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with one data cluster mapped by hand reads back right.
    #[test]
    fn a_mapped_cluster_reads_back_and_the_rest_is_zero() {
        let path = std::env::temp_dir().join(format!("vireo-qcow2-{}.img", std::process::id()));
        create(&path, 1 << 20).unwrap();
        assert_eq!(read_guest(&path, 1 << 20).unwrap(), vec![0u8; 1 << 20]);
        let mut file = fs::read(&path).unwrap();
        // L1[0] -> an L2 table at cluster 4; its entry 2 -> data at cluster 5.
        file[3 * CLUSTER as usize..][..8]
            .copy_from_slice(&((4 * CLUSTER) | (1 << 63)).to_be_bytes());
        file.resize(6 * CLUSTER as usize, 0);
        file[4 * CLUSTER as usize + 16..][..8].copy_from_slice(&(5 * CLUSTER).to_be_bytes());
        file[5 * CLUSTER as usize + 7] = 0xab;
        fs::write(&path, file).unwrap();
        let guest = read_guest(&path, 1 << 20).unwrap();
        assert_eq!(guest[2 * CLUSTER as usize + 7], 0xab);
        assert_eq!(guest.iter().filter(|&&b| b != 0).count(), 1);
        let _ = fs::remove_file(&path);
    }
}
