//! The scenarios: what the backend lies about in one boot, and for
//! request-level lies, on which requests.
//!
//! Each scenario is one enum arm with a one-line description; the runner
//! lists them with `hostile-blk --list` so the names live in one place.
//! Request lies start when the runner arms the backend (SIGUSR1), or at
//! request number `--at` (counted over all queues from 0), so the driver's
//! probe and first I/O see an honest device; they are told once, or on
//! random requests from then on (status lies, fuzz).
//! Every random choice comes from `--seed`, so a run replays exactly.

use crate::config::ConfigLie;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the backend does wrong with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// Used id past the queue size.
    UsedIdOutOfRange,
    /// Used id of a descriptor the driver has not made available.
    UsedIdFree,
    /// The request is completed, then its id is posted again.
    CompletedTwice,
    /// Used len larger than the request's writable bytes.
    UsedLenTooLarge,
    /// used.idx advanced by more than the queue size.
    UsedIdxJump,
    /// used.idx moved back by two.
    UsedIdxBackwards,
    /// Never completed.
    Stall,
    /// Completed after a delay, from a timer, into the ring and buffers the
    /// request had when it was taken (even if the driver reset since).
    Late,
    /// Thousands of interrupts with no used entry, then honest completion.
    InterruptStorm,
    /// Data transferred, but this status byte.
    Status(u8),
    /// Data transferred, status byte not written, used len 0.
    StatusLenZero,
    /// The backend closes the vhost-user socket instead of answering.
    HangUp,
}

/// Lies about the vhost-user protocol rather than one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolLie {
    /// Hang up when QEMU starts the device with the driver's features
    /// (`SET_FEATURES` + `SET_MEM_TABLE` at DRIVER_OK).
    RefuseFeatures,
    /// Never answer `GET_VRING_BASE`, QEMU's step of a device reset.
    ResetNeverFinishes,
    /// Flap the capacity and tell QEMU every 2 ms, so the config
    /// generation never settles (config_change.rs).
    GenerationUnsettled,
}

/// One boot's misbehaviour, chosen by the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Honest,
    UsedIdOutOfRange,
    UsedIdFree,
    CompletedTwice,
    UsedLenTooLarge,
    UsedIdxJump,
    UsedIdxBackwards,
    Stall,
    Late,
    InterruptStorm,
    StatusIoerr,
    StatusUnsupp,
    StatusGarbage,
    StatusLenZero,
    CapacityZero,
    CapacityHuge,
    NumQueuesZero,
    NumQueuesMax,
    SegMaxZero,
    #[value(name = "blk-size-3")]
    BlkSize3,
    GenerationUnsettled,
    RefuseFeatures,
    ResetNeverFinishes,
    DropSocket,
    DropSocketReconnect,
    Fuzz,
}

/// How a scenario misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Honest,
    /// `lie` once, at request `--at`.
    Once(Lie),
    /// A status lie on about one request in four from `--at` on.
    RandomStatus(StatusLie),
    Config(ConfigLie),
    Protocol(ProtocolLie),
    /// A random lie on about one request in four from `--at` on.
    Fuzz,
}

/// The status byte of the `status-*` scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusLie {
    Byte(u8),
    LenZero,
}

/// A status value §5.2.6 does not define.
pub const GARBAGE_STATUS: u8 = 0x5a;

impl Scenario {
    pub fn kind(self) -> Kind {
        use Scenario as S;
        match self {
            S::Honest => Kind::Honest,
            S::UsedIdOutOfRange => Kind::Once(Lie::UsedIdOutOfRange),
            S::UsedIdFree => Kind::Once(Lie::UsedIdFree),
            S::CompletedTwice => Kind::Once(Lie::CompletedTwice),
            S::UsedLenTooLarge => Kind::Once(Lie::UsedLenTooLarge),
            S::UsedIdxJump => Kind::Once(Lie::UsedIdxJump),
            S::UsedIdxBackwards => Kind::Once(Lie::UsedIdxBackwards),
            S::Stall => Kind::Once(Lie::Stall),
            S::Late => Kind::Once(Lie::Late),
            S::InterruptStorm => Kind::Once(Lie::InterruptStorm),
            S::StatusIoerr => Kind::RandomStatus(StatusLie::Byte(crate::request::S_IOERR)),
            S::StatusUnsupp => Kind::RandomStatus(StatusLie::Byte(crate::request::S_UNSUPP)),
            S::StatusGarbage => Kind::RandomStatus(StatusLie::Byte(GARBAGE_STATUS)),
            S::StatusLenZero => Kind::RandomStatus(StatusLie::LenZero),
            S::CapacityZero => Kind::Config(ConfigLie::CapacityZero),
            S::CapacityHuge => Kind::Config(ConfigLie::CapacityHuge),
            S::NumQueuesZero => Kind::Config(ConfigLie::NumQueuesZero),
            S::NumQueuesMax => Kind::Config(ConfigLie::NumQueuesMax),
            S::SegMaxZero => Kind::Config(ConfigLie::SegMaxZero),
            S::BlkSize3 => Kind::Config(ConfigLie::BlkSize3),
            S::GenerationUnsettled => Kind::Protocol(ProtocolLie::GenerationUnsettled),
            S::RefuseFeatures => Kind::Protocol(ProtocolLie::RefuseFeatures),
            S::ResetNeverFinishes => Kind::Protocol(ProtocolLie::ResetNeverFinishes),
            S::DropSocket | S::DropSocketReconnect => Kind::Once(Lie::HangUp),
            S::Fuzz => Kind::Fuzz,
        }
    }

    pub fn description(self) -> &'static str {
        use Scenario as S;
        match self {
            S::Honest => "serve the image as a correct device",
            S::UsedIdOutOfRange => "one used element names an id past the queue size",
            S::UsedIdFree => "one used element names a descriptor the driver never made available",
            S::CompletedTwice => "one request is completed, then its id is posted again",
            S::UsedLenTooLarge => "one used len exceeds the request's writable bytes",
            S::UsedIdxJump => "used.idx jumps ahead by more than the queue size",
            S::UsedIdxBackwards => "used.idx goes back by two",
            S::Stall => "one request is never completed",
            S::Late => "one request completes --late-ms late, into the ring it was taken from",
            S::InterruptStorm => "thousands of interrupts without used entries",
            S::StatusIoerr => "status IOERR on random requests",
            S::StatusUnsupp => "status UNSUPP on random requests",
            S::StatusGarbage => "an undefined status byte (0x5a) on random requests",
            S::StatusLenZero => "status byte not written, used len 0, on random requests",
            S::CapacityZero => "config: capacity 0",
            S::CapacityHuge => "config: capacity 2^63 sectors",
            S::NumQueuesZero => "config: num_queues 0",
            S::NumQueuesMax => "config: num_queues 65535",
            S::SegMaxZero => "config: seg_max 0",
            S::BlkSize3 => "config: blk_size 3",
            S::GenerationUnsettled => {
                "from the device's first start the capacity flaps and QEMU is told every \
                 2 ms: after DRIVER_OK the config generation never settles"
            }
            S::RefuseFeatures => "hang up when QEMU starts the device with the driver's features",
            S::ResetNeverFinishes => {
                "once lies are armed, never answer GET_VRING_BASE (QEMU's step of a reset)"
            }
            S::DropSocket => "close the vhost-user socket at the first armed request and stay away",
            S::DropSocketReconnect => {
                "close the vhost-user socket at the first armed request, then take QEMU's \
                 reconnection"
            }
            S::Fuzz => "a random lie on random requests, each logged with the seed",
        }
    }

    /// Why the lie cannot reach a guest through QEMU 7.2's vhost-user-blk,
    /// when it cannot.
    pub fn unreachable_reason(self) -> Option<&'static str> {
        match self {
            Scenario::NumQueuesZero | Scenario::NumQueuesMax => Some(
                "QEMU overwrites config num_queues with its own num-queues property \
                 (vhost_user_blk_update_config)",
            ),
            _ => None,
        }
    }

    /// Whether the backend serves again after the connection closed.
    pub fn reconnects(self) -> bool {
        self == Scenario::DropSocketReconnect
    }

    /// The name on the command line.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    pub fn config_lie(self) -> Option<ConfigLie> {
        match self.kind() {
            Kind::Config(lie) => Some(lie),
            _ => None,
        }
    }

    pub fn protocol_lie(self) -> Option<ProtocolLie> {
        match self.kind() {
            Kind::Protocol(lie) => Some(lie),
            _ => None,
        }
    }
}

/// A tiny seeded generator (SplitMix64): replays exactly, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next_u64().is_multiple_of(n.max(1))
    }
}

/// Every request-level lie the fuzzer may pick; hang-ups are left out so
/// a fuzz run keeps going.
const FUZZ_LIES: &[Lie] = &[
    Lie::UsedIdOutOfRange,
    Lie::UsedIdFree,
    Lie::CompletedTwice,
    Lie::UsedLenTooLarge,
    Lie::UsedIdxJump,
    Lie::UsedIdxBackwards,
    Lie::Stall,
    Lie::Late,
    Lie::InterruptStorm,
    Lie::Status(crate::request::S_IOERR),
    Lie::Status(crate::request::S_UNSUPP),
    Lie::Status(GARBAGE_STATUS),
    Lie::StatusLenZero,
];

/// When request lies begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At this request number.
    At(u64),
    /// At the first request after [`arm`] was called (the runner's
    /// SIGUSR1), so a lie meets the test the runner chose, however many
    /// requests came before.
    WhenArmed,
}

/// Set by [`arm`]; read by every [`Planner`] with [`Start::WhenArmed`].
static ARMED: AtomicBool = AtomicBool::new(false);

/// Lets lies begin (async-signal-safe: one atomic store).
pub fn arm() {
    ARMED.store(true, Ordering::Release);
}

/// Decides, request by request, which lie to tell.
pub struct Planner {
    kind: Kind,
    start: Start,
    rng: Rng,
    requests: u64,
}

impl Planner {
    pub fn new(scenario: Scenario, start: Start, seed: u64) -> Self {
        Self { kind: scenario.kind(), start, rng: Rng::new(seed), requests: 0 }
    }

    /// The first request number that may be lied about, once known.
    fn first_lie_at(&mut self) -> Option<u64> {
        if self.start == Start::WhenArmed && ARMED.load(Ordering::Acquire) {
            crate::device::log(format_args!("armed at request {}", self.requests));
            self.start = Start::At(self.requests);
        }
        match self.start {
            Start::At(at) => Some(at),
            Start::WhenArmed => None,
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Whether the requests before the first lie have all been served.
    pub fn past_honest_start(&mut self) -> bool {
        self.first_lie_at().is_some_and(|at| self.requests >= at)
    }

    /// The lie for the next request, if any.
    pub fn next(&mut self) -> Option<Lie> {
        let first = self.first_lie_at();
        let number = self.requests;
        self.requests += 1;
        let first = first.filter(|&at| number >= at)?;
        match self.kind {
            Kind::Once(lie) => (number == first).then_some(lie),
            Kind::RandomStatus(status) => self.rng.one_in(4).then_some(match status {
                StatusLie::Byte(byte) => Lie::Status(byte),
                StatusLie::LenZero => Lie::StatusLenZero,
            }),
            Kind::Fuzz => {
                if !self.rng.one_in(4) {
                    return None;
                }
                let pick = self.rng.next_u64() % FUZZ_LIES.len() as u64;
                Some(FUZZ_LIES[pick as usize])
            }
            Kind::Honest | Kind::Config(_) | Kind::Protocol(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn one_shot_lies_hit_exactly_request_at() {
        let mut planner = Planner::new(Scenario::UsedIdxJump, Start::At(5), 1);
        let lies: Vec<_> = (0..20).map(|_| planner.next()).collect();
        assert_eq!(lies.iter().filter(|l| l.is_some()).count(), 1);
        assert_eq!(lies[5], Some(Lie::UsedIdxJump));
    }

    #[test]
    fn random_lies_start_at_at_and_replay_from_the_seed() {
        let run = |seed| {
            let mut planner = Planner::new(Scenario::Fuzz, Start::At(10), seed);
            (0..400).map(|_| planner.next()).collect::<Vec<_>>()
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
        assert!(first[..10].iter().all(Option::is_none));
        let told = first.iter().filter(|l| l.is_some()).count();
        assert!((50..150).contains(&told), "{told} lies in 390 requests");
    }

    #[test]
    fn armed_planners_lie_from_the_first_request_after_arming() {
        let mut planner = Planner::new(Scenario::Stall, Start::WhenArmed, 1);
        assert!((0..50).all(|_| planner.next().is_none()));
        assert!(!planner.past_honest_start());
        arm();
        assert_eq!(planner.next(), Some(Lie::Stall));
        assert!(planner.past_honest_start());
        assert!((0..50).all(|_| planner.next().is_none()));
    }

    #[test]
    fn status_scenarios_tell_only_their_status() {
        let mut planner = Planner::new(Scenario::StatusGarbage, Start::At(0), 3);
        let lies: Vec<_> = (0..100).filter_map(|_| planner.next()).collect();
        assert!(!lies.is_empty());
        assert!(lies.iter().all(|&l| l == Lie::Status(GARBAGE_STATUS)));
    }

    #[test]
    fn every_scenario_has_a_name_and_a_description() {
        for scenario in Scenario::value_variants() {
            assert!(!scenario.name().is_empty());
            assert!(!scenario.description().is_empty());
            assert_eq!(Scenario::from_str(&scenario.name(), false), Ok(*scenario));
        }
        assert_eq!(Scenario::UsedIdOutOfRange.name(), "used-id-out-of-range");
        assert_eq!(Scenario::BlkSize3.name(), "blk-size-3");
        assert!(Scenario::Honest.config_lie().is_none());
    }
}
