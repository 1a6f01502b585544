//! `make bench`: vireo against its yardsticks in interleaved rounds.
//!
//! This machine's speed drifts by up to 2x within minutes, so a figure
//! alone means little and two figures taken minutes apart compare the host
//! with itself. Each round therefore runs, per workload group (blk, gpu,
//! ring, sched), vireo and its yardsticks back to back, in alternating
//! order, each guest booted once for the whole group: the Linux peer guest
//! and the blk limit probe with `--peer`, virtio-drivers inside the host
//! ring bench. A ratio is taken within each round; the summary is the
//! median of those per-round ratios with their min–max, beside each side's
//! median and min–max.
//!
//! Before each round the runner waits (bounded) for the host to be quiet
//! and measures what other processes used during every run; a group-round
//! disturbed beyond a threshold is redone once and marked (see `load`).
//! Every run is kept as `target/bench/<timestamp>-<commit>.json`, and the
//! markdown tables README quotes are printed from it.
//!
//! Files: `rounds` runs the processes, `plan` says what runs and which
//! figures compare, `parse` reads their output, `load` watches the host,
//! `stats` and `summary` reduce rounds to medians and ranges, `results` is
//! the JSON record, `compare` puts a saved run beside today's, `sides`
//! finds the peer and the probe.

mod compare;
mod load;
mod parse;
mod plan;
mod results;
mod rounds;
mod sides;
mod stats;
mod summary;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::BootArgs;
use crate::cmds::Ctx;
use plan::Group;
use results::{BenchRun, GroupRound, HostInfo, Thresholds};
use summary::WorkloadSummary;

/// Seconds each timed guest workload runs, on vireo and the peer alike.
/// Three rounds of all four groups then take about five minutes here, which
/// leaves room for quiet waits and redos inside the 15-minute budget;
/// longer workloads would not help, since what moves the figures is the
/// host drifting between runs, not too few samples within one.
pub const DEFAULT_SECS: u32 = 2;

/// `cargo xtask bench` options.
#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub boot: BootArgs,
    /// Kill any one guest or host bench after this many seconds (a warm
    /// run takes under 40 s here; the peer's first, which downloads, ~90 s).
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Also run the Linux peer guest (../shared/peers/linux-guest, or
    /// $VIREO_PEER_DIR) and the blk limit probe (../shared/probes/blk-limit,
    /// or $VIREO_LIMIT_PROBE_DIR) in every round and print ratios. Off by
    /// default: the peer's first run downloads Debian packages (~1 min).
    #[arg(long)]
    pub peer: bool,
    /// Interleaved rounds [default: 3 with --peer, else 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: Option<u32>,
    /// Seconds each timed guest workload runs (vireo and the Linux peer).
    #[arg(long, default_value_t = DEFAULT_SECS, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub secs: u32,
    /// Only these workload groups (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub group: Vec<Group>,
    /// After the run, print its ratios beside those of this saved run
    /// (a target/bench/*.json file).
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
}

impl BenchArgs {
    fn rounds(&self) -> u32 {
        self.rounds.unwrap_or(if self.peer { 3 } else { 1 })
    }

    /// The chosen groups in round order, each once.
    fn groups(&self) -> Vec<Group> {
        let chosen = |g: &Group| {
            self.group.contains(g) || (*g == Group::Gpu1080 && self.group.contains(&Group::Gpu))
        };
        Group::ALL.into_iter().filter(|g| self.group.is_empty() || chosen(g)).collect()
    }
}

/// `cargo xtask bench`.
///
/// A side that fails is reported and the rounds go on, so one broken bench
/// does not hide the others' numbers; the run then ends with an error after
/// the summary and the JSON file are written.
pub fn run(ctx: &Ctx, args: &BenchArgs) -> Result<(), String> {
    let started = Instant::now();
    let (stamp, started_utc) = results::utc_stamps(SystemTime::now());
    // Now, not at the end: the code that runs is the tree as it is now.
    let commit = results::commit(&ctx.root);
    let saved = args.compare.as_deref().map(BenchRun::load).transpose()?;
    let (rounds, groups) = (args.rounds(), args.groups());
    let with_blk = groups.contains(&Group::Blk);
    let peer = args.peer.then(|| sides::PEER.locate(&ctx.root)).transpose()?;
    let probe =
        (args.peer && with_blk).then(|| sides::LIMIT_PROBE.locate(&ctx.root)).transpose()?;
    let mut host = HostInfo::probe();
    let q = ctx.machine(args.boot.smp, !args.boot.no_build)?;
    let (accel, smp) = (q.accel.arg().to_string(), q.smp);
    let mut runner = rounds::Runner::new(ctx, q, args, rounds, (peer, probe));
    if groups.contains(&Group::Ring) {
        runner.prebuild_host_benches()?;
    }
    let names: Vec<_> = groups.iter().map(|g| g.name()).collect();
    println!(
        "==> {rounds} round(s) of {} ({} s per timed workload){}",
        names.join(", "),
        args.secs,
        if args.peer { " with the Linux peer and the limit probe" } else { "" }
    );
    let group_rounds = runner.run(&groups);
    let summary = summarise(&group_rounds, runner.gpu_size, &groups);
    println!("==> summary: median [min-max] over rounds; ratio = median of per-round ratios");
    for s in &summary {
        println!("{}", summary::compare_line(s));
    }
    host.loadavg_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().into();
    let errors = errors(&group_rounds);
    let record = BenchRun {
        schema: results::SCHEMA,
        started_utc,
        commit,
        host,
        accel,
        smp,
        rounds,
        secs_per_workload: args.secs,
        peer: args.peer,
        groups,
        gpu_size: runner.gpu_size,
        thresholds: Thresholds::current(),
        group_rounds,
        summary,
        wall_s: started.elapsed().as_secs_f64(),
        errors: errors.clone(),
    };
    let path = record.save(&ctx.target.join("bench"), &stamp)?;
    let shown = path.strip_prefix(&ctx.root).unwrap_or(&path);
    println!("==> markdown for README:\n");
    println!("{}", summary::markdown(&table_header(&record, shown), &record.summary));
    if let (Some(saved), Some(file)) = (saved, &args.compare) {
        println!("==> beside {} ({}, commit {}):", file.display(), saved.started_utc, saved.commit);
        for line in compare::versus_lines(&record.summary, &saved.summary) {
            println!("{line}");
        }
    }
    println!("==> results: {}  (total {:.0} s)", shown.display(), record.wall_s);
    if errors.is_empty() { Ok(()) } else { Err(errors.join("\n")) }
}

/// Every workload of `groups` over its group's kept rounds.
fn summarise(
    rounds: &[GroupRound],
    gpu_size: (u32, u32),
    groups: &[Group],
) -> Vec<WorkloadSummary> {
    plan::workloads(gpu_size)
        .iter()
        .filter(|w| groups.contains(&w.group))
        .map(|w| {
            let kept: Vec<_> = rounds.iter().filter(|r| r.group == w.group && r.kept).collect();
            let figures: Vec<_> = kept
                .iter()
                .map(|r| plan::figures(w, |s| r.lookup(s.side, &s.name, s.key)))
                .collect();
            let disturbed = kept.iter().filter(|r| r.disturbed).count();
            summary::summarise(w, &figures, disturbed)
        })
        .collect()
}

/// One line per failed run.
fn errors(rounds: &[GroupRound]) -> Vec<String> {
    rounds
        .iter()
        .flat_map(|gr| {
            gr.runs.iter().filter(|r| !r.ok).map(move |r| {
                format!("round {} {} {}: {}", gr.round, gr.group.name(), r.side.name(), r.exit)
            })
        })
        .collect()
}

/// The sentence above README's tables: which run, how, and how disturbed.
fn table_header(run: &BenchRun, file: &Path) -> String {
    let attempts = run.group_rounds.len();
    let disturbed = run.group_rounds.iter().filter(|r| r.disturbed).count();
    let redone = run.group_rounds.iter().filter(|r| r.attempt == 2).count();
    let kept_disturbed = run.group_rounds.iter().filter(|r| r.kept && r.disturbed).count();
    format!(
        "From `{}` ({}, commit {}; {} round(s), `{}`, {} vCPUs, {} s per guest workload, QEMU {}). \
         Each figure is the median over rounds with the min–max in parentheses; each ratio is \
         the median of the per-round ratios (ring: of each round's median over 9 interleaved \
         pairs, range over all pairs). {disturbed} of {attempts} group-rounds were disturbed \
         (other processes >= {} cores), {redone} redone, {kept_disturbed} disturbed kept.",
        file.display(),
        run.started_utc,
        run.commit,
        run.rounds,
        run.accel,
        run.smp,
        run.secs_per_workload,
        run.host.qemu_version.trim_start_matches("QEMU emulator version "),
        run.thresholds.disturbed_cores,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use load::{Keep, Load};
    use parse::{Dialect, parse_output};
    use plan::Side;
    use results::RunRecord;

    fn run(side: Side, dialect: Dialect, text: &str, others_cores: f64) -> RunRecord {
        RunRecord {
            side,
            command: String::new(),
            load: Load { wall_s: 10.0, others_cores: Some(others_cores) },
            exit: "ok".into(),
            ok: true,
            output: parse_output(dialect, text),
        }
    }

    /// One blk group-round from lines shaped like the real ones, with the
    /// cores others took during each of vireo's, Linux's and the probe's run.
    fn blk_round(round: u32, attempt: u32, iops: [u32; 3], others: [f64; 3]) -> GroupRound {
        let [vireo, linux, limit] = iops;
        let vireo = format!(
            "[     0.096072] INFO  vireo: boot: ready in 96037 us\r\n\
             BENCH blk_randread4k_qd1 iops={vireo} mb_s=47.5 lat_us_p50=77 lat_us_p99=197 ops=1\r\n"
        );
        let linux = format!(
            "PEER init up 4.01 2.27\nRESULT name=randread4k_qd1 iops={linux} mbps=14.1 \
             lat_us_mean=281.8 lat_us_p50=235.5 lat_us_p99=872.3 n=3448\nPEER done\n"
        );
        let limit = format!("RESULT name=limit_randread4k_qd1 iops={limit} kicks=20000\n");
        let runs = vec![
            run(Side::Vireo, Dialect::Kernel, &vireo, others[0]),
            run(Side::Linux, Dialect::Result, &linux, others[1]),
            run(Side::Limit, Dialect::Result, &limit, others[2]),
        ];
        let loads: Vec<_> = runs.iter().map(|r| r.load).collect();
        GroupRound {
            group: Group::Blk,
            round,
            attempt,
            quiet_wait: None,
            worst_others_cores: load::worst_cores(&loads),
            disturbed: load::is_disturbed(&loads),
            redone: false,
            kept: true,
            runs,
        }
    }

    #[test]
    fn summary_of_canned_rounds_uses_the_kept_attempts() {
        // Round 2 first ran while a build held a core and vireo slowed to a
        // third: redone, and the redo is kept.
        let mut r2 = blk_round(2, 1, [4_000, 3_000, 20_000], [1.1, 0.0, 0.0]);
        let mut r2_redo = blk_round(2, 2, [10_000, 3_000, 18_000], [0.1, 0.1, 0.0]);
        assert!(r2.disturbed && !r2_redo.disturbed);
        assert_eq!(rounds::settle_redo(&mut r2, &mut r2_redo), Keep::Redo);
        assert!(r2.redone && r2_redo.redone && !r2.kept && r2_redo.kept);
        // Round 3's redo was disturbed worse: the first attempt stays, and
        // counts as a disturbed round.
        let mut r3 = blk_round(3, 1, [16_000, 4_000, 30_000], [0.4, 0.0, 0.0]);
        let mut r3_redo = blk_round(3, 2, [1_000, 4_000, 30_000], [0.0, 0.0, 2.0]);
        assert_eq!(rounds::settle_redo(&mut r3, &mut r3_redo), Keep::First);
        let r1 = blk_round(1, 1, [12_000, 4_000, 16_000], [0.0; 3]);
        let all = [r1, r2, r2_redo, r3, r3_redo];
        let summary = summarise(&all, (1280, 800), &[Group::Blk]);
        let ids: Vec<_> = summary.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["randread4k_qd1", "randread4k_qd32", "randwrite4k_qd1", "seqread1m_qd1"]);
        // Kept: 12000/4000, 10000/3000, 16000/4000 → ratios 3.0, 3.33, 4.0.
        assert_eq!(
            summary::compare_line(&summary[0]),
            "COMPARE randread4k_qd1 vireo=12000 [10000-16000] linux=4000 [3000-4000] \
             limit=18000 [16000-30000] ratio=3.33 [3.00-4.00] vs_limit=0.56 [0.53-0.75] \
             unit=iops rounds=3 disturbed=1"
        );
        let p50 = &summary[0].extras[0];
        assert_eq!((p50.key.as_str(), p50.vireo.unwrap().median), ("lat_us_p50", 77.0));
        assert_eq!(p50.other.unwrap().median, 235.5);
        assert!(summary::compare_line(&summary[1]).contains("vireo=missing"));
    }

    #[test]
    fn failed_runs_become_errors() {
        let mut gr = blk_round(2, 1, [1, 1, 1], [0.0; 3]);
        gr.runs[1].ok = false;
        gr.runs[1].exit = "killed after 600 s".into();
        assert_eq!(errors(&[gr]), ["round 2 blk linux: killed after 600 s"]);
    }

    #[test]
    fn default_rounds_and_groups() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let args = |a: &[&str]| Cli::parse_from([&["x"], a].concat()).bench;
        assert_eq!(args(&[]).rounds(), 1);
        assert_eq!(args(&["--peer"]).rounds(), 3);
        assert_eq!(args(&["--peer", "--rounds", "2"]).rounds(), 2);
        assert_eq!(args(&[]).groups(), Group::ALL);
        assert_eq!(args(&["--group", "sched,blk,sched"]).groups(), [Group::Blk, Group::Sched]);
    }
}
