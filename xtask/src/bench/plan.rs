//! What a bench round runs and which figures it compares: the workload
//! groups, the order of the sides in each round, and the table of workloads
//! naming where each side prints its figure.

use serde::{Deserialize, Serialize};

use super::stats::RoundRatio;

/// A set of workloads that one boot of each guest runs together.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// virtio-blk: vireo, the Linux peer, the limit probe.
    Blk,
    /// virtio-gpu: vireo and the Linux peer, at QEMU's default 1280x800.
    Gpu,
    /// The full-frame workload again at 1920x1080 (`-global
    /// virtio-gpu-pci.xres/yres`, the peer's XRES/YRES): one more boot of
    /// each side. `--group gpu` selects it too.
    Gpu1080,
    /// The host ring bench: vireo's split queue and virtio-drivers'.
    Ring,
    /// Scheduler and IPI latencies, and the boot time: vireo only.
    Sched,
}

impl Group {
    /// Every group, in the order a round runs them.
    pub const ALL: [Group; 5] = [Group::Blk, Group::Gpu, Group::Gpu1080, Group::Ring, Group::Sched];

    /// The name used on the kernel command line and in output.
    pub fn name(self) -> &'static str {
        match self {
            Group::Blk => "blk",
            Group::Gpu => "gpu",
            Group::Gpu1080 => "gpu1080",
            Group::Ring => "ring",
            Group::Sched => "sched",
        }
    }

    /// What vireo's figures are compared with, if anything.
    pub fn other_name(self) -> Option<&'static str> {
        match self {
            Group::Blk | Group::Gpu | Group::Gpu1080 => Some("linux"),
            Group::Ring => Some("virtio_drivers"),
            Group::Sched => None,
        }
    }
}

/// Who runs in a round: one process each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A vireo boot with `bench=<group>`.
    Vireo,
    /// The Linux peer guest.
    Linux,
    /// The blk limit probe.
    Limit,
    /// The host ring bench (it interleaves vireo and virtio-drivers itself).
    RingBench,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Vireo => "vireo",
            Side::Linux => "linux",
            Side::Limit => "limit",
            Side::RingBench => "ring bench",
        }
    }
}

/// The sides of `group` in round `round` (1-based), back to back: forward
/// in odd rounds, reversed in even ones (ABA/BAB), so neither side always
/// runs first on a host that is warming up or calming down.
pub fn order(group: Group, round: u32, with_peer: bool) -> Vec<Side> {
    let mut sides = match (group, with_peer) {
        (Group::Blk, true) => vec![Side::Vireo, Side::Linux, Side::Limit],
        (Group::Gpu | Group::Gpu1080, true) => vec![Side::Vireo, Side::Linux],
        (Group::Blk | Group::Gpu | Group::Gpu1080 | Group::Sched, _) => vec![Side::Vireo],
        (Group::Ring, _) => vec![Side::RingBench],
    };
    if round.is_multiple_of(2) {
        sides.reverse();
    }
    sides
}

/// What a figure counts; says how to print it and which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Iops,
    Fps,
    /// Round trips per second.
    PerSecond,
    MegabytesPerSecond,
    Nanoseconds,
    Microseconds,
    Count,
}

/// Where one side prints one figure: field `key` of measurement `name` in
/// the output of `side`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub side: Side,
    pub name: String,
    pub key: &'static str,
}

fn source(side: Side, name: &str, key: &'static str) -> Source {
    Source { side, name: name.into(), key }
}

/// A secondary figure of a workload (latency percentiles, MB/s, lost
/// kicks): summarised per side, not divided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    pub key: &'static str,
    pub unit: Unit,
    pub vireo: Option<Source>,
    pub other: Option<Source>,
}

/// One compared workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The peer's name for it (`randread4k_qd1`), or vireo's when alone.
    pub id: String,
    pub group: Group,
    /// The words README uses for it.
    pub label: String,
    pub unit: Unit,
    pub vireo: Source,
    /// Linux's (blk, gpu) or virtio-drivers' (ring) figure.
    pub other: Option<Source>,
    /// The limit probe's figure (blk random reads).
    pub limit: Option<Source>,
    /// Keys in vireo's measurement holding a ratio the run already took
    /// over interleaved pairs, and its range (the ring bench).
    pub reported_ratio: Option<[&'static str; 3]>,
    pub extras: Vec<Extra>,
}

/// The second full-frame size, as the peer's `XRES=1920 YRES=1080`.
pub const GPU_1080: (u32, u32) = (1920, 1080);

/// Every workload, with the GPU's full-frame name at `gpu` = (width, height).
pub fn workloads(gpu: (u32, u32)) -> Vec<Workload> {
    let mut all = Vec::new();
    // The peer prints no latencies at QD32 (its AIO loop does not time each
    // request); that cell then stays empty.
    let latency = |vireo: &str, linux: &str| -> Vec<Extra> {
        [("lat_us_p50", "lat_us_p50"), ("lat_us_p99", "lat_us_p99")]
            .into_iter()
            .map(|(ours, theirs)| Extra {
                key: ours,
                unit: Unit::Microseconds,
                vireo: Some(source(Side::Vireo, vireo, ours)),
                other: Some(source(Side::Linux, linux, theirs)),
            })
            .collect()
    };
    for (id, label, limit) in [
        ("randread4k_qd1", "4 KiB random read, QD1", Some("limit_randread4k_qd1")),
        ("randread4k_qd32", "4 KiB random read, QD32", Some("limit_randread4k_qd32")),
        ("randwrite4k_qd1", "4 KiB random write, QD1", None),
        ("seqread1m_qd1", "1 MiB sequential read, QD1", None),
    ] {
        let vireo = format!("blk_{id}");
        let mut extras = latency(&vireo, id);
        if id.starts_with("seqread") {
            extras.push(Extra {
                key: "mb_s",
                unit: Unit::MegabytesPerSecond,
                vireo: Some(source(Side::Vireo, &vireo, "mb_s")),
                other: Some(source(Side::Linux, id, "mbps")),
            });
        }
        all.push(Workload {
            id: id.into(),
            group: Group::Blk,
            label: label.into(),
            unit: Unit::Iops,
            vireo: source(Side::Vireo, &vireo, "iops"),
            other: Some(source(Side::Linux, id, "iops")),
            limit: limit.map(|l| source(Side::Limit, l, "iops")),
            reported_ratio: None,
            extras,
        });
    }
    let (width, height) = gpu;
    let (big_width, big_height) = GPU_1080;
    let gpu_extras = |id: &str| -> Vec<Extra> {
        ["frame_us_p50", "frame_us_p99", "kicks_per_frame", "fences_per_frame"]
            .into_iter()
            .map(|key| Extra {
                key,
                unit: if key.starts_with("frame") { Unit::Microseconds } else { Unit::Count },
                vireo: Some(source(Side::Vireo, id, key)),
                other: None,
            })
            .collect()
    };
    for (group, id, label, with_linux) in [
        (
            Group::Gpu,
            format!("gpu_full_{width}x{height}"),
            format!("redraw and present the full {width}x{height} frame"),
            true,
        ),
        (
            Group::Gpu,
            "gpu_damage64_64x64".to_string(),
            "redraw and present one 64x64 rectangle".to_string(),
            true,
        ),
        (
            Group::Gpu,
            "gpu_moving64_64x64".to_string(),
            "a 64x64 rectangle moving (damage: old and new place)".to_string(),
            false,
        ),
        (
            Group::Gpu1080,
            format!("gpu_full_{big_width}x{big_height}"),
            format!("redraw and present the full {big_width}x{big_height} frame"),
            true,
        ),
    ] {
        all.push(Workload {
            group,
            label,
            unit: Unit::Fps,
            vireo: source(Side::Vireo, &id, "fps"),
            other: with_linux.then(|| source(Side::Linux, &id, "fps")),
            limit: None,
            reported_ratio: None,
            extras: gpu_extras(&id),
            id,
        });
    }
    for (id, label) in [
        ("ring_rt_per_s", "3 segments, direct"),
        ("ring_rt_indirect_per_s", "3 segments, indirect table"),
        ("ring_rt_batch8_per_s", "batches of 8"),
    ] {
        all.push(Workload {
            id: id.into(),
            group: Group::Ring,
            label: label.into(),
            unit: Unit::PerSecond,
            vireo: source(Side::RingBench, id, "vireo"),
            other: Some(source(Side::RingBench, id, "virtio_drivers")),
            limit: None,
            reported_ratio: Some(["ratio", "ratio_lo", "ratio_hi"]),
            extras: vec![Extra {
                key: "lost_kicks",
                unit: Unit::Count,
                vireo: None,
                other: Some(source(Side::RingBench, id, "virtio_drivers_lost_kicks")),
            }],
        });
    }
    let boot = "boot to `boot: ready` (guest time)";
    all.push(Workload {
        id: super::parse::BOOT_READY.into(),
        group: Group::Sched,
        label: boot.into(),
        unit: Unit::Microseconds,
        vireo: source(Side::Vireo, super::parse::BOOT_READY, "us"),
        other: None,
        limit: None,
        reported_ratio: None,
        extras: vec![],
    });
    for (id, label) in [
        ("context_switch", "context switch (yield between two threads on one CPU)"),
        ("ipi_round_trip", "IPI round trip (request + reply IPI)"),
        ("wakeup_latency", "cross-CPU wake-up (wake to running)"),
    ] {
        all.push(Workload {
            id: id.into(),
            group: Group::Sched,
            label: label.into(),
            unit: Unit::Nanoseconds,
            vireo: source(Side::Vireo, id, "median_ns"),
            other: None,
            limit: None,
            reported_ratio: None,
            extras: vec![Extra {
                key: "p99_ns",
                unit: Unit::Nanoseconds,
                vireo: Some(source(Side::Vireo, id, "p99_ns")),
                other: None,
            }],
        });
    }
    all
}

/// One round's figures of one workload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundFigures {
    pub vireo: Option<f64>,
    pub other: Option<f64>,
    pub limit: Option<f64>,
    /// vireo / other of this round (or the ring bench's own paired ratio).
    pub ratio: Option<RoundRatio>,
    /// vireo / limit of this round.
    pub vs_limit: Option<RoundRatio>,
    /// Per extra: (vireo, other).
    pub extras: Vec<(Option<f64>, Option<f64>)>,
}

/// Picks `w`'s figures out of one round; `lookup` reads a source from that
/// round's outputs.
pub fn figures(w: &Workload, lookup: impl Fn(&Source) -> Option<f64>) -> RoundFigures {
    let vireo = lookup(&w.vireo);
    let other = w.other.as_ref().and_then(&lookup);
    let limit = w.limit.as_ref().and_then(&lookup);
    let ratio = match w.reported_ratio {
        Some([value, lo, hi]) => {
            let at = |key| lookup(&Source { key, ..w.vireo.clone() });
            at(value).map(|value| RoundRatio {
                value,
                lo: at(lo).unwrap_or(value),
                hi: at(hi).unwrap_or(value),
            })
        }
        None => RoundRatio::divide(vireo, other),
    };
    let extras = w
        .extras
        .iter()
        .map(|e| (e.vireo.as_ref().and_then(&lookup), e.other.as_ref().and_then(&lookup)))
        .collect();
    RoundFigures { vireo, other, limit, ratio, vs_limit: RoundRatio::divide(vireo, limit), extras }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_the_order() {
        use Side::*;
        assert_eq!(order(Group::Blk, 1, true), [Vireo, Linux, Limit]);
        assert_eq!(order(Group::Blk, 2, true), [Limit, Linux, Vireo]);
        assert_eq!(order(Group::Blk, 3, true), [Vireo, Linux, Limit]);
        assert_eq!(order(Group::Gpu, 2, true), [Linux, Vireo]);
        assert_eq!(order(Group::Gpu, 2, false), [Vireo]);
        assert_eq!(order(Group::Ring, 2, true), [RingBench]);
        assert_eq!(order(Group::Sched, 1, true), [Vireo]);
    }

    #[test]
    fn every_group_has_workloads_and_ids_are_unique() {
        let all = workloads((1280, 800));
        for g in Group::ALL {
            assert!(all.iter().any(|w| w.group == g), "{g:?}");
        }
        let mut ids: Vec<_> = all.iter().map(|w| w.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert!(all.iter().any(|w| w.vireo.name == "gpu_full_1280x800"));
    }

    fn table(name: &str, key: &str) -> Option<f64> {
        match (name, key) {
            ("blk_randread4k_qd1", "iops") => Some(12_000.0),
            ("blk_randread4k_qd1", "lat_us_p50") => Some(80.0),
            ("randread4k_qd1", "iops") => Some(4_000.0),
            ("limit_randread4k_qd1", "iops") => Some(16_000.0),
            ("ring_rt_per_s", "vireo") => Some(30e6),
            ("ring_rt_per_s", "virtio_drivers") => Some(16e6),
            ("ring_rt_per_s", "ratio") => Some(1.9),
            ("ring_rt_per_s", "ratio_lo") => Some(1.7),
            ("ring_rt_per_s", "ratio_hi") => Some(2.1),
            _ => None,
        }
    }

    #[test]
    fn figures_divide_guests_and_keep_the_ring_benchs_ratio() {
        let all = workloads((1280, 800));
        let qd1 = all.iter().find(|w| w.id == "randread4k_qd1").unwrap();
        let f = figures(qd1, |s| table(&s.name, s.key));
        assert_eq!((f.vireo, f.other, f.limit), (Some(12_000.0), Some(4_000.0), Some(16_000.0)));
        assert_eq!(f.ratio, Some(RoundRatio::point(3.0)));
        assert_eq!(f.vs_limit, Some(RoundRatio::point(0.75)));
        assert_eq!(f.extras[0], (Some(80.0), None));
        let ring = all.iter().find(|w| w.id == "ring_rt_per_s").unwrap();
        let f = figures(ring, |s| table(&s.name, s.key));
        // The bench's median paired ratio, not 30/16.
        assert_eq!(f.ratio, Some(RoundRatio { value: 1.9, lo: 1.7, hi: 2.1 }));
        let qd32 = all.iter().find(|w| w.id == "randread4k_qd32").unwrap();
        assert_eq!(
            figures(qd32, |s| table(&s.name, s.key)),
            RoundFigures { extras: vec![(None, None), (None, None)], ..RoundFigures::default() }
        );
    }
}
