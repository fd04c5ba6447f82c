//! keyward's metrics, kept in atomics and rendered in Prometheus' text exposition format.
//!
//! Metrics are collected only when something can read them (the admin listener is on:
//! [`enable`]); otherwise [`get`] answers `None` and the request path skips them, clock reads
//! included. When they are on, the per-request counters live in one shard per worker thread
//! (registered once per thread, under a lock then and only then): each is written by its thread
//! alone, with a plain load and store rather than a locked read-modify-write (three `lock xadd`
//! per request are a noticeable share of a pipelined GET's cost), into arrays indexed by the
//! command table's ids ([`crate::commands::CommandSpec::id`]): no lock, no allocation, no map on
//! the request path. A scrape adds the shards up. Rare events (clients, upstream errors,
//! redirections) are plain shared atomics. Labels come from bounded sets only (the table's
//! command names, rule names, fixed reasons and kinds): a key never becomes a label.
//!
//! Durations are measured per read and per write, not per request: every request completed by
//! one read of the client carries that read's time, and every reply handed to the client in one
//! pass carries that pass's time (see [`Stamp`]), so a pipelined batch costs two clock reads.

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::commands;
use crate::guard::Rule;

/// Upper bounds of the duration histogram's buckets, in seconds (`+Inf` is implied).
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`BUCKETS`] in nanoseconds: the request path compares integers, not floats.
const BUCKET_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// How a request ended, as `keyward_commands_total{result}` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that is not an error.
    Ok,
    /// Redis or keyward answered with an error.
    Error,
    /// The guard or the deny list refused it.
    Refused,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Error, Outcome::Refused];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
        }
    }

    /// The outcome of a reply frame: an error (`-...`, RESP3 `!...`) or not.
    pub fn of_reply(frame: &[u8]) -> Outcome {
        match frame.first() {
            Some(b'-') | Some(b'!') => Outcome::Error,
            _ => Outcome::Ok,
        }
    }
}

/// Why a client connection was turned away (`keyward_clients_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MaxClients,
    Descriptors,
    TlsHandshake,
}

impl Rejection {
    const ALL: [Rejection; 3] = [
        Rejection::MaxClients,
        Rejection::Descriptors,
        Rejection::TlsHandshake,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::MaxClients => "max_clients",
            Rejection::Descriptors => "descriptors",
            Rejection::TlsHandshake => "tls_handshake",
        }
    }
}

/// What went wrong with a connection to Redis (`keyward_upstream_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// TCP connect, or Redis refusing keyward's credentials.
    Connect,
    /// No connection, handshake or reply within the configured time.
    Timeout,
    /// An established connection broke.
    Lost,
    /// The TLS handshake failed.
    Tls,
}

impl UpstreamError {
    const ALL: [UpstreamError; 4] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Lost,
        UpstreamError::Tls,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Lost => "lost",
            UpstreamError::Tls => "tls",
        }
    }
}

/// A cluster redirection keyward followed (`keyward_cluster_redirects_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    Moved,
    Ask,
    TryAgain,
}

impl Redirect {
    const ALL: [Redirect; 3] = [Redirect::Moved, Redirect::Ask, Redirect::TryAgain];

    fn label(self) -> &'static str {
        match self {
            Redirect::Moved => "moved",
            Redirect::Ask => "ask",
            Redirect::TryAgain => "tryagain",
        }
    }
}

/// The guard's rules as metric labels, in a fixed order.
const RULES: [Rule; 7] = Rule::ORDER;

fn rule_index(rule: Rule) -> usize {
    RULES.iter().position(|r| *r == rule).unwrap_or(0)
}

/// The guard's modes as metric labels: refusals in enforce mode, and those dry-run lets through.
const MODES: [&str; 2] = ["enforce", "dry-run"];

/// What a request's reply is measured against: its command and when its last byte was read.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub command: u16,
    /// When the read that completed the request returned; None while metrics are off.
    pub read_at: Option<Instant>,
}

impl Stamp {
    /// A stamp for `command` read at `read_at`.
    pub fn new(command: u16, read_at: Option<Instant>) -> Self {
        Stamp { command, read_at }
    }
}

/// The time of one read of a client, when metrics are on: one clock read per read, shared by
/// every request that read completed.
pub fn read_time() -> Option<Instant> {
    get().map(|_| Instant::now())
}

/// Held by every open connection to Redis while metrics are on: `keyward_upstream_connections`
/// counts the guards alive.
#[derive(Debug)]
pub struct UpstreamGauge(());

impl UpstreamGauge {
    /// A guard for a newly opened connection; None while metrics are off.
    pub fn open() -> Option<UpstreamGauge> {
        let m = get()?;
        m.upstream_connections.fetch_add(1, Ordering::Relaxed);
        Some(UpstreamGauge(()))
    }
}

impl Drop for UpstreamGauge {
    fn drop(&mut self) {
        if let Some(m) = get() {
            m.upstream_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts a broken upstream connection in `keyward_upstream_errors_total`: `timeout` when
/// keyward gave up waiting for a reply (`reply_timeout_ms`), else `lost`.
pub fn upstream_lost(reason: &str) {
    if let Some(m) = get() {
        m.upstream_error(if reason.starts_with("no reply within") {
            UpstreamError::Timeout
        } else {
            UpstreamError::Lost
        });
    }
}

/// Per-command counters and duration histogram, in one thread's shard (see the module's doc).
#[derive(Default)]
struct CommandStats {
    outcomes: [AtomicU64; 3],
    /// Non-cumulative bucket counts; the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    keys_requested: AtomicU64,
    keys_removed: AtomicU64,
    /// `[mode][rule]`.
    refusals: [[AtomicU64; RULES.len()]; MODES.len()],
}

/// The sum over every shard of one command's stats, for a scrape.
#[derive(Default)]
struct CommandTotals {
    outcomes: [u64; 3],
    buckets: [u64; BUCKETS.len() + 1],
    sum_nanos: u64,
    keys_requested: u64,
    keys_removed: u64,
    refusals: [[u64; RULES.len()]; MODES.len()],
}

impl CommandTotals {
    fn add(&mut self, stats: &CommandStats) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (t, c) in self.outcomes.iter_mut().zip(&stats.outcomes) {
            *t += load(c);
        }
        for (t, c) in self.buckets.iter_mut().zip(&stats.buckets) {
            *t += load(c);
        }
        self.sum_nanos += load(&stats.sum_nanos);
        self.keys_requested += load(&stats.keys_requested);
        self.keys_removed += load(&stats.keys_removed);
        for (tm, cm) in self.refusals.iter_mut().zip(&stats.refusals) {
            for (t, c) in tm.iter_mut().zip(cm) {
                *t += load(c);
            }
        }
    }

    fn observed(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One worker thread's per-request counters.
struct Shard {
    commands: Box<[CommandStats]>,
}

impl Shard {
    fn command(&self, id: u16) -> &CommandStats {
        self.commands
            .get(usize::from(id))
            .unwrap_or(&self.commands[usize::from(commands::OTHER)])
    }
}

/// Adds `n` to a counter only this thread writes: a load and a store, no locked instruction.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

thread_local! {
    static SHARD: OnceCell<Arc<Shard>> = const { OnceCell::new() };
}

/// Every metric keyward exports.
pub struct Metrics {
    /// Every thread's shard; locked when a thread first counts something and when scraped.
    shards: Mutex<Vec<Arc<Shard>>>,
    clients_connected: AtomicI64,
    clients_accepted: AtomicU64,
    clients_rejected: [AtomicU64; 3],
    upstream_errors: [AtomicU64; 4],
    /// Open connections to Redis (see [`UpstreamGauge`]).
    upstream_connections: AtomicI64,
    redirects: [AtomicU64; 3],
    slot_map_refreshes: AtomicU64,
    /// Slots the current slot map covers; -1 when keyward is not in cluster mode.
    slots_covered: AtomicI64,
    config_reloads: [AtomicU64; 2],
    last_reload_success: AtomicU64,
    /// Hook runs by (hook, result). A hook run is a round trip to Redis, not a request of the
    /// hot path, and hook names change with reloads: a locked map is cheap enough and bounded
    /// by the configuration.
    hook_runs: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Turns metrics on (idempotent) and returns them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        shards: Mutex::new(Vec::new()),
        clients_connected: AtomicI64::new(0),
        clients_accepted: AtomicU64::new(0),
        clients_rejected: Default::default(),
        upstream_errors: Default::default(),
        upstream_connections: AtomicI64::new(0),
        redirects: Default::default(),
        slot_map_refreshes: AtomicU64::new(0),
        slots_covered: AtomicI64::new(-1),
        config_reloads: Default::default(),
        last_reload_success: AtomicU64::new(0),
        hook_runs: Mutex::new(std::collections::BTreeMap::new()),
    })
}

/// The metrics, when they are on.
#[inline]
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Runs `f` on this thread's shard, registering one at the thread's first count.
    fn with_shard(&self, f: impl FnOnce(&Shard)) {
        SHARD.with(|cell| {
            let shard = cell.get_or_init(|| {
                let shard = Arc::new(Shard {
                    commands: commands::names()
                        .iter()
                        .map(|_| CommandStats::default())
                        .collect(),
                });
                self.shards
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(shard.clone());
                shard
            });
            f(shard)
        });
    }

    /// Every command's stats summed over the shards.
    fn totals(&self) -> Vec<CommandTotals> {
        let mut totals: Vec<CommandTotals> = commands::names()
            .iter()
            .map(|_| CommandTotals::default())
            .collect();
        for shard in self.shards.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (t, stats) in totals.iter_mut().zip(shard.commands.iter()) {
                t.add(stats);
            }
        }
        totals
    }

    /// A request answered: counted by outcome, and its duration observed when it has one
    /// (`now` is the time its reply goes to the client).
    pub fn answered(&self, stamp: Stamp, outcome: Outcome, now: Option<Instant>) {
        self.with_shard(|shard| {
            let stats = shard.command(stamp.command);
            bump(&stats.outcomes[outcome as usize], 1);
            if let (Some(read_at), Some(now)) = (stamp.read_at, now) {
                let nanos = now.saturating_duration_since(read_at).as_nanos() as u64;
                let bucket = BUCKET_NANOS.partition_point(|&le| le < nanos);
                bump(&stats.buckets[bucket], 1);
                bump(&stats.sum_nanos, nanos);
            }
        });
    }

    /// The guard refused a request (or, in dry-run, would have).
    pub fn refused(&self, command: u16, rule: Rule, dry_run: bool) {
        self.with_shard(|shard| {
            let stats = shard.command(command);
            bump(&stats.refusals[usize::from(dry_run)][rule_index(rule)], 1);
        });
    }

    /// An accepted guarded delete names `n` keys.
    pub fn keys_requested(&self, command: u16, n: usize) {
        self.with_shard(|shard| bump(&shard.command(command).keys_requested, n as u64));
    }

    /// Redis reported `n` keys removed by a guarded delete.
    pub fn keys_removed(&self, command: u16, n: i64) {
        self.with_shard(|shard| bump(&shard.command(command).keys_removed, n.max(0) as u64));
    }

    pub fn client_connected(&self) {
        add(&self.clients_accepted, 1);
        self.clients_connected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn client_rejected(&self, reason: Rejection) {
        add(&self.clients_rejected[reason as usize], 1);
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        add(&self.upstream_errors[kind as usize], 1);
    }

    pub fn redirect(&self, kind: Redirect) {
        add(&self.redirects[kind as usize], 1);
    }

    /// The cluster's slot map was read again from the nodes.
    pub fn slot_map_refreshed(&self) {
        add(&self.slot_map_refreshes, 1);
    }

    /// keyward's slot map now gives an owner to `covered` of the 16384 slots.
    pub fn set_slots_covered(&self, covered: usize) {
        self.slots_covered.store(covered as i64, Ordering::Relaxed);
    }

    /// A configuration reload ended.
    pub fn reloaded(&self, ok: bool) {
        add(&self.config_reloads[usize::from(!ok)], 1);
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.last_reload_success.store(now, Ordering::Relaxed);
        }
    }

    /// The configuration was loaded at start-up (a reload's timestamp starts from here).
    pub fn config_loaded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload_success.store(now, Ordering::Relaxed);
    }

    /// Slots the current map covers, when keyward runs in cluster mode.
    pub fn slots_covered(&self) -> Option<usize> {
        let n = self.slots_covered.load(Ordering::Relaxed);
        (n >= 0).then_some(n as usize)
    }

    /// A hook ran with `result` (`ok`, `error` or `refused`).
    pub fn hook_ran(&self, hook: &str, result: &'static str) {
        let mut runs = self.hook_runs.lock().unwrap_or_else(|e| e.into_inner());
        *runs.entry((hook.to_string(), result)).or_default() += 1;
    }

    /// Everything in Prometheus' text exposition format (version 0.0.4). Series of commands
    /// never seen are left out; every metric family is announced with HELP and TYPE.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let names = commands::names();
        let totals = self.totals();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);

        family(
            &mut out,
            "keyward_build_info",
            "gauge",
            "keyward's version.",
        );
        let _ = writeln!(
            out,
            "keyward_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        family(
            &mut out,
            "keyward_clients_connected",
            "gauge",
            "Client connections being served.",
        );
        let _ = writeln!(
            out,
            "keyward_clients_connected {}",
            self.clients_connected.load(Ordering::Relaxed).max(0)
        );
        family(
            &mut out,
            "keyward_clients_accepted_total",
            "counter",
            "Client connections accepted for service.",
        );
        let _ = writeln!(
            out,
            "keyward_clients_accepted_total {}",
            load(&self.clients_accepted)
        );
        family(
            &mut out,
            "keyward_clients_rejected_total",
            "counter",
            "Client connections turned away, by reason.",
        );
        for reason in Rejection::ALL {
            let _ = writeln!(
                out,
                "keyward_clients_rejected_total{{reason=\"{}\"}} {}",
                reason.label(),
                load(&self.clients_rejected[reason as usize])
            );
        }

        family(
            &mut out,
            "keyward_commands_total",
            "counter",
            "Requests answered, by command and result (ok, error, refused).",
        );
        for (id, stats) in totals.iter().enumerate() {
            for outcome in Outcome::ALL {
                let n = stats.outcomes[outcome as usize];
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "keyward_commands_total{{command=\"{}\",result=\"{}\"}} {n}",
                        names[id],
                        outcome.label()
                    );
                }
            }
        }

        family(
            &mut out,
            "keyward_command_duration_seconds",
            "histogram",
            "Time from a request's last byte read to its reply being written, by command.",
        );
        for (id, stats) in totals.iter().enumerate() {
            let count = stats.observed();
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += stats.buckets[i];
                let _ = writeln!(
                    out,
                    "keyward_command_duration_seconds_bucket{{command=\"{}\",le=\"{le}\"}} \
                     {cumulative}",
                    names[id]
                );
            }
            let _ = writeln!(
                out,
                "keyward_command_duration_seconds_bucket{{command=\"{}\",le=\"+Inf\"}} {count}",
                names[id]
            );
            let _ = writeln!(
                out,
                "keyward_command_duration_seconds_sum{{command=\"{}\"}} {}",
                names[id],
                stats.sum_nanos as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "keyward_command_duration_seconds_count{{command=\"{}\"}} {count}",
                names[id]
            );
        }

        family(
            &mut out,
            "keyward_guard_refusals_total",
            "counter",
            "Requests the guard refused (mode=\"dry-run\": would have refused), by rule and command.",
        );
        for (id, stats) in totals.iter().enumerate() {
            for (m, mode) in MODES.iter().enumerate() {
                for (r, rule) in RULES.iter().enumerate() {
                    let n = stats.refusals[m][r];
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "keyward_guard_refusals_total{{rule=\"{}\",command=\"{}\",mode=\"{mode}\"}} {n}",
                            rule.name(),
                            names[id]
                        );
                    }
                }
            }
        }

        family(
            &mut out,
            "keyward_keys_requested_total",
            "counter",
            "Keys named in accepted guarded deletes, by command.",
        );
        family(
            &mut out,
            "keyward_keys_removed_total",
            "counter",
            "Keys Redis reported removed by guarded deletes, by command.",
        );
        for (id, stats) in totals.iter().enumerate() {
            let requested = stats.keys_requested;
            if requested > 0 {
                let _ = writeln!(
                    out,
                    "keyward_keys_requested_total{{command=\"{}\"}} {requested}",
                    names[id]
                );
                let _ = writeln!(
                    out,
                    "keyward_keys_removed_total{{command=\"{}\"}} {}",
                    names[id], stats.keys_removed
                );
            }
        }

        family(
            &mut out,
            "keyward_upstream_errors_total",
            "counter",
            "Failed connections to Redis and lost ones, by kind.",
        );
        for kind in UpstreamError::ALL {
            let _ = writeln!(
                out,
                "keyward_upstream_errors_total{{kind=\"{}\"}} {}",
                kind.label(),
                load(&self.upstream_errors[kind as usize])
            );
        }

        family(
            &mut out,
            "keyward_upstream_connections",
            "gauge",
            "Connections to Redis open now (per client, shared, kept ready, probes).",
        );
        let _ = writeln!(
            out,
            "keyward_upstream_connections {}",
            self.upstream_connections.load(Ordering::Relaxed).max(0)
        );

        if let Some(covered) = self.slots_covered() {
            family(
                &mut out,
                "keyward_cluster_redirects_total",
                "counter",
                "Cluster redirections keyward followed, by kind.",
            );
            for kind in Redirect::ALL {
                let _ = writeln!(
                    out,
                    "keyward_cluster_redirects_total{{kind=\"{}\"}} {}",
                    kind.label(),
                    load(&self.redirects[kind as usize])
                );
            }
            family(
                &mut out,
                "keyward_cluster_slot_map_refreshes_total",
                "counter",
                "Times the cluster's slot map was read.",
            );
            let _ = writeln!(
                out,
                "keyward_cluster_slot_map_refreshes_total {}",
                load(&self.slot_map_refreshes)
            );
            family(
                &mut out,
                "keyward_cluster_slots_covered",
                "gauge",
                "Slots (of 16384) the current slot map gives an owner.",
            );
            let _ = writeln!(out, "keyward_cluster_slots_covered {covered}");
        }

        family(
            &mut out,
            "keyward_config_reloads_total",
            "counter",
            "Configuration reloads, by result.",
        );
        for (i, result) in ["ok", "error"].iter().enumerate() {
            let _ = writeln!(
                out,
                "keyward_config_reloads_total{{result=\"{result}\"}} {}",
                load(&self.config_reloads[i])
            );
        }
        family(
            &mut out,
            "keyward_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the configuration was last loaded or reloaded successfully (Unix time).",
        );
        let _ = writeln!(
            out,
            "keyward_config_last_reload_success_timestamp_seconds {}",
            load(&self.last_reload_success)
        );
        family(
            &mut out,
            "keyward_hook_runs_total",
            "counter",
            "Runs of invalidation hooks (a delayed second removal counts as a run), by hook and \
             result: ok, error (Redis failed), refused (the guard or a missing parameter).",
        );
        let runs = self.hook_runs.lock().unwrap_or_else(|e| e.into_inner());
        for ((hook, result), n) in runs.iter() {
            let _ = writeln!(
                out,
                "keyward_hook_runs_total{{hook=\"{}\",result=\"{result}\"}} {n}",
                hook.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        drop(runs);
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_agree() {
        for (seconds, nanos) in BUCKETS.iter().zip(BUCKET_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
        // A duration equal to a bound falls in that bound's bucket (`le` is inclusive).
        assert_eq!(BUCKET_NANOS.partition_point(|&le| le < 100_000), 0);
        assert_eq!(BUCKET_NANOS.partition_point(|&le| le < 100_001), 1);
        assert_eq!(BUCKET_NANOS.partition_point(|&le| le < u64::MAX), 16);
    }

    #[test]
    fn durations_land_in_their_bucket_and_render_cumulatively() {
        let m = enable();
        let get = commands::lookup(b"get").unwrap().id;
        let start = Instant::now();
        let stamp = Stamp::new(get, Some(start));
        m.answered(
            stamp,
            Outcome::Ok,
            Some(start + std::time::Duration::from_micros(300)),
        );
        m.answered(
            stamp,
            Outcome::Error,
            Some(start + std::time::Duration::from_secs(20)),
        );
        let text = m.render();
        assert!(text.contains("keyward_commands_total{command=\"get\",result=\"ok\"}"));
        assert!(
            text.contains(
                "keyward_command_duration_seconds_bucket{command=\"get\",le=\"0.00025\"} 0"
            )
        );
        assert!(
            text.contains(
                "keyward_command_duration_seconds_bucket{command=\"get\",le=\"0.0005\"} 1"
            )
        );
        assert!(
            text.contains("keyward_command_duration_seconds_bucket{command=\"get\",le=\"10\"} 1")
        );
        assert!(
            text.contains("keyward_command_duration_seconds_bucket{command=\"get\",le=\"+Inf\"} 2")
        );
        assert_eq!(Outcome::of_reply(b"-ERR x\r\n"), Outcome::Error);
        assert_eq!(Outcome::of_reply(b"!5\r\nERR x\r\n"), Outcome::Error);
        assert_eq!(Outcome::of_reply(b":1\r\n"), Outcome::Ok);
    }
}
