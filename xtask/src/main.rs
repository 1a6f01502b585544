//! `cargo xtask`: build, boot, test and debug the vireo kernel under QEMU.
//!
//! This file is only the command-line surface; see `cmds.rs` for the
//! interactive subcommands, `test_cmd.rs` for `test`, `qemu.rs` for the
//! machine, `ktest.rs`/`serial.rs` for the in-kernel test protocol and
//! `host.rs` for host tests, `bench/` for `bench` (interleaved rounds against
//! the Linux peer, summaries, saved results).

mod bench;
mod cmds;
mod host;
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
    /// Interleaved rounds of vireo's benches beside the host ring bench's
    /// virtio-drivers and (with --peer) the Linux peer and the blk limit
    /// probe; prints medians and ranges, saves target/bench/<time>-<commit>.json.
    Bench(bench::BenchArgs),
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
        Cmd::Bench(args) => bench::run(&ctx, &args),
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
        assert!(matches!(cli.cmd, Cmd::Bench(a) if !a.peer && a.rounds.is_none()));
        let cli = Cli::try_parse_from(["xtask", "bench", "--peer", "--rounds", "5"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Bench(a) if a.peer && a.rounds == Some(5)));
        let cli =
            Cli::try_parse_from(["xtask", "bench", "--group", "blk,ring", "--compare", "x.json"]);
        assert!(
            matches!(cli.unwrap().cmd, Cmd::Bench(a) if a.group.len() == 2 && a.compare.is_some())
        );
        assert!(Cli::try_parse_from(["xtask", "bench", "--rounds", "0"]).is_err());
    }
}
