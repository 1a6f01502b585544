//! The machine QEMU boots: the one standard device set, accelerator choice
//! and the scratch disk. Running it is `process.rs`; reading its exit
//! status is `exit.rs`.
//!
//! All subcommands go through [`Qemu::command`] (or [`Qemu::command_with`])
//! so that `run`, `test`, `boot-log`, `debug` and `bench` always boot the
//! *same* machine; a bug that only shows up under `test` must be reproducible
//! with `run`. The one deliberate difference, memory and disk for `bench` (and
//! no spare virtio-rng), is spelled out in [`DeviceSet`]. `--machine` picks
//! the machine type ([`Machine`]): the same devices, on PCI or virtio-mmio.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The QEMU binary we drive. Only x86_64 is supported.
pub const QEMU_BIN: &str = "qemu-system-x86_64";

/// What a user should run when QEMU is missing (Debian, as on CI).
pub const QEMU_INSTALL_HINT: &str =
    "apt-get update && apt-get install -y --no-install-recommends qemu-system-x86";

/// Size of the scratch virtio-blk disk. Raw and sparse, so it costs nothing
/// on disk until the kernel writes to it.
pub const DISK_SIZE: u64 = 64 * 1024 * 1024;

/// The isa-debug-exit port; the kernel writes `v` there and QEMU exits with
/// `(v << 1) | 1`.
const DEBUG_EXIT_PORT: &str = "iobase=0xf4,iosize=0x04";

/// Hardware acceleration choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` argument value.
    pub fn arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            // Multi-threaded TCG: one host thread per vCPU, so `-smp 4` on a
            // 2-core box still makes progress on every vCPU.
            Accel::Tcg => "tcg,thread=multi",
        }
    }
}

/// Accelerator requested on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when usable and the CPU advertises vmx/svm, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Pick the accelerator and say why.
///
/// `/dev/kvm` existing is not enough: some CI machines expose a nested
/// software hypervisor whose KVM cannot run SSE, and the only reliable tell is
/// the missing `vmx`/`svm` CPU flag. So KVM needs both an openable
/// `/dev/kvm` and one of those flags.
pub fn choose_accel(choice: AccelChoice) -> (Accel, String) {
    match choice {
        AccelChoice::Kvm => (Accel::Kvm, "requested with --accel kvm".into()),
        AccelChoice::Tcg => (Accel::Tcg, "requested with --accel tcg".into()),
        AccelChoice::Auto => {
            let kvm_ok = OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
            let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            decide_accel(kvm_ok, &cpuinfo)
        }
    }
}

/// Pure part of [`choose_accel`], split out for unit tests.
pub fn decide_accel(kvm_usable: bool, cpuinfo: &str) -> (Accel, String) {
    let has_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm");
    match (kvm_usable, has_virt) {
        (true, true) => (Accel::Kvm, "/dev/kvm usable and CPU has vmx/svm".into()),
        (false, _) => (Accel::Tcg, "/dev/kvm not usable".into()),
        (true, false) => (
            Accel::Tcg,
            "/dev/kvm present but CPU lacks vmx/svm (nested software hypervisor)".into(),
        ),
    }
}

/// The machine type QEMU emulates (`--machine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// QEMU's q35 (ICH9): PCI Express with ECAM (the MCFG), HPET, PM timer.
    #[default]
    Q35,
    /// QEMU's default `pc` (i440FX): PCI through the configuration ports
    /// (no MCFG).
    Pc,
    /// QEMU's `microvm`: no PCI, no HPET; virtio devices on virtio-mmio,
    /// described in the ACPI DSDT. QEMU's virtio-mmio is legacy (version 1)
    /// unless told otherwise, and vireo drives version 2 only, so the runner
    /// passes `-global virtio-mmio.force-legacy=false`.
    Microvm,
}

impl Machine {
    /// The `-machine` value.
    pub fn arg(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
            Machine::Microvm => "microvm",
        }
    }

    /// Whether devices sit on PCI (else virtio-mmio).
    pub fn has_pci(self) -> bool {
        self != Machine::Microvm
    }

    /// A virtio device's QEMU name on this machine's bus: `kind` is `blk`,
    /// `gpu` or `rng`.
    fn virtio(self, kind: &str) -> String {
        let bus = if self.has_pci() { "pci" } else { "device" };
        format!("virtio-{kind}-{bus}")
    }
}

/// Memory and block device of a machine, and whether it has the spare
/// virtio-rng: the only part of the device set that differs between
/// subcommands.
///
/// `bench` must boot what the Linux peer (`../shared/peers/linux-guest`)
/// boots, or "vireo vs Linux" ratios would compare disks rather than
/// drivers; everything else keeps the persistent image so on-disk state
/// survives between boots and can be inspected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSet {
    /// `run`, `test`, `boot-log`, `debug`: 512 MiB, the raw scratch image
    /// ([`Qemu::disk`]) and a `virtio-rng-pci` that no driver owns.
    Standard,
    /// `bench`: 1 GiB and a 1 GiB `null-co` disk that reads zeroes, exactly
    /// the peer's flags. No host file I/O, so the numbers measure the guest
    /// driver and QEMU's virtio path, not the host's page cache.
    PeerMatched,
    /// The compatibility matrix's "as a new user types it": the scratch
    /// image on QEMU's default (transitional) virtio-blk and a virtio-gpu,
    /// nothing else.
    QemuDefaults,
}

impl DeviceSet {
    /// The `-m` value.
    fn memory(self) -> &'static str {
        match self {
            DeviceSet::Standard | DeviceSet::QemuDefaults => "512M",
            DeviceSet::PeerMatched => "1G",
        }
    }

    /// The virtio devices, `-device` by `-device`, on `machine`'s bus.
    ///
    /// Modern-only on PCI (`disable-legacy=on`), except for
    /// [`DeviceSet::QemuDefaults`]. On virtio-mmio the block device gets a
    /// queue per vCPU, as QEMU gives virtio-blk-pci by default (it gives
    /// virtio-blk-device one), so per-CPU queues share the device's one
    /// interrupt line.
    fn devices(self, machine: Machine, smp: u32) -> Vec<String> {
        let blk = machine.virtio("blk");
        let blk = match (self, machine.has_pci()) {
            (DeviceSet::QemuDefaults, _) => format!("{blk},drive=d0"),
            (_, true) => format!("{blk},drive=d0,disable-legacy=on"),
            (_, false) => format!("{blk},drive=d0,num-queues={smp}"),
        };
        let mut devices = vec![blk, machine.virtio("gpu")];
        // The window's keyboard (virtio-input, kernel/src/drivers/virtio/
        // input); bench keeps the peer's machine.
        if self == DeviceSet::Standard {
            devices.push(machine.virtio("keyboard"));
        }
        // A virtio device no driver owns, for the kernel's bring-up failure
        // tests (drivers::virtio::bringup), with MSI-X entries for two
        // queues so one can be live when the other fails; bench keeps the
        // peer's machine.
        if self == DeviceSet::Standard {
            let rng = machine.virtio("rng");
            devices.push(if machine.has_pci() {
                format!("{rng},disable-legacy=on,vectors=3")
            } else {
                rng
            });
        }
        devices
    }

    /// The arguments creating block node `d0`, which virtio-blk attaches to.
    fn disk_args(self, image: &Path) -> [String; 2] {
        match self {
            DeviceSet::Standard | DeviceSet::QemuDefaults => {
                ["-drive".into(), format!("file={},if=none,id=d0,format=raw", image.display())]
            }
            DeviceSet::PeerMatched => [
                "-blockdev".into(),
                "driver=null-co,node-name=d0,size=1073741824,read-zeroes=on".into(),
            ],
        }
    }
}

/// How the serial port is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serial {
    /// Plain `-serial stdio`: output is captured and parsed by the runner.
    Stdio,
    /// `-serial mon:stdio`: interactive; Ctrl-A X quits, Ctrl-A C = monitor.
    MonStdio,
}

/// One configured machine. Built once per subcommand.
#[derive(Clone, Debug)]
pub struct Qemu {
    /// Normally [`QEMU_BIN`]; `--qemu` and tests substitute another.
    pub bin: PathBuf,
    pub kernel: PathBuf,
    pub disk: PathBuf,
    pub smp: u32,
    pub accel: Accel,
    /// `--machine`.
    pub machine: Machine,
    /// The `-cpu` model: `max` (everything TCG can emulate) unless a
    /// compatibility-matrix boot asks for another.
    pub cpu: String,
    /// `-m` instead of the device set's memory (the matrix's sizes).
    pub memory: Option<String>,
    /// What [`Qemu::command`] boots.
    pub devices: DeviceSet,
    /// `--qemu-arg` / `-- ARGS`: appended last, so they can add devices or
    /// debug options (`-d int`) to every boot of the subcommand.
    pub extra_args: Vec<String>,
}

impl Qemu {
    /// The machine's own device set ([`DeviceSet::Standard`] but for the
    /// matrix). `extra` is appended verbatim (e.g. `-s -S`).
    pub fn command(&self, cmdline: &str, serial: Serial, extra: &[&str]) -> Command {
        self.command_with(self.devices, cmdline, serial, extra)
    }

    /// Like [`Qemu::command`], with memory and disk chosen by `set`.
    pub fn command_with(
        &self,
        set: DeviceSet,
        cmdline: &str,
        serial: Serial,
        extra: &[&str],
    ) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(self.args_with(set, cmdline, serial)).args(extra);
        c
    }

    /// Arguments of [`Qemu::command_with`], as strings for printing and
    /// tests.
    pub fn args_with(&self, set: DeviceSet, cmdline: &str, serial: Serial) -> Vec<String> {
        let serial = match serial {
            Serial::Stdio => "stdio",
            Serial::MonStdio => "mon:stdio",
        };
        let mut a: Vec<String> = ["-nodefaults", "-machine", self.machine.arg(), "-cpu", &self.cpu]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push("-smp".into());
        a.push(self.smp.to_string());
        let memory = self.memory.as_deref().unwrap_or(set.memory());
        a.extend(
            ["-m", memory, "-no-reboot", "-display", "none", "-serial", serial]
                .iter()
                .map(|s| s.to_string()),
        );
        a.push("-device".into());
        a.push(format!("isa-debug-exit,{DEBUG_EXIT_PORT}"));
        a.push("-kernel".into());
        a.push(self.kernel.display().to_string());
        a.push("-append".into());
        a.push(cmdline.into());
        a.extend(set.disk_args(&self.disk));
        if !self.machine.has_pci() {
            a.extend(["-global".into(), "virtio-mmio.force-legacy=false".into()]);
        }
        for device in set.devices(self.machine, self.smp) {
            a.extend(["-device".into(), device]);
        }
        a.push("-accel".into());
        a.push(self.accel.arg().into());
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// True when `qemu-system-x86_64` is somewhere on `PATH`.
pub fn qemu_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(QEMU_BIN).is_file()))
        .unwrap_or(false)
}

/// Fail with an actionable message when QEMU is missing. `bin` is the
/// `--qemu` override, if any.
pub fn require_qemu(bin: Option<&Path>) -> Result<(), String> {
    if let Some(bin) = bin {
        return if bin.is_file() {
            Ok(())
        } else {
            Err(format!("--qemu {}: no such file", bin.display()))
        };
    }
    if qemu_on_path() {
        Ok(())
    } else {
        Err(format!(
            "{QEMU_BIN} not found on PATH. Install it with:\n    {QEMU_INSTALL_HINT}\n\
             (prefix with sudo if not root; `make run`/`make test` do this for you)"
        ))
    }
}

/// Create the scratch disk on first use (sparse, so instant and free).
/// An existing image is kept: state on it may be what you are debugging.
pub fn ensure_disk(path: &Path) -> io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let f = File::create(path)?;
    f.set_len(DISK_SIZE)?;
    println!("created {} ({} MiB, raw)", path.display(), DISK_SIZE >> 20);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_needs_kvm_and_virt_flag() {
        let with = "processor\t: 0\nflags\t\t: fpu sse2 vmx lm\n";
        let without = "processor\t: 0\nflags\t\t: fpu sse2 hypervisor lm\n";
        assert_eq!(decide_accel(true, with).0, Accel::Kvm);
        assert_eq!(decide_accel(true, without).0, Accel::Tcg);
        assert_eq!(decide_accel(false, with).0, Accel::Tcg);
        // "svm" as a substring of another flag must not count.
        assert_eq!(decide_accel(true, "flags : svm_lock\n").0, Accel::Tcg);
        assert_eq!(decide_accel(true, "flags : svm\n").0, Accel::Kvm);
    }

    #[test]
    fn standard_device_set() {
        let q = Qemu {
            bin: QEMU_BIN.into(),
            kernel: "target/release/vireo".into(),
            disk: "target/vireo-disk.img".into(),
            smp: 4,
            accel: Accel::Tcg,
            machine: Machine::Q35,
            cpu: "max".into(),
            memory: None,
            devices: DeviceSet::Standard,
            extra_args: vec![],
        };
        let a = q.args_with(DeviceSet::Standard, "ktest ktest.skip=a::b", Serial::Stdio).join(" ");
        assert_eq!(
            a,
            "-nodefaults -machine q35 -cpu max -smp 4 -m 512M -no-reboot -display none \
             -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -kernel target/release/vireo -append ktest ktest.skip=a::b \
             -drive file=target/vireo-disk.img,if=none,id=d0,format=raw \
             -device virtio-blk-pci,drive=d0,disable-legacy=on -device virtio-gpu-pci \
             -device virtio-keyboard-pci -device virtio-rng-pci,disable-legacy=on,vectors=3 \
             -accel tcg,thread=multi"
        );
        let interactive = q.args_with(DeviceSet::Standard, "", Serial::MonStdio);
        assert!(interactive.contains(&"mon:stdio".to_string()));
    }

    /// `bench` differs from the standard set only in memory and disk, and
    /// those match the Linux peer's flags word for word.
    #[test]
    fn peer_matched_device_set() {
        let q = Qemu {
            bin: QEMU_BIN.into(),
            kernel: "target/release/vireo".into(),
            disk: "target/vireo-disk.img".into(),
            smp: 2,
            accel: Accel::Kvm,
            machine: Machine::Q35,
            cpu: "max".into(),
            memory: None,
            devices: DeviceSet::Standard,
            extra_args: vec!["-d".into(), "int".into()],
        };
        let a = q.args_with(DeviceSet::PeerMatched, "bench", Serial::Stdio).join(" ");
        assert_eq!(
            a,
            "-nodefaults -machine q35 -cpu max -smp 2 -m 1G -no-reboot -display none \
             -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -kernel target/release/vireo -append bench \
             -blockdev driver=null-co,node-name=d0,size=1073741824,read-zeroes=on \
             -device virtio-blk-pci,drive=d0,disable-legacy=on -device virtio-gpu-pci \
             -accel kvm -d int"
        );
        assert!(!a.contains("vireo-disk.img"));
    }

    /// The same devices on every machine, on its bus; microvm's virtio-mmio
    /// switched to version 2.
    #[test]
    fn machines_put_the_devices_on_their_bus() {
        let mut q = Qemu {
            bin: QEMU_BIN.into(),
            kernel: "k".into(),
            disk: "d.img".into(),
            smp: 2,
            accel: Accel::Tcg,
            machine: Machine::Microvm,
            cpu: "max".into(),
            memory: None,
            devices: DeviceSet::Standard,
            extra_args: vec![],
        };
        let a = q.args_with(DeviceSet::Standard, "", Serial::Stdio).join(" ");
        assert!(a.starts_with("-nodefaults -machine microvm -cpu max"), "{a}");
        assert!(
            a.contains(
                "-global virtio-mmio.force-legacy=false \
                 -device virtio-blk-device,drive=d0,num-queues=2 -device virtio-gpu-device \
                 -device virtio-keyboard-device -device virtio-rng-device"
            ),
            "{a}"
        );
        assert!(!a.contains("-pci"), "{a}");
        q.machine = Machine::Pc;
        q.memory = Some("96M".into());
        q.cpu = "qemu64".into();
        let a = q.args_with(DeviceSet::QemuDefaults, "", Serial::Stdio).join(" ");
        assert!(a.starts_with("-nodefaults -machine pc -cpu qemu64 -smp 2 -m 96M"), "{a}");
        assert!(a.contains("-device virtio-blk-pci,drive=d0 -device virtio-gpu-pci -accel"), "{a}");
        assert!(!a.contains("force-legacy") && !a.contains("rng"), "{a}");
    }
}
