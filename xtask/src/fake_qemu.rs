//! Shell scripts that stand in for QEMU in the runner's tests: each gets
//! its own directory, removed when the test ends.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

pub struct FakeQemu {
    pub dir: PathBuf,
    pub bin: PathBuf,
}

impl FakeQemu {
    /// Writes `script` (with its `#!` line) as an executable `fake-qemu`.
    pub fn new(name: &str, script: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("fake-qemu");
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, bin }
    }
}

impl Drop for FakeQemu {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
