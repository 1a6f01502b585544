//! A fixed-size byte ring that keeps the newest log output.
//!
//! Writers append whole lines; when the ring is full the oldest bytes are
//! overwritten. Readers get the retained text oldest first, starting at a
//! line boundary so a partially overwritten line is never shown.

/// A ring of `N` bytes.
pub struct LogRing<const N: usize> {
    bytes: [u8; N],
    /// Total bytes ever written; `written % N` is the next write position.
    written: u64,
}

impl<const N: usize> LogRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        Self { bytes: [0; N], written: 0 }
    }

    /// Appends `data`, overwriting the oldest bytes once full.
    pub fn write(&mut self, data: &[u8]) {
        // Only the last N bytes of an oversized write can survive.
        let data = &data[data.len().saturating_sub(N)..];
        let position = (self.written % N as u64) as usize;
        let first = data.len().min(N - position);
        self.bytes[position..position + first].copy_from_slice(&data[..first]);
        self.bytes[..data.len() - first].copy_from_slice(&data[first..]);
        self.written += data.len() as u64;
    }

    /// Total bytes written since creation (including overwritten ones).
    pub fn total_written(&self) -> u64 {
        self.written
    }

    /// Calls `sink` with the retained text, oldest first, in at most two
    /// pieces. After a wrap the text starts after the first newline, so the
    /// torn oldest line is dropped.
    pub fn for_each_chunk(&self, mut sink: impl FnMut(&[u8])) {
        if self.written <= N as u64 {
            sink(&self.bytes[..self.written as usize]);
            return;
        }
        let position = (self.written % N as u64) as usize;
        let (newer, older) = self.bytes.split_at(position);
        match older.iter().position(|&byte| byte == b'\n') {
            Some(newline) => {
                sink(&older[newline + 1..]);
                sink(newer);
            }
            None => match newer.iter().position(|&byte| byte == b'\n') {
                Some(newline) => sink(&newer[newline + 1..]),
                None => sink(newer),
            },
        }
    }
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}
