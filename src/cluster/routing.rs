//! Where a command goes in a cluster, from what the cluster says about it (its key
//! specifications and routing tips, [`super::command_info`]) over keyward's built-in table.
//!
//! Precedence, highest first:
//! 1. keyward's own handling, decided before routing is asked: the guard, `REMOVEKEYS`, the
//!    split-and-sum deletes, `MGET`/`MSET`, `SCAN`'s cursor, `KEYS`/`DBSIZE`/`FLUSHALL`,
//!    transactions, pub/sub, connection commands, `PING` (one node: it measures the path
//!    through keyward, not every node), `WAIT` and other blocking commands (a private
//!    connection);
//! 2. keyward's choices for the tips that say `special` and the few commands whose tips say too
//!    little ([`special`]);
//! 3. the tips: `all_nodes` / `all_shards` fan out, replies combined as `response_policy` says;
//! 4. the key specifications: the owner of the keys' slot, CROSSSLOT when they span slots;
//!    a specification the server itself calls `unknown` makes keyward ask `COMMAND GETKEYS`;
//! 5. the built-in table's key positions, when the cluster has not been asked yet (or is older
//!    than Redis 7, whose `COMMAND` has no specifications).

use super::command_info::{CommandInfo, Learned, RequestPolicy, ResponsePolicy};
use super::topology::slot_of;
use crate::commands::{CommandSpec, Role};
use crate::protocol::args::Args;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The owner of this slot.
    Slot(u16),
    /// Any primary: the command has no keys.
    Any,
    /// The keys hash to more than one slot.
    CrossSlot,
    /// Several nodes, their replies combined into one.
    Fan(Fan),
    /// The cluster's specifications cannot locate the keys: ask a node (`COMMAND GETKEYS`).
    AskKeys,
}

/// A command sent to several nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fan {
    pub nodes: Nodes,
    pub merge: Merge,
    /// Sent over a connection of its own to each node rather than the shared one: `SCRIPT
    /// KILL` must reach a node whose shared connection waits behind the very script it kills.
    pub private: bool,
}

/// Which nodes a fanned-out command reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    Primaries,
    /// Primaries and replicas.
    All,
}

/// How the replies of a fanned-out command make the client's one reply
/// (see [`super::merge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The first reply that is not an error, else the first error (`SCRIPT KILL`).
    OneSucceeded,
    /// The first error if any node failed, else the first node's reply (`CONFIG SET`).
    AllSucceeded,
    /// Integers (or arrays of integers, element by element) combined.
    And,
    Or,
    Min,
    Max,
    Sum,
    /// Arrays concatenated (no response tip: the default for keyless commands).
    Concat,
    /// `INFO`: counters summed, per-key sections merged line by line.
    Info,
    /// `SLOWLOG GET`: the newest entries of all nodes, by time.
    SlowlogGet,
    /// `SLOWLOG LEN`: the sum, capped at what one log can hold.
    SlowlogLen,
    /// `LATENCY LATEST`: per event, the most recent spike and the highest maximum.
    LatencyLatest,
    /// `LATENCY HISTORY`: every node's samples, by time.
    LatencyHistory,
    /// `LATENCY HISTOGRAM`: per command, calls and bucket counts summed.
    LatencyHistogram,
    /// Free text (`LATENCY DOCTOR`, `LATENCY GRAPH`): each node's text under its address.
    PerNodeText,
    /// `RANDOMKEY`: a key from a node that has one.
    RandomKey,
    /// `FUNCTION STATS`: the running function of whichever node runs one.
    FunctionStats,
}

/// The cluster's command table, learned from a node, with keyward's choices.
#[derive(Debug, Default)]
pub struct Routing {
    learned: CommandInfo,
}

impl Routing {
    pub fn new(learned: CommandInfo) -> Self {
        Routing { learned }
    }

    /// Number of commands learned from the cluster (0 before it was asked).
    pub fn learned_commands(&self) -> usize {
        self.learned.len()
    }

    /// Where `args` goes, `spec` being the built-in table's row for it.
    pub fn route(&self, spec: Option<&CommandSpec>, args: Args<'_>) -> Route {
        let learned = self.learned.of_request(args);
        if spec.is_none_or(|s| matches!(s.role, Role::Ordinary | Role::Client) && !s.blocking)
            && let Some(fan) = fan_of(args, learned)
        {
            return Route::Fan(fan);
        }
        match learned {
            Some(l) if !l.key_specs.is_empty() || spec.is_none() => {
                let mut slots = Slots::default();
                match l.for_each_key(args, |i| slots.add(slot_of(&args[i]))) {
                    // Some keys the specs cannot locate, and none they can: ask a node. When
                    // some were found (SORT's key, not its BY/GET patterns), they route it;
                    // a key elsewhere gets the node's CROSSSLOT.
                    Err(_) if slots.slot.is_none() => Route::AskKeys,
                    _ => slots.route(),
                }
            }
            _ => builtin_route(spec, args),
        }
    }
}

impl Routing {
    /// Whether keyward sends every call of the command Redis's statistics name `name`
    /// (`set`, `config|resetstat`) to every primary: its calls are then counted once per
    /// primary, and a merged statistic counts them once, as a single Redis would.
    pub fn reaches_every_primary(&self, name: &str) -> bool {
        let words: Vec<&str> = name.split('|').collect();
        let spec = crate::commands::lookup(words[0].as_bytes());
        match spec.map(|s| s.fanout) {
            Some(crate::commands::Fanout::AllPrimaries(_)) => true,
            None | Some(crate::commands::Fanout::Keyless | crate::commands::Fanout::SingleSlot) => {
                let args = crate::protocol::args::OwnedArgs::from_parts(&words);
                matches!(self.route(spec, args.args()), Route::Fan(_))
            }
            Some(_) => false,
        }
    }
}

/// The built-in table's key positions: the first slot, or CROSSSLOT.
pub fn builtin_route(spec: Option<&CommandSpec>, args: Args<'_>) -> Route {
    let Some(spec) = spec else {
        // Not in either table: any node; if it has keys elsewhere, MOVED is followed.
        return Route::Any;
    };
    let mut slots = Slots::default();
    for i in spec.keys.positions(args.len()) {
        slots.add(slot_of(&args[i]));
    }
    slots.route()
}

/// The slot the keys seen so far share.
#[derive(Default)]
struct Slots {
    slot: Option<u16>,
    cross: bool,
}

impl Slots {
    fn add(&mut self, slot: u16) {
        match self.slot {
            None => self.slot = Some(slot),
            Some(prev) if prev != slot => self.cross = true,
            _ => {}
        }
    }

    fn route(&self) -> Route {
        match (self.cross, self.slot) {
            (true, _) => Route::CrossSlot,
            (false, Some(slot)) => Route::Slot(slot),
            (false, None) => Route::Any,
        }
    }
}

/// The fan-out of a request, from keyward's choices or the cluster's tips; `None` for a
/// request that goes to one node.
fn fan_of(args: Args<'_>, learned: Option<&Learned>) -> Option<Fan> {
    if let Some(fan) = special(args) {
        return fan;
    }
    let learned = learned?;
    let nodes = match learned.request? {
        RequestPolicy::AllNodes => Nodes::All,
        RequestPolicy::AllShards => Nodes::Primaries,
        // Split by slot: keyward's own classes (DEL, MGET, MSET...) handle the commands Redis
        // marks so; any other is routed by its keys (CROSSSLOT across slots).
        RequestPolicy::MultiShard | RequestPolicy::Special => return None,
    };
    let merge = match learned.response {
        Some(ResponsePolicy::OneSucceeded) => Merge::OneSucceeded,
        Some(ResponsePolicy::AllSucceeded) => Merge::AllSucceeded,
        Some(ResponsePolicy::AggLogicalAnd) => Merge::And,
        Some(ResponsePolicy::AggLogicalOr) => Merge::Or,
        Some(ResponsePolicy::AggMin) => Merge::Min,
        Some(ResponsePolicy::AggMax) => Merge::Max,
        Some(ResponsePolicy::AggSum) => Merge::Sum,
        None => Merge::Concat,
        // A `special` keyward has no rule for: one node answers (see `special`).
        Some(ResponsePolicy::Special) => return None,
    };
    Some(Fan {
        nodes,
        merge,
        private: learned.allow_busy,
    })
}

/// keyward's answers where the tips say `special` or say too little: `Some(None)` sends the
/// request to one node, `Some(Some(fan))` fans it out, `None` leaves it to the tips.
fn special(args: Args<'_>) -> Option<Option<Fan>> {
    let name = args.first()?;
    let sub = || args.get(1).unwrap_or_default();
    let fan = |nodes, merge| {
        Some(Some(Fan {
            nodes,
            merge,
            private: false,
        }))
    };
    // Over connections of their own to each node, not behind what waits on the shared one.
    let fan_privately = |nodes, merge| {
        Some(Some(Fan {
            nodes,
            merge,
            private: true,
        }))
    };
    if name.eq_ignore_ascii_case(b"info") {
        return fan(Nodes::Primaries, Merge::Info);
    }
    if name.eq_ignore_ascii_case(b"client") && sub().eq_ignore_ascii_case(b"pause") {
        // No tip in 7.0; pausing "the server" means every primary keyward sends to.
        return fan(Nodes::Primaries, Merge::AllSucceeded);
    }
    if name.eq_ignore_ascii_case(b"client") && sub().eq_ignore_ascii_case(b"unpause") {
        // Over connections of their own: a paused write holds up the shared connection of its
        // node, so an UNPAUSE queued behind it would never be read.
        return fan_privately(Nodes::Primaries, Merge::AllSucceeded);
    }
    if name.eq_ignore_ascii_case(b"randomkey") {
        return fan(Nodes::Primaries, Merge::RandomKey);
    }
    if name.eq_ignore_ascii_case(b"config") && sub().eq_ignore_ascii_case(b"resetstat") {
        // No tip in Redis 7.0, yet INFO's counters are summed over every node: all are reset.
        return fan(Nodes::All, Merge::AllSucceeded);
    }
    if name.eq_ignore_ascii_case(b"slowlog") {
        // Primaries only, against the tip's `all_nodes`: a replica logs the writes it replays,
        // so the client's one slow command would be counted once per copy.
        let sub = sub();
        if sub.eq_ignore_ascii_case(b"get") {
            return fan(Nodes::Primaries, Merge::SlowlogGet);
        }
        if sub.eq_ignore_ascii_case(b"len") {
            return fan(Nodes::Primaries, Merge::SlowlogLen);
        }
        if sub.eq_ignore_ascii_case(b"reset") {
            return fan(Nodes::All, Merge::AllSucceeded);
        }
        return None;
    }
    if name.eq_ignore_ascii_case(b"latency") {
        let sub = sub();
        let merge = if sub.eq_ignore_ascii_case(b"latest") {
            Merge::LatencyLatest
        } else if sub.eq_ignore_ascii_case(b"history") {
            Merge::LatencyHistory
        } else if sub.eq_ignore_ascii_case(b"histogram") {
            Merge::LatencyHistogram
        } else if sub.eq_ignore_ascii_case(b"doctor") || sub.eq_ignore_ascii_case(b"graph") {
            Merge::PerNodeText
        } else if sub.eq_ignore_ascii_case(b"reset") {
            Merge::Sum
        } else {
            return None;
        };
        return fan(Nodes::Primaries, merge);
    }
    if name.eq_ignore_ascii_case(b"function") && sub().eq_ignore_ascii_case(b"stats") {
        return fan_privately(Nodes::Primaries, Merge::FunctionStats);
    }
    if name.eq_ignore_ascii_case(b"memory") {
        // MEMORY STATS, DOCTOR, MALLOC-STATS: one node's own figures, not a sum that no
        // process has; MEMORY USAGE is routed by its key.
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::lookup;
    use crate::protocol::args::OwnedArgs;

    fn route(routing: &Routing, words: &[&str]) -> Route {
        let owned = OwnedArgs::from_parts(words);
        routing.route(lookup(words[0].as_bytes()), owned.args())
    }

    #[test]
    fn commands_sent_to_every_primary_are_named_so() {
        let routing = Routing::default();
        assert!(routing.reaches_every_primary("config|resetstat"));
        assert!(routing.reaches_every_primary("dbsize"));
        assert!(routing.reaches_every_primary("info"));
        assert!(!routing.reaches_every_primary("set"));
        assert!(!routing.reaches_every_primary("ping"));
        assert!(!routing.reaches_every_primary("config|get"));
        assert!(!routing.reaches_every_primary("client|list"));
    }

    #[test]
    fn without_learned_commands_the_builtin_table_routes() {
        let routing = Routing::default();
        assert_eq!(route(&routing, &["GET", "k"]), Route::Slot(slot_of(b"k")));
        assert_eq!(
            route(&routing, &["RENAME", "{a}1", "{a}2"]),
            Route::Slot(slot_of(b"a"))
        );
        assert_eq!(route(&routing, &["RENAME", "a", "b"]), Route::CrossSlot);
        assert_eq!(route(&routing, &["MODULE.CMD", "a"]), Route::Any);
    }

    /// A `COMMAND` reply with the given entries: (name, flags, tips, subcommands).
    fn learned(entries: &[(&str, &[&str], &[&str])]) -> Routing {
        use redis_protocol::resp2::types::OwnedFrame as F;
        let bulk = |s: &str| F::BulkString(s.as_bytes().to_vec());
        let strings = |v: &[&str]| F::Array(v.iter().map(|s| bulk(s)).collect());
        let entry = |name: &str, flags: &[&str], tips: &[&str], subs: Vec<F>| {
            F::Array(vec![
                bulk(name),
                F::Integer(-2),
                strings(flags),
                F::Integer(0),
                F::Integer(0),
                F::Integer(0),
                F::Array(vec![]),
                strings(tips),
                F::Array(vec![]),
                F::Array(subs),
            ])
        };
        let mut top: Vec<F> = Vec::new();
        for (name, flags, tips) in entries {
            match name.split_once('|') {
                Some((parent, _)) => {
                    let sub = entry(name, flags, tips, vec![]);
                    top.push(entry(parent, &[], &[], vec![sub]));
                }
                None => top.push(entry(name, flags, tips, vec![])),
            }
        }
        Routing::new(CommandInfo::from_reply(&F::Array(top)).unwrap())
    }

    #[test]
    fn tips_fan_out_and_keyward_rules_win() {
        let routing = learned(&[
            (
                "config|set",
                &[],
                &["request_policy:all_nodes", "response_policy:all_succeeded"],
            ),
            (
                "ping",
                &[],
                &["request_policy:all_shards", "response_policy:all_succeeded"],
            ),
            (
                "wait",
                &[],
                &["request_policy:all_shards", "response_policy:agg_min"],
            ),
            (
                "dbsize",
                &[],
                &["request_policy:all_shards", "response_policy:agg_sum"],
            ),
            ("module.stats", &[], &["request_policy:all_shards"]),
        ]);
        let Route::Fan(set) = route(&routing, &["CONFIG", "set", "x", "1"]) else {
            panic!("CONFIG SET is not fanned out");
        };
        assert_eq!(
            (set.nodes, set.merge, set.private),
            (Nodes::All, Merge::AllSucceeded, false)
        );
        // PING (keyward answers it on one node) and WAIT (blocking) stay on one node.
        assert_eq!(route(&routing, &["PING"]), Route::Any);
        assert_eq!(route(&routing, &["WAIT", "1", "0"]), Route::Any);
        // A command keyward does not know, with a tip and no response policy: concatenated.
        let Route::Fan(stats) = route(&routing, &["MODULE.STATS"]) else {
            panic!("the module command is not fanned out");
        };
        assert_eq!(
            (stats.nodes, stats.merge),
            (Nodes::Primaries, Merge::Concat)
        );
    }

    #[test]
    fn allow_busy_commands_get_connections_of_their_own() {
        let routing = learned(&[(
            "script|kill",
            &["allow_busy"],
            &["request_policy:all_shards", "response_policy:one_succeeded"],
        )]);
        let Route::Fan(kill) = route(&routing, &["SCRIPT", "KILL"]) else {
            panic!("SCRIPT KILL is not fanned out");
        };
        assert_eq!(
            (kill.nodes, kill.merge, kill.private),
            (Nodes::Primaries, Merge::OneSucceeded, true)
        );
    }

    #[test]
    fn keyward_choices_hold_without_tips() {
        let routing = Routing::default();
        let Route::Fan(info) = route(&routing, &["INFO", "stats"]) else {
            panic!("INFO is not fanned out");
        };
        assert_eq!((info.nodes, info.merge), (Nodes::Primaries, Merge::Info));
        let Route::Fan(reset) = route(&routing, &["config", "RESETSTAT"]) else {
            panic!("CONFIG RESETSTAT is not fanned out");
        };
        assert_eq!(reset.nodes, Nodes::All);
        assert_eq!(route(&routing, &["MEMORY", "STATS"]), Route::Any);
    }
}
