//! `cargo xtask`: build, boot, test and debug the vireo kernel under QEMU.
//!
//! This file is only the command-line surface; see `cmds.rs` for the
//! interactive subcommands, `test_cmd.rs` for `test`, `qemu.rs` for the
//! machine, `ktest.rs`/`serial.rs` for the in-kernel test protocol and
//! `host.rs` for host tests, `bench.rs` for comparing with the Linux peer.

mod bench;
mod cmds;
mod host;
mod hostile;
mod ktest;
mod qemu;
mod selftest;
mod serial;
mod test_cmd;

use clap::{Args, Parser, Subcommand};

use crate::qemu::AccelChoice;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, boot and test the vireo kernel"
)]
struct Cli {
    /// Accelerator: auto uses KVM only if /dev/kvm is usable and the CPU
    /// has vmx/svm, else multi-threaded TCG.
    #[arg(long, global = true, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Boot this kernel ELF instead of building target/release/vireo
    /// (old builds, bisecting, testing the runner itself).
    #[arg(long, global = true, value_name = "ELF")]
    kernel: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by every subcommand that boots one kernel.
#[derive(Args, Clone)]
pub struct BootArgs {
    /// Extra kernel command line (appended after the subcommand's own words).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Do not (re)build the kernel first.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel (release) to target/release/vireo.
    Build,
    /// Boot interactively; serial on this terminal (Ctrl-A X quits).
    Run {
        #[command(flatten)]
        boot: BootArgs,
        /// Kill QEMU after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Host tests, extra host checks, then in-kernel tests; ends with
    /// `total: X passed, Y failed`.
    Test(test_cmd::TestArgs),
    /// Boot once and keep the serial log in target/boot.log.
    BootLog {
        #[command(flatten)]
        boot: BootArgs,
        /// Stop after this many seconds if the kernel has not exited.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Also print the serial output while it arrives.
        #[arg(long)]
        echo: bool,
    },
    /// Start QEMU halted with a gdb stub on :1234.
    Debug {
        #[command(flatten)]
        boot: BootArgs,
        /// Kill QEMU after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Host benchmarks, then boot with `bench` and collect `BENCH ` lines.
    Bench {
        #[command(flatten)]
        boot: BootArgs,
        /// Kill QEMU after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Also run the Linux peer guest (../shared/peers/linux-guest, or
        /// $VIREO_PEER_DIR) and print vireo/Linux ratios. Off by default:
        /// its first run downloads Debian packages (~1 min).
        #[arg(long)]
        peer: bool,
    },
    /// Boot against the lying vhost-user virtio-blk device
    /// (tools/hostile-blk), one boot per scenario.
    Hostile(hostile::HostileArgs),
    /// cargo clean.
    Clean,
}

fn main() {
    let cli = Cli::parse();
    let ctx = cmds::Ctx::new(cli.accel, cli.kernel);
    let result = match cli.cmd {
        Cmd::Build => ctx.build_kernel(),
        Cmd::Run { boot, timeout } => ctx.run(&boot, timeout),
        Cmd::Test(args) => {
            let code = test_cmd::test(&ctx, &args);
            std::process::exit(code);
        }
        Cmd::BootLog { boot, timeout, echo } => ctx.boot_log(&boot, timeout, echo),
        Cmd::Debug { boot, timeout } => ctx.debug(&boot, timeout),
        Cmd::Bench { boot, timeout, peer } => ctx.bench(&boot, timeout, peer),
        Cmd::Hostile(args) => std::process::exit(hostile::command(&ctx, &args)),
        Cmd::Clean => ctx.clean(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["xtask", "test", "--smp", "2", "--smp", "4"]).unwrap();
        match cli.cmd {
            Cmd::Test(a) => assert_eq!(a.smp, vec![2, 4]),
            _ => panic!(),
        }
        let cli = Cli::try_parse_from(["xtask", "test", "--smp", "1,4"]).unwrap();
        match cli.cmd {
            Cmd::Test(a) => assert_eq!(a.smp, vec![1, 4]),
            _ => panic!(),
        }
        let cli = Cli::try_parse_from(["xtask", "bench"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Bench { peer: false, .. }));
        let cli = Cli::try_parse_from(["xtask", "bench", "--peer"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Bench { peer: true, .. }));
    }
}
