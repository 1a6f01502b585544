//! The yardsticks beside vireo: the Linux peer guest
//! (`../shared/peers/linux-guest/run-peer.sh`) and the blk limit probe
//! (`../shared/probes/blk-limit/run.sh`), found and launched with vireo's
//! accelerator and vCPU count, since with different ones a ratio would
//! compare machines, not kernels.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::qemu::Accel;

/// A script beside the repository that can be moved with an environment
/// variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Script {
    /// What it is, for messages.
    pub what: &'static str,
    /// Environment variable naming its directory instead of the default.
    pub env: &'static str,
    /// Its directory relative to the repository root.
    pub default_dir: &'static str,
    /// The script inside that directory.
    pub file: &'static str,
}

/// The Linux 6.1 peer guest.
pub const PEER: Script = Script {
    what: "Linux peer",
    env: "VIREO_PEER_DIR",
    default_dir: "../shared/peers/linux-guest",
    file: "run-peer.sh",
};

/// The bare polled virtio-blk ring: QEMU's own per-request cost.
pub const LIMIT_PROBE: Script = Script {
    what: "blk limit probe",
    env: "VIREO_LIMIT_PROBE_DIR",
    default_dir: "../shared/probes/blk-limit",
    file: "run.sh",
};

impl Script {
    /// Its directory: `$<env>` if set and non-empty, else the default;
    /// relative values are taken from the repository root.
    pub fn dir(&self, root: &Path, env_value: Option<&str>) -> PathBuf {
        root.join(env_value.filter(|s| !s.is_empty()).unwrap_or(self.default_dir))
    }

    /// The script's path, or a message saying where it was looked for.
    pub fn locate(&self, root: &Path) -> Result<PathBuf, String> {
        let env_value = std::env::var(self.env).ok();
        let path = self.dir(root, env_value.as_deref()).join(self.file);
        if path.is_file() {
            return Ok(path);
        }
        Err(format!(
            "{} not found: {} does not exist.\n    \
             It ships beside the repository in {}; set {} to its directory if it lives elsewhere.",
            self.what,
            path.display(),
            self.default_dir,
            self.env
        ))
    }
}

/// Which peer workload set to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// The four block workloads.
    Blk,
    /// Full-frame and 64x64-damage frames at this display size.
    Gpu {
        /// Display width in pixels.
        width: u32,
        /// Display height in pixels.
        height: u32,
    },
}

/// `run-peer.sh <mode> <secs>` with vireo's accelerator and vCPU count.
pub fn peer_command(script: &Path, mode: PeerMode, accel: Accel, smp: u32, secs: u32) -> Command {
    let mut c = Command::new(script);
    let mode_arg = match mode {
        PeerMode::Blk => "blk",
        PeerMode::Gpu { width, height } => {
            c.env("XRES", width.to_string()).env("YRES", height.to_string());
            "gpu"
        }
    };
    c.args([mode_arg, &secs.to_string()]).env("ACCEL", accel.arg()).env("SMP", smp.to_string());
    c
}

/// The probe's `run.sh`, building into `target_dir` (kept beside vireo's
/// build so it is cleaned with it and built once).
pub fn probe_command(script: &Path, accel: Accel, smp: u32, target_dir: &Path) -> Command {
    let mut c = Command::new(script);
    c.env("QEMU_ACCEL", accel.arg())
        .env("SMP", smp.to_string())
        .env("CARGO_TARGET_DIR", target_dir);
    c
}

/// The display size of the kernel's full-frame GPU bench (`gpu_full_WxH`),
/// so the peer draws the same number of pixels.
pub fn gpu_size<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<(u32, u32)> {
    names.into_iter().find_map(|name| {
        let (w, h) = name.strip_prefix("gpu_full_")?.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_default_and_override() {
        let root = Path::new("/r/main");
        assert_eq!(PEER.dir(root, None), Path::new("/r/main/../shared/peers/linux-guest"));
        assert_eq!(PEER.dir(root, Some("")), PEER.dir(root, None));
        assert_eq!(PEER.dir(root, Some("/opt/peer")), Path::new("/opt/peer"));
        assert_eq!(LIMIT_PROBE.dir(root, None), Path::new("/r/main/../shared/probes/blk-limit"));
    }

    #[test]
    fn missing_script_is_a_clear_error() {
        let root = std::env::temp_dir().join(format!("xtask-noroot-{}", std::process::id()));
        let err = LIMIT_PROBE.locate(&root.join("a/b")).unwrap_err();
        assert!(err.contains("run.sh does not exist"), "{err}");
        assert!(err.contains(LIMIT_PROBE.env), "{err}");
    }

    #[test]
    fn peer_gets_mode_seconds_and_machine() {
        let c = peer_command(
            Path::new("/p/run-peer.sh"),
            PeerMode::Gpu { width: 1280, height: 800 },
            Accel::Tcg,
            2,
            3,
        );
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args, ["gpu", "3"]);
        let env: Vec<_> =
            c.get_envs().map(|(k, v)| (k.to_owned(), v.unwrap().to_owned())).collect();
        for (k, v) in
            [("XRES", "1280"), ("YRES", "800"), ("ACCEL", "tcg,thread=multi"), ("SMP", "2")]
        {
            assert!(env.contains(&(k.into(), v.into())), "{k} in {env:?}");
        }
    }

    #[test]
    fn gpu_size_from_kernel_names() {
        assert_eq!(
            gpu_size(["blk_x", "gpu_damage64_64x64", "gpu_full_1920x1080"]),
            Some((1920, 1080))
        );
        assert_eq!(gpu_size(["gpu_full_axb"]), None);
        assert_eq!(gpu_size([]), None);
    }
}
