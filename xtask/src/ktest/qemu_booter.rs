//! The real [`Booter`]: QEMU with the standard device set, a per-test
//! time limit, a stall limit, and a heartbeat while a test is quiet.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{BootEnd, Booter};
use crate::process::{Chunk, Streaming};
use crate::progress::Heartbeat;
use crate::qemu::{Qemu, Serial};
use crate::serial::{Event, Parser};

/// Timeouts for live boots.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Max wall time between `test X ... ` and its result.
    pub per_test: Duration,
    /// Max wall time without a test starting or finishing while none runs
    /// (boot, between tests, shutdown).
    pub stall: Duration,
}

/// The real [`Booter`]: QEMU with the standard device set. Each boot's raw
/// serial output is kept in `target/ktest-smp<N>-boot<K>.log` for post-mortems.
pub struct QemuBooter {
    pub qemu: Qemu,
    pub limits: Limits,
    pub log_dir: PathBuf,
    pub boots: usize,
}

impl QemuBooter {
    /// A booter whose log numbering starts at 1; stale logs of an earlier
    /// run with the same vCPU count are removed so none can be mistaken
    /// for this run's.
    pub fn new(qemu: Qemu, limits: Limits, log_dir: PathBuf) -> Self {
        let prefix = format!("ktest-smp{}-boot", qemu.smp);
        if let Ok(dir) = std::fs::read_dir(&log_dir) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name.ends_with(".log") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Self { qemu, limits, log_dir, boots: 0 }
    }
}

impl Booter for QemuBooter {
    fn boot(&mut self, cmdline: &str, on_event: &mut dyn FnMut(&Event)) -> BootEnd {
        self.boots += 1;
        let log_path =
            self.log_dir.join(format!("ktest-smp{}-boot{}.log", self.qemu.smp, self.boots));
        let mut log = File::create(&log_path).ok();
        let cmd = self.qemu.command(cmdline, Serial::Stdio, &[]);
        let mut qemu = match Streaming::spawn(cmd) {
            Ok(s) => s,
            Err(e) => return BootEnd::LaunchError(e),
        };
        let mut parser = Parser::new();
        let mut last_progress = Instant::now();
        let mut test_started = Instant::now();
        let mut heartbeat = Heartbeat::new("kernel boot");
        loop {
            let deadline = if parser.in_progress().is_some() {
                test_started + self.limits.per_test
            } else {
                last_progress + self.limits.stall
            };
            match qemu.next_or_beat(deadline, &mut heartbeat) {
                Chunk::Data(d) => {
                    if let Some(f) = log.as_mut() {
                        let _ = f.write_all(d.as_bytes());
                    }
                    for ev in parser.feed(&d) {
                        match &ev {
                            Event::Started(name) => {
                                test_started = Instant::now();
                                last_progress = test_started;
                                heartbeat = Heartbeat::new(format!("test {name}"));
                            }
                            Event::Result { .. } | Event::Summary { .. } => {
                                last_progress = Instant::now();
                            }
                            Event::Log(_) => {}
                        }
                        on_event(&ev);
                    }
                }
                Chunk::Eof => {
                    for ev in parser.finish() {
                        on_event(&ev);
                    }
                    return BootEnd::Exited(qemu.wait());
                }
                Chunk::Timeout => {
                    let running = parser.in_progress().is_some();
                    qemu.kill();
                    for ev in parser.finish() {
                        on_event(&ev);
                    }
                    return if running {
                        BootEnd::TestTimeout(self.limits.per_test)
                    } else {
                        BootEnd::Stalled(self.limits.stall)
                    };
                }
            }
        }
    }
}

/// Drives the real [`QemuBooter`] (pipes, deadlines, kill) against a
/// shell script standing in for QEMU.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_qemu::FakeQemu;
    use crate::ktest::{SuiteOptions, run_suite};
    use crate::qemu::Accel;

    const SCRIPT: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = "-append" ] && APPEND="$2"; shift; done
case "$APPEND" in
  *stall*) exec sleep 30 ;;
  *after=a::boom*) printf 'test b::fine ... ok (2 us)\nktest: 1 passed, 0 failed\n'; exit 33 ;;
  *after=a::hang*) printf 'test a::boom ... \npanicked at x.rs:1:1: boom\n'; exit 35 ;;
  *) printf 'test a::ok ... ok (1 us)\ntest a::hang ... '; exec sleep 30 ;;
esac
"#;

    fn booter(fake: &FakeQemu) -> QemuBooter {
        let dir = fake.dir.clone();
        std::fs::write(dir.join("ktest-smp2-boot9.log"), "stale").unwrap();
        let b = QemuBooter::new(
            Qemu {
                bin: fake.bin.clone(),
                kernel: "k".into(),
                disk: "d".into(),
                smp: 2,
                accel: Accel::Tcg,
                machine: crate::qemu::Machine::Q35,
                cpu: "max".into(),
                memory: None,
                devices: crate::qemu::DeviceSet::Standard,
                extra_args: vec![],
            },
            Limits { per_test: Duration::from_secs(1), stall: Duration::from_secs(1) },
            dir.clone(),
        );
        assert!(!dir.join("ktest-smp2-boot9.log").exists());
        b
    }

    #[test]
    fn timeout_then_panic_then_clean_finish() {
        let fake = FakeQemu::new("restart", SCRIPT);
        let mut b = booter(&fake);
        let opts = SuiteOptions {
            base_cmdline: vec!["ktest".into()],
            max_boots: 10,
            ..Default::default()
        };
        let res = run_suite(&mut b, &opts, &mut |_| {});
        assert!(res.errors.is_empty(), "{:?}", res.errors);
        assert_eq!(res.boots, 3);
        assert_eq!(res.passed(), 2);
        let failed: Vec<_> = res.failed().map(|r| r.name.as_str()).collect();
        assert_eq!(failed, vec!["a::hang", "a::boom"]);
        let log = std::fs::read_to_string(b.log_dir.join("ktest-smp2-boot2.log")).unwrap();
        assert!(log.contains("boom"));
    }

    #[test]
    fn silent_kernel_is_a_stall_error() {
        let fake = FakeQemu::new("stall", SCRIPT);
        let mut b = booter(&fake);
        let opts = SuiteOptions {
            base_cmdline: vec!["ktest stall".into()],
            max_boots: 10,
            ..Default::default()
        };
        let res = run_suite(&mut b, &opts, &mut |_| {});
        assert_eq!(res.boots, 1);
        assert!(res.errors[0].contains("no test progress"), "{:?}", res.errors);
    }
}
