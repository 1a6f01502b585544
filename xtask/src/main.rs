//! `cargo xtask`: build, boot, test and debug the vireo kernel under QEMU.
//!
//! This file is only the command-line surface; see `boot.rs` for `run`,
//! `debug` and `boot-log`, `test_cmd.rs` for `test`, `cmds.rs` for the
//! shared context, `qemu.rs` for the machine, `process.rs` and `exit.rs` for
//! running QEMU and judging how it ended, `ktest/`/`serial.rs` for the
//! in-kernel test protocol, `host.rs` for host tests, `bench/` for `bench`
//! (interleaved rounds against the Linux peer, summaries, saved results),
//! `hostile/` for the lying device, `matrix.rs` for the compatibility matrix
//! and `layers.rs` for the check that the kernel imports only lower layers.

mod barrier_mutants;
mod bench;
mod blk_checks;
mod boot;
mod cmds;
mod display;
mod exit;
#[cfg(test)]
mod fake_qemu;
mod host;
mod hostile;
mod ktest;
#[cfg(test)]
mod layers;
mod matrix;
mod pixels;
mod process;
mod progress;
mod qemu;
mod qmp;
mod qmp_control;
mod selftest;
mod serial;
mod stack_frames;
mod terminal;
mod test_cmd;

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::boot::StopAt;
use crate::exit::{Code, Failure};
use crate::qemu::{AccelChoice, Machine};

/// Most vCPUs a boot may have: the kernel's `MAX_CPUS`
/// (kernel/src/arch/percpu.rs).
pub const MAX_SMP: i64 = 64;

const EXIT_STATUS: &str = "\
Exit status: 0 = the kernel did what was asked or you quit (Ctrl-A X, `exit`, gdb kill);
1 = the kernel failed (panic, failed tests, reset, timeout) or a step before it did;
2 = bad command line; 3 = QEMU itself failed (bad argument or file, killed by a signal).";

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, boot and test the vireo kernel",
    after_help = EXIT_STATUS
)]
struct Cli {
    /// Accelerator: auto uses KVM only if /dev/kvm is usable and the CPU
    /// has vmx/svm, else multi-threaded TCG.
    #[arg(long, global = true, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Boot this kernel ELF instead of building target/release/vireo
    /// (old builds, bisecting, testing the runner itself).
    #[arg(long, global = true, value_name = "ELF", value_parser = parse_elf)]
    kernel: Option<PathBuf>,
    /// Run this instead of qemu-system-x86_64 from PATH (a wrapper, another
    /// build of QEMU).
    #[arg(long, global = true, value_name = "BIN", env = "VIREO_QEMU", value_parser = parse_file)]
    qemu: Option<PathBuf>,
    /// Extra argument for every QEMU this command starts; repeat it for
    /// several (`--qemu-arg -d --qemu-arg int`), or put them after `--`.
    #[arg(long = "qemu-arg", global = true, value_name = "ARG", allow_hyphen_values = true)]
    qemu_arg: Vec<String>,
    /// Print each QEMU command line before running it.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The machine type: q35 (PCIe, ECAM), pc (i440FX: PCI without ECAM)
    /// or microvm (no PCI: virtio-mmio). The same devices on each.
    #[arg(long, global = true, value_enum, default_value_t = Machine::Q35)]
    machine: Machine,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by every subcommand that boots one kernel.
#[derive(Args, Clone)]
pub struct BootArgs {
    /// Extra kernel command line, e.g. --append "log=debug" (after the
    /// subcommand's own words).
    #[arg(long, visible_alias = "cmdline", default_value = "", value_name = "WORDS")]
    pub append: String,
    /// Number of vCPUs, 1 to 64.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=MAX_SMP))]
    pub smp: u32,
    /// Do not (re)build the kernel first.
    #[arg(long)]
    pub no_build: bool,
    /// Extra QEMU arguments (like --qemu-arg), e.g. `-- -d int`.
    #[arg(last = true, value_name = "QEMU_ARGS")]
    pub qemu_args: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel (release) to target/release/vireo.
    Build,
    /// Boot interactively; serial on this terminal (Ctrl-A X quits).
    Run {
        #[command(flatten)]
        boot: BootArgs,
        /// Kill QEMU after this many seconds (default: never).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// Serve the screen over VNC on 127.0.0.1:5900 instead of a window.
        #[arg(long)]
        vnc: bool,
        /// No window even when DISPLAY or WAYLAND_DISPLAY is set.
        #[arg(long, conflicts_with = "vnc")]
        headless: bool,
    },
    /// Host tests, extra host checks, then in-kernel tests; ends with
    /// `total: X passed, Y failed`.
    Test(test_cmd::TestArgs),
    /// Boot once, until the kernel reports ready, and keep the serial log in
    /// target/boot.log.
    BootLog {
        #[command(flatten)]
        boot: BootArgs,
        /// Give up (and fail) after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Stop at the first appearance of TEXT instead of `boot: ready`.
        #[arg(long, value_name = "TEXT", conflicts_with = "until_exit")]
        until: Option<String>,
        /// Run until the kernel exits instead (e.g. with --append ktest).
        #[arg(long)]
        until_exit: bool,
        /// Also print the serial output while it arrives.
        #[arg(long)]
        echo: bool,
    },
    /// Start QEMU halted with a gdb stub (on :1234 unless --gdb-port).
    Debug {
        #[command(flatten)]
        boot: BootArgs,
        /// Kill QEMU after this many seconds (default: never).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// TCP port of the gdb stub.
        #[arg(long, value_name = "PORT", default_value_t = 1234, value_parser = clap::value_parser!(u16).range(1..))]
        gdb_port: u16,
    },
    /// Interleaved rounds of vireo's benches beside the host ring bench's
    /// virtio-drivers and (with --peer) the Linux peer and the blk limit
    /// probe; prints medians and ranges, saves target/bench/<time>-<commit>.json.
    Bench(bench::BenchArgs),
    /// Boot against the lying vhost-user virtio-blk device
    /// (tools/hostile-blk), one boot per scenario.
    Hostile(hostile::HostileArgs),
    /// Boot the shell, run `help`, write what the screen shows to
    /// target/screenshot.png.
    Screenshot {
        /// Run make test's pixel checks (check gpu-*) instead.
        #[arg(long)]
        checks: bool,
    },
    /// The outside blk checks (xtask/src/blk_checks): the kernel's disk I/O
    /// judged from the host image, blkdebug errors and QMP, one boot each.
    BlkCheck(blk_checks::BlkCheckArgs),
    /// cargo clean.
    Clean,
}

impl Cmd {
    /// The QEMU arguments given after `--`.
    fn trailing_qemu_args(&self) -> &[String] {
        match self {
            Cmd::Run { boot, .. } | Cmd::BootLog { boot, .. } | Cmd::Debug { boot, .. } => {
                &boot.qemu_args
            }
            Cmd::Bench(args) => &args.boot.qemu_args,
            Cmd::Test(args) => &args.qemu_args,
            Cmd::Build
            | Cmd::Clean
            | Cmd::Hostile(_)
            | Cmd::Screenshot { .. }
            | Cmd::BlkCheck(_) => &[],
        }
    }
}

/// `--kernel`: an ELF file, or QEMU would fail later with a vaguer message.
fn parse_elf(value: &str) -> Result<PathBuf, String> {
    let mut magic = [0u8; 4];
    std::fs::File::open(value)
        .and_then(|mut file| file.read_exact(&mut magic))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if &magic != b"\x7fELF" {
        return Err("not an ELF file (a kernel build is target/release/vireo)".into());
    }
    Ok(value.into())
}

fn parse_file(value: &str) -> Result<PathBuf, String> {
    if std::path::Path::new(value).is_file() {
        Ok(value.into())
    } else {
        Err("no such file".into())
    }
}

/// clap suggests a subcommand only when it is close by Jaro similarity,
/// which misses short typos (`rn`, `tset`) or offers a far one (`rn` ->
/// `screenshot`); the nearest name within two edits wins when there is one.
fn with_closer_suggestion(mut error: clap::Error) -> clap::Error {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::InvalidSubcommand {
        return error;
    }
    let Some(ContextValue::String(typed)) = error.get(ContextKind::InvalidSubcommand) else {
        return error;
    };
    let typed = typed.clone();
    let nearest = Cli::command()
        .get_subcommands()
        .map(|command| command.get_name().to_string())
        .map(|name| (edit_distance(&typed, &name), name))
        .filter(|&(distance, _)| distance <= 2 && distance < typed.len())
        .min();
    if let Some((_, name)) = nearest {
        error.insert(ContextKind::SuggestedSubcommand, ContextValue::String(name));
    }
    error
}

/// Levenshtein distance with adjacent transpositions (optimal string
/// alignment): `rn` -> `run` is 1, `tset` -> `test` is 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

fn main() {
    // Before anything can change the terminal or start a child.
    terminal::save();
    process::install_signal_handlers();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // panic = "abort": no destructor runs, so clean up here.
        process::kill_all_children();
        terminal::restore();
        default_hook(info);
    }));
    let cli = Cli::try_parse().unwrap_or_else(|error| with_closer_suggestion(error).exit());
    process::set_verbose(cli.verbose);
    let mut qemu_args = cli.qemu_arg.clone();
    qemu_args.extend_from_slice(cli.cmd.trailing_qemu_args());
    let ctx = cmds::Ctx::new(cmds::RunnerOptions {
        accel: Some(cli.accel),
        kernel: cli.kernel,
        qemu: cli.qemu,
        qemu_args,
        machine: cli.machine,
    });
    let code = dispatch(&ctx, cli.cmd);
    terminal::restore();
    std::process::exit(code);
}

fn dispatch(ctx: &cmds::Ctx, cmd: Cmd) -> i32 {
    let result: Result<Option<String>, Failure> = match cmd {
        Cmd::Build => ctx.build_kernel().map(|()| None).map_err(Failure::from),
        Cmd::Run { boot, timeout, vnc, headless } => {
            let screen = display::choose(vnc, headless, |name| std::env::var(name).ok());
            ctx.run(&boot, timeout, display::prepare(screen)).map(Some)
        }
        Cmd::Test(args) => return test_cmd::test(ctx, &args),
        Cmd::Hostile(args) => return hostile::command(ctx, &args),
        Cmd::BlkCheck(args) => return blk_checks::command(ctx, &args),
        Cmd::BootLog { boot, timeout, until, until_exit, echo } => {
            let stop = match (until, until_exit) {
                (Some(text), _) => StopAt::Text(text),
                (None, true) => StopAt::Exit,
                (None, false) => StopAt::Ready,
            };
            ctx.boot_log(&boot, &stop, timeout, echo).map(Some)
        }
        Cmd::Debug { boot, timeout, gdb_port } => ctx.debug(&boot, timeout, gdb_port).map(Some),
        Cmd::Bench(args) => bench::run(ctx, &args).map(|()| None).map_err(Failure::from),
        Cmd::Screenshot { checks: false } => {
            pixels::screenshot(ctx).map(Some).map_err(Failure::from)
        }
        Cmd::Screenshot { checks: true } => return pixels::command(ctx),
        Cmd::Clean => ctx.clean().map(|()| None).map_err(Failure::from),
    };
    match result {
        Ok(message) => {
            if let Some(message) = message {
                println!("==> {message}");
            }
            Code::Ok as i32
        }
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code as i32
        }
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

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(edit_distance("rn", "run"), 1);
        assert_eq!(edit_distance("tset", "test"), 1);
        assert_eq!(edit_distance("bootlog", "boot-log"), 1);
        assert_eq!(edit_distance("", "run"), 3);
        let error = Cli::try_parse_from(["xtask", "rn"]).map(|_| ()).unwrap_err();
        assert!(
            with_closer_suggestion(error).to_string().contains("similar subcommand exists: 'run'")
        );
        let error = Cli::try_parse_from(["xtask", "zzzzz"]).map(|_| ()).unwrap_err();
        assert!(!with_closer_suggestion(error).to_string().contains("similar"));
    }

    #[test]
    fn flags_people_look_for() {
        let cli =
            Cli::try_parse_from(["xtask", "run", "--cmdline", "log=debug", "--", "-d", "int"])
                .unwrap();
        match cli.cmd {
            Cmd::Run { boot, timeout, .. } => {
                assert_eq!(boot.append, "log=debug");
                assert_eq!(boot.qemu_args, ["-d", "int"]);
                assert_eq!(timeout, None, "interactive runs have no default timeout");
            }
            _ => panic!(),
        }
        assert!(Cli::try_parse_from(["xtask", "run", "--smp", "0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--smp", "65"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--smp", "64"]).is_ok());
        let cli = Cli::try_parse_from(["xtask", "--qemu-arg", "-d", "debug", "--gdb-port", "4321"])
            .unwrap();
        assert_eq!(cli.qemu_arg, ["-d"]);
        assert!(matches!(cli.cmd, Cmd::Debug { gdb_port: 4321, timeout: None, .. }));
        assert!(
            Cli::try_parse_from(["xtask", "boot-log", "--until", "x", "--until-exit"]).is_err()
        );
    }
}
