//! `cargo xtask hostile`: the real kernel against a virtio-blk device that
//! lies (`tools/hostile-blk`, a vhost-user backend).
//!
//! Per scenario: build the backend, start it on a socket in
//! `target/hostile/`, wait for the socket, boot QEMU with
//! `vhost-user-blk-pci` in place of the built-in `virtio-blk-pci`, and talk
//! to the guest's shell: `mem`, then `ktest blk` (the in-kernel blk tests
//! as the workload), then `mem` and `blk` again. [`judge`] turns what came
//! back into `check hostile-blk:<scenario> ... ok|FAILED: <why>`. Logs stay
//! in `target/hostile/<scenario>.{serial,backend,qemu}.log`.

pub(crate) mod judge;
pub(crate) mod session;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;

use crate::cmds::Ctx;
use crate::qemu::{DeviceSet, Qemu, Serial};
use judge::{Expect, Record, Step};
use session::{Guarded, PROMPT, Shell};

/// Scenarios `make test` runs: the honest device and the lies today's
/// driver survives every time. The others are run by hand
/// (`cargo xtask hostile`) until the driver handles them (issue 9);
/// `num-queues-*` never reach the guest and `drop-socket-reconnect`
/// passes or hangs depending on where QEMU rewinds the ring.
pub const MAKE_TEST_SCENARIOS: &[&str] = &[
    "honest",
    "late",
    "interrupt-storm",
    "status-ioerr",
    "status-unsupp",
    "status-garbage",
    "status-len-zero",
    "capacity-zero",
    "capacity-huge",
    "seg-max-zero",
    "blk-size-3",
    "generation-unsettled",
    // Since the driver resets and re-initialises a device that lies about
    // its used ring or never answers (issue 9), these recover too.
    "stall",
    "used-id-out-of-range",
    "used-id-free",
    "completed-twice",
    "used-len-too-large",
    "used-idx-jump",
    "used-idx-backwards",
];

/// Lies every driver must pass on to some caller as an error: a status
/// other than OK, or a disk too small for the tests' sectors. A run of
/// one of these where every test passed means the lie never arrived.
const VISIBLE_LIES: &[&str] =
    &["status-ioerr", "status-unsupp", "status-garbage", "status-len-zero", "capacity-zero"];

/// The in-kernel tests used as the workload: those whose name contains
/// this, one `ktest <name>` at a time.
const BLK_TESTS: &str = "blk";
/// Left out of the workload unless `--all-blk-tests`: it deadlocks on its
/// own, against QEMU's built-in device too (1 boot in 6 from the shell,
/// 3 in 6 against this backend). Four threads on one queue each hold up to
/// 32 unwaited `Pending`s while blocking in `submit` for pool space that
/// only their own `wait` would free.
const KNOWN_DEADLOCKING: &[&str] = &["more_requests_than_the_pool_wait_for_space"];
/// Queues the device offers; more than the runner's vCPUs, so the driver
/// picks one per CPU.
const QUEUES: u32 = 4;
/// The served image: as large as the standard disk, which the blk tests
/// expect.
const IMAGE_BYTES: u64 = crate::qemu::DISK_SIZE;

#[derive(Args, Clone, Debug)]
pub struct HostileArgs {
    /// Run only this scenario (repeatable); default: every scenario.
    #[arg(long)]
    pub scenario: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// vCPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Seed for the backend's random choices (status lies, fuzz).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First request (counted from boot) a request-level lie may hit.
    /// Default: the first request of the second pass of the blk tests (the
    /// runner arms the backend with SIGUSR1 between the passes).
    #[arg(long)]
    pub at: Option<u64>,
    /// Seconds the blk workload may take before it counts as a hang.
    #[arg(long, default_value_t = 30)]
    pub workload_timeout: u64,
    /// Do not rebuild the kernel.
    #[arg(long)]
    pub no_build: bool,
    /// Also run the blk tests known to deadlock on their own.
    #[arg(long)]
    pub all_blk_tests: bool,
}

/// `(check name, Ok(detail) | Err(why))` per scenario run.
pub type Checks = Vec<(String, Result<String, String>)>;

/// One scenario as `hostile-blk --list` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    /// Why QEMU 7.2 keeps this lie from the guest, if it does.
    pub unreachable: Option<String>,
}

/// `cargo xtask hostile`: returns the process exit code.
pub fn command(ctx: &Ctx, args: &HostileArgs) -> i32 {
    let checks = match run(ctx, args, &args.scenario) {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if args.list {
        return 0;
    }
    let failed = checks.iter().filter(|(_, outcome)| outcome.is_err()).count();
    println!("hostile: {} passed, {failed} failed", checks.len() - failed);
    i32::from(failed > 0)
}

/// `make test`'s part: [`MAKE_TEST_SCENARIOS`] with default settings.
pub fn make_test_checks(ctx: &Ctx, smp: u32) -> Checks {
    let args = HostileArgs {
        scenario: vec![],
        list: false,
        smp,
        seed: 1,
        at: None,
        workload_timeout: 30,
        no_build: true,
        all_blk_tests: false,
    };
    let names: Vec<String> = MAKE_TEST_SCENARIOS.iter().map(|s| s.to_string()).collect();
    run(ctx, &args, &names).unwrap_or_else(|e| vec![("hostile-blk".into(), Err(e))])
}

/// Builds what is needed and runs `names` (all when empty); prints one
/// `check` line per scenario and returns them.
fn run(ctx: &Ctx, args: &HostileArgs, names: &[String]) -> Result<Checks, String> {
    let backend = build_backend(ctx)?;
    let all = list_scenarios(&backend)?;
    if args.list {
        for s in &all {
            let note = s.unreachable.as_deref().map(|r| format!(" [cannot reach the guest: {r}]"));
            println!("{:<24} {}{}", s.name, s.description, note.unwrap_or_default());
        }
        return Ok(vec![]);
    }
    let chosen: Vec<&ScenarioInfo> = if names.is_empty() {
        all.iter().collect()
    } else {
        names
            .iter()
            .map(|n| all.iter().find(|s| &s.name == n).ok_or(format!("no scenario {n:?}")))
            .collect::<Result<_, _>>()?
    };
    let q = ctx.machine(args.smp, !args.no_build)?;
    let dir = ctx.target.join("hostile");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut checks = vec![];
    for info in chosen {
        let name = format!("hostile-blk:{}", info.name);
        let outcome = run_one(ctx, &q, &backend, &dir, info, args);
        match &outcome {
            Ok(detail) => println!("check {name} ... ok ({detail})"),
            Err(why) => println!("check {name} ... FAILED: {why}"),
        }
        checks.push((name, outcome));
    }
    Ok(checks)
}

/// `cargo build -p hostile-blk` (the dev profile, optimised at level 1:
/// its dependencies are the ones `cargo test` already built, so after the
/// host tests this is a link); returns the binary.
fn build_backend(ctx: &Ctx) -> Result<PathBuf, String> {
    println!("==> building the hostile device: cargo build -p hostile-blk");
    let status = Command::new(&ctx.cargo)
        .args(["build", "-p", "hostile-blk"])
        .current_dir(&ctx.root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("hostile-blk build failed ({status})"));
    }
    Ok(ctx.target.join("debug").join("hostile-blk"))
}

fn list_scenarios(backend: &Path) -> Result<Vec<ScenarioInfo>, String> {
    let out = Command::new(backend)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", backend.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let all = parse_list(&text);
    if all.is_empty() {
        return Err(format!("{} --list printed no scenarios", backend.display()));
    }
    Ok(all)
}

fn parse_list(text: &str) -> Vec<ScenarioInfo> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.trim();
            let description = fields.next()?.trim();
            let unreachable = fields.next().map(str::trim).filter(|r| !r.is_empty());
            (!name.is_empty()).then(|| ScenarioInfo {
                name: name.into(),
                description: description.into(),
                unreachable: unreachable.map(String::from),
            })
        })
        .collect()
}

/// One boot against one scenario.
fn run_one(
    ctx: &Ctx,
    q: &Qemu,
    backend: &Path,
    dir: &Path,
    info: &ScenarioInfo,
    args: &HostileArgs,
) -> Result<String, String> {
    let socket = dir.join(format!("{}.sock", info.name));
    let image = dir.join("disk.img");
    let log = |kind: &str| dir.join(format!("{}.{kind}.log", info.name));
    let _ = fs::remove_file(&socket);
    // A fresh sparse image each boot: every scenario starts from zeroes.
    let disk = File::create(&image).and_then(|f| f.set_len(IMAGE_BYTES));
    disk.map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    let mut cmd = Command::new(backend);
    cmd.arg("--socket").arg(&socket).arg("--image").arg(&image);
    cmd.args(["--queues", &QUEUES.to_string(), "--scenario", &info.name]);
    cmd.args(["--seed", &args.seed.to_string()]);
    if let Some(at) = args.at {
        cmd.args(["--at", &at.to_string()]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(create(&log("backend"))?);
    let mut backend_child = Guarded::spawn(cmd, "hostile-blk")?;
    session::wait_for_socket(&socket, &mut backend_child, Duration::from_secs(10))?;

    // Canary frames: a device write into memory the kernel freed shows in
    // `mem` (judge.rs).
    let standard = q.args_with(DeviceSet::Standard, "mm.canary", Serial::Stdio);
    let mut qemu = Command::new(&q.bin);
    qemu.args(vhost_user_args(&standard, &socket, QUEUES)?).current_dir(&ctx.root);
    qemu.stderr(create(&log("qemu"))?);
    let mut shell = Shell::spawn(qemu)?;
    let record = dialogue(&mut shell, args, &mut backend_child);
    drop(shell);
    drop(backend_child);
    let record =
        Record { backend_log: fs::read_to_string(log("backend")).unwrap_or_default(), ..record };
    let _ = fs::write(log("serial"), &record.serial);
    let _ = fs::remove_file(&socket);
    let expect = match info.name.as_str() {
        "honest" => Expect::AllPass,
        name if VISIBLE_LIES.contains(&name) => Expect::SurviveWithErrors,
        _ => Expect::Survive,
    };
    let verdict = judge::judge(expect, &record);
    let verdict = match (&info.unreachable, verdict) {
        (Some(reason), Ok(detail)) => Ok(format!("{detail}; lie held back by QEMU: {reason}")),
        (_, verdict) => verdict,
    };
    // Random lies replay from their seed: say it with every failure.
    verdict.map_err(|why| {
        format!(
            "{why} (logs: {}; replay: cargo xtask hostile --scenario {} --seed {}{})",
            log("*").display(),
            info.name,
            args.seed,
            args.at.map(|at| format!(" --at {at}")).unwrap_or_default()
        )
    })
}

fn create(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// The shell steps of one boot; stops at the first step that fails.
///
/// The blk tests run twice: once with the backend's request lies held back
/// (the device must work before it lies), then again after the runner arms
/// the backend (SIGUSR1), so a lie meets a caller the runner knows is
/// waiting, however many requests the tests made before.
fn dialogue(shell: &mut Shell, args: &HostileArgs, backend: &mut Guarded) -> Record {
    let short = Duration::from_secs(15);
    let workload = Duration::from_secs(args.workload_timeout);
    let mut record = Record::default();
    let boot = shell.wait_for(0, PROMPT, Duration::from_secs(60));
    let mut go = matches!(boot, Step::Answered(_));
    record.boot = Some(boot);
    let listing = step(shell, "tests", short, &mut go);
    let tests = listing.output().map(|out| workload_tests(out, args.all_blk_tests));
    let tests = tests.unwrap_or_default();
    record.baseline = Some(run_tests(shell, &tests, workload, &mut go));
    record.mem_before = Some(step(shell, "mem", short, &mut go));
    if go && args.at.is_none() {
        go = backend.signal_usr1().is_ok();
    }
    record.workload = Some(run_tests(shell, &tests, workload, &mut go));
    record.mem_after = Some(step(shell, "mem", short, &mut go));
    record.blk_after = Some(step(shell, "blk", short, &mut go));
    if go {
        let _ = shell.command("exit", short);
    }
    shell.finish(Duration::from_secs(2));
    record.serial = shell.transcript.clone();
    record
}

/// One shell command, unless an earlier step failed (`go`).
fn step(shell: &mut Shell, line: &str, timeout: Duration, go: &mut bool) -> Step {
    if !*go {
        return Step::Skipped;
    }
    let step = shell.command(line, timeout);
    *go = matches!(step, Step::Answered(_));
    step
}

/// `ktest <name>` for each test; the joined output, or the first step that
/// did not answer.
fn run_tests(shell: &mut Shell, tests: &[String], timeout: Duration, go: &mut bool) -> Step {
    let mut output = String::new();
    for test in tests {
        match step(shell, &format!("ktest {test}"), timeout, go) {
            Step::Answered(out) => output.push_str(&out),
            other => return other,
        }
    }
    if tests.is_empty() || !*go { Step::Skipped } else { Step::Answered(output) }
}

/// The blk tests in the shell's `tests` listing, less the known-deadlocking
/// ones unless `all` is set.
fn workload_tests(listing: &str, all: bool) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|name| name.contains(BLK_TESTS) && name.contains("::"))
        .filter(|name| all || !KNOWN_DEADLOCKING.iter().any(|bad| name.ends_with(bad)))
        .map(String::from)
        .collect()
}

/// The standard machine's arguments with the built-in `virtio-blk-pci`
/// (and its drive) replaced by `vhost-user-blk-pci` on `socket`, and guest
/// RAM moved to a shared memfd the backend can map (vhost-user needs it).
fn vhost_user_args(standard: &[String], socket: &Path, queues: u32) -> Result<Vec<String>, String> {
    let value_of = |flag: &str| {
        standard.iter().position(|a| a == flag).and_then(|i| standard.get(i + 1)).cloned()
    };
    let memory = value_of("-m").ok_or("no -m in the standard machine")?;
    let machine = value_of("-machine").ok_or("no -machine in the standard machine")?;
    let mut out = vec![];
    let mut replaced_blk = false;
    let mut args = standard.iter();
    while let Some(arg) = args.next() {
        let value = || args.clone().next().cloned().unwrap_or_default();
        match arg.as_str() {
            "-drive" | "-blockdev" if value().contains("id=d0") || value().contains("name=d0") => {
                args.next();
            }
            "-device" if value().starts_with("virtio-blk-pci") => {
                args.next();
                out.push("-device".into());
                out.push(format!(
                    "vhost-user-blk-pci,chardev=c0,num-queues={queues},disable-legacy=on"
                ));
                replaced_blk = true;
            }
            "-machine" => {
                args.next();
                out.push("-machine".into());
                out.push(format!("{machine},memory-backend=mem"));
            }
            _ => out.push(arg.clone()),
        }
    }
    if !replaced_blk {
        return Err("no virtio-blk-pci device in the standard machine".into());
    }
    out.push("-object".into());
    out.push(format!("memory-backend-memfd,id=mem,size={memory},share=on"));
    // reconnect=1: after the backend hangs up, QEMU dials again every
    // second (the drop-socket-reconnect scenario answers).
    out.push("-chardev".into());
    out.push(format!("socket,id=c0,path={},reconnect=1", socket.display()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{Accel, QEMU_BIN};

    #[test]
    fn standard_machine_becomes_vhost_user() {
        let q = Qemu {
            bin: QEMU_BIN.into(),
            kernel: "k".into(),
            disk: "target/vireo-disk.img".into(),
            smp: 2,
            accel: Accel::Tcg,
            machine: crate::qemu::Machine::Q35,
            cpu: "max".into(),
            memory: None,
            devices: DeviceSet::Standard,
            extra_args: Vec::new(),
        };
        // Canary frames: a device write into memory the kernel freed shows in
        // `mem` (judge.rs).
        let standard = q.args_with(DeviceSet::Standard, "mm.canary", Serial::Stdio);
        let a = vhost_user_args(&standard, Path::new("target/hostile/x.sock"), 4).unwrap();
        let a = a.join(" ");
        assert!(a.contains("-machine q35,memory-backend=mem"), "{a}");
        assert!(a.contains("-m 512M"), "{a}");
        assert!(a.contains("-object memory-backend-memfd,id=mem,size=512M,share=on"), "{a}");
        assert!(a.contains("-chardev socket,id=c0,path=target/hostile/x.sock,reconnect=1"), "{a}");
        assert!(
            a.contains("-device vhost-user-blk-pci,chardev=c0,num-queues=4,disable-legacy=on"),
            "{a}"
        );
        assert!(!a.contains("virtio-blk-pci,drive"), "{a}");
        assert!(!a.contains("vireo-disk.img"), "{a}");
        assert!(a.contains("-device virtio-gpu-pci"), "{a}");
        assert!(vhost_user_args(&["-m".into(), "1G".into()], Path::new("s"), 1).is_err());
    }

    #[test]
    fn workload_is_every_blk_test_but_the_deadlocking_one() {
        let listing = "tests\r\n  mm::frame::a\r\n  drivers::virtio::blk::flush_succeeds\r\n  \
                       drivers::virtio::blk::more_requests_than_the_pool_wait_for_space\r\n";
        assert_eq!(workload_tests(listing, false), vec!["drivers::virtio::blk::flush_succeeds"]);
        assert_eq!(workload_tests(listing, true).len(), 2);
    }

    #[test]
    fn list_parsing() {
        let text =
            "honest\tserve the image\t\nnum-queues-zero\tconfig: num_queues 0\tQEMU overwrites\n\n";
        let all = parse_list(text);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].unreachable, None);
        assert_eq!(all[1].unreachable.as_deref(), Some("QEMU overwrites"));
    }
}
