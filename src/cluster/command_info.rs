//! What the cluster says about its own commands: the reply of `COMMAND` (Redis 7), read at
//! start-up and after a topology change.
//!
//! Redis publishes, for every command and subcommand, where its keys are (the *key
//! specifications*: where the search for keys begins, and how the keys are found from there)
//! and how a cluster client should route it (the `request_policy` and `response_policy`
//! *tips*). keyward's built-in table ([`crate::commands`]) knows the commands whose handling is
//! keyward's own; this table, learned from the servers, covers everything else: commands of
//! newer Redis versions, module commands, and the commands whose keys the built-in table does
//! not locate (`EVAL`'s `numkeys`, `XREAD`'s `STREAMS`...).
//!
//! The reply comes from a cluster node, never from a client, so `redis-protocol`'s decoder is
//! safe to use on it (see ARCHITECTURE.md on its recursion).

use std::collections::HashMap;

use redis_protocol::resp2::types::OwnedFrame;

use crate::fnv::BuildFnv;
use crate::protocol::args::Args;

/// Where the search for a command's keys begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument (0 is the command's name).
    Index(usize),
    /// After the first occurrence of `keyword`, searched from argument `start_from` forwards,
    /// or, when negative, from that far before the end backwards.
    Keyword { keyword: Vec<u8>, start_from: i64 },
    /// The server cannot say (`SORT`'s `BY`/`GET`/`STORE`, some module commands).
    Unknown,
}

/// How the keys are found from where the search began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the start to `last_key` (relative to the start; negative counts from the end,
    /// -1 being the last argument), every `step`. With a negative `last_key`, `limit` > 1 keeps
    /// only the first 1/`limit` of the remaining arguments (`XREAD ... STREAMS k1 k2 id1 id2`).
    Range {
        last_key: i64,
        step: usize,
        limit: usize,
    },
    /// The argument at `keynum_index` (relative to the start) says how many keys there are;
    /// they begin at `first_key` (relative to the start), every `step` (`EVAL script numkeys`).
    KeyNum {
        keynum_index: usize,
        first_key: usize,
        step: usize,
    },
    /// The server cannot say.
    Unknown,
}

/// One key specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
}

/// The `request_policy` tip: where a cluster client should send the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPolicy {
    /// Every node, replicas included (`CONFIG SET`, `SCRIPT LOAD`).
    AllNodes,
    /// Every primary (`SCRIPT KILL`, `FUNCTION LOAD`, `INFO`).
    AllShards,
    /// Split by slot (`DEL`, `MGET`, `MSET`).
    MultiShard,
    /// The client must know the command (`SCAN`).
    Special,
}

/// The `response_policy` tip: how the replies of a fanned-out command make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePolicy {
    /// The first reply that is not an error, else an error (`SCRIPT KILL`).
    OneSucceeded,
    /// An error if any node failed, else a node's reply (`CONFIG SET`).
    AllSucceeded,
    /// Integers, or arrays of integers element by element, combined with AND (`SCRIPT EXISTS`).
    AggLogicalAnd,
    AggLogicalOr,
    AggMin,
    AggMax,
    AggSum,
    /// The client must know the command (`INFO`, `LATENCY LATEST`).
    Special,
}

/// What the cluster says about one command or subcommand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    pub key_specs: Vec<KeySpec>,
    pub request: Option<RequestPolicy>,
    pub response: Option<ResponsePolicy>,
    /// The `allow_busy` flag: Redis runs it while a script is busy (`SCRIPT KILL`).
    pub allow_busy: bool,
    /// `name|sub` lowercase -> the subcommand.
    subcommands: HashMap<Vec<u8>, Learned, BuildFnv>,
}

/// Why the keys of a request could not be found from its specifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUnknown;

impl Learned {
    /// The subcommand named by the request's second argument, when the command has
    /// subcommands and the request names one the server knows.
    pub fn subcommand(&self, args: Args<'_>) -> Option<&Learned> {
        if self.subcommands.is_empty() {
            return None;
        }
        let sub = args.get(1)?;
        if sub.len() > 32 {
            return None;
        }
        let mut lower = [0u8; 32];
        for (d, s) in lower.iter_mut().zip(sub) {
            *d = s.to_ascii_lowercase();
        }
        self.subcommands.get(&lower[..sub.len()])
    }

    /// Calls `each` with the position of every key of the request, spec after spec. Positions
    /// are within `args` (0 is the command's name). `Err` (after every spec the server could
    /// describe was read) when a specification is of a kind the server itself could not
    /// describe (`SORT`'s `BY`/`GET` patterns, some module commands): there may be keys
    /// `each` did not see.
    pub fn for_each_key(
        &self,
        args: Args<'_>,
        mut each: impl FnMut(usize),
    ) -> Result<(), KeysUnknown> {
        let argc = args.len();
        let mut unknown = false;
        for spec in &self.key_specs {
            let start = match &spec.begin {
                BeginSearch::Index(i) => *i,
                BeginSearch::Keyword {
                    keyword,
                    start_from,
                } => match find_keyword(args, keyword, *start_from) {
                    Some(at) => at + 1,
                    None => continue,
                },
                BeginSearch::Unknown => {
                    unknown = true;
                    continue;
                }
            };
            if start >= argc {
                continue;
            }
            match spec.find {
                FindKeys::Range {
                    last_key,
                    step,
                    limit,
                } => {
                    let last = if last_key >= 0 {
                        start as i64 + last_key
                    } else if limit <= 1 {
                        argc as i64 + last_key
                    } else {
                        start as i64 + ((argc - start) / limit) as i64 + last_key
                    };
                    let last = last.min(argc as i64 - 1);
                    let mut i = start as i64;
                    while i <= last {
                        each(i as usize);
                        i += step.max(1) as i64;
                    }
                }
                FindKeys::KeyNum {
                    keynum_index,
                    first_key,
                    step,
                } => {
                    let Some(count) = args
                        .get(start + keynum_index)
                        .and_then(|n| std::str::from_utf8(n).ok())
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        // Not a number: the server will refuse the request; any node can say so.
                        continue;
                    };
                    let first = start + first_key;
                    for k in 0..count {
                        let at = first + k * step.max(1);
                        if at >= argc {
                            break;
                        }
                        each(at);
                    }
                }
                FindKeys::Unknown => unknown = true,
            }
        }
        if unknown { Err(KeysUnknown) } else { Ok(()) }
    }
}

/// Where `keyword` (any case) is, searching from `start_from` as a key specification says.
fn find_keyword(args: Args<'_>, keyword: &[u8], start_from: i64) -> Option<usize> {
    let argc = args.len() as i64;
    let matches = |i: i64| {
        args.get(i as usize)
            .is_some_and(|a| a.eq_ignore_ascii_case(keyword))
    };
    if start_from >= 0 {
        (start_from..argc).find(|&i| matches(i)).map(|i| i as usize)
    } else {
        let from = argc + start_from;
        (1..=from).rev().find(|&i| matches(i)).map(|i| i as usize)
    }
}

/// The commands of one server, from its `COMMAND` reply.
#[derive(Debug, Default)]
pub struct CommandInfo {
    by_name: HashMap<Vec<u8>, Learned, BuildFnv>,
}

impl CommandInfo {
    /// Reads a decoded `COMMAND` reply. Entries that are not in the expected shape are skipped
    /// (and counted in the error when nothing at all could be read).
    pub fn from_reply(frame: &OwnedFrame) -> Result<CommandInfo, String> {
        let OwnedFrame::Array(entries) = frame else {
            return Err(format!("COMMAND: expected an array, got {frame:?}"));
        };
        let mut by_name = HashMap::default();
        for entry in entries {
            if let Some((name, learned)) = parse_entry(entry) {
                by_name.insert(name, learned);
            }
        }
        if by_name.is_empty() && !entries.is_empty() {
            return Err("COMMAND: no entry could be read".into());
        }
        Ok(CommandInfo { by_name })
    }

    /// The number of commands known (subcommands not counted).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The command `name` (any case), if the server has it.
    pub fn get(&self, name: &[u8]) -> Option<&Learned> {
        let name = crate::commands::effective_name(name);
        if name.len() > 64 {
            return None;
        }
        let mut lower = [0u8; 64];
        for (d, s) in lower.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        self.by_name.get(&lower[..name.len()])
    }

    /// The command of a request, or its subcommand when it has one: what routes it.
    pub fn of_request(&self, args: Args<'_>) -> Option<&Learned> {
        let learned = self.get(args.first()?)?;
        Some(learned.subcommand(args).unwrap_or(learned))
    }
}

/// One entry: `[name, arity, flags, first, last, step, acl categories, tips, key specs,
/// subcommands]`; the last three exist since Redis 7.0. Older servers' entries give a command
/// without key specs or tips, which the built-in table then routes.
fn parse_entry(entry: &OwnedFrame) -> Option<(Vec<u8>, Learned)> {
    let OwnedFrame::Array(fields) = entry else {
        return None;
    };
    let name = string(fields.first()?)?.to_ascii_lowercase();
    let mut learned = Learned {
        allow_busy: strings(fields.get(2)).any(|f| f.eq_ignore_ascii_case(b"allow_busy")),
        ..Learned::default()
    };
    for tip in strings(fields.get(7)) {
        let tip = String::from_utf8_lossy(tip).to_ascii_lowercase();
        if let Some(policy) = tip.strip_prefix("request_policy:") {
            learned.request = match policy {
                "all_nodes" => Some(RequestPolicy::AllNodes),
                "all_shards" => Some(RequestPolicy::AllShards),
                "multi_shard" => Some(RequestPolicy::MultiShard),
                "special" => Some(RequestPolicy::Special),
                _ => None,
            };
        } else if let Some(policy) = tip.strip_prefix("response_policy:") {
            learned.response = match policy {
                "one_succeeded" => Some(ResponsePolicy::OneSucceeded),
                "all_succeeded" => Some(ResponsePolicy::AllSucceeded),
                "agg_logical_and" => Some(ResponsePolicy::AggLogicalAnd),
                "agg_logical_or" => Some(ResponsePolicy::AggLogicalOr),
                "agg_min" => Some(ResponsePolicy::AggMin),
                "agg_max" => Some(ResponsePolicy::AggMax),
                "agg_sum" => Some(ResponsePolicy::AggSum),
                "special" => Some(ResponsePolicy::Special),
                _ => None,
            };
        }
    }
    if let Some(OwnedFrame::Array(specs)) = fields.get(8) {
        learned.key_specs = specs.iter().filter_map(parse_key_spec).collect();
    }
    if let Some(OwnedFrame::Array(subs)) = fields.get(9) {
        for sub in subs {
            if let Some((full, sub_learned)) = parse_entry(sub) {
                // "config|set" -> "set"
                let short = match full.iter().position(|&b| b == b'|') {
                    Some(bar) => full[bar + 1..].to_vec(),
                    None => full,
                };
                learned.subcommands.insert(short, sub_learned);
            }
        }
    }
    Some((name, learned))
}

/// A key specification: a map (in RESP2, alternating keys and values) with `begin_search`
/// and `find_keys`, each a map of `type` and `spec`.
fn parse_key_spec(frame: &OwnedFrame) -> Option<KeySpec> {
    let begin = field(frame, b"begin_search")?;
    let find = field(frame, b"find_keys")?;
    let begin_type = string(field(begin, b"type")?)?;
    let begin_spec = field(begin, b"spec");
    let begin = match begin_type {
        b"index" => BeginSearch::Index(usize::try_from(int(field(begin_spec?, b"index")?)?).ok()?),
        b"keyword" => BeginSearch::Keyword {
            keyword: string(field(begin_spec?, b"keyword")?)?.to_vec(),
            start_from: int(field(begin_spec?, b"startfrom")?)?,
        },
        _ => BeginSearch::Unknown,
    };
    let find_type = string(field(find, b"type")?)?;
    let find_spec = field(find, b"spec");
    let count =
        |name: &[u8]| -> Option<usize> { usize::try_from(int(field(find_spec?, name)?)?).ok() };
    let find = match find_type {
        b"range" => FindKeys::Range {
            last_key: int(field(find_spec?, b"lastkey")?)?,
            step: count(b"keystep")?,
            limit: count(b"limit")?,
        },
        b"keynum" => FindKeys::KeyNum {
            keynum_index: count(b"keynumidx")?,
            first_key: count(b"firstkey")?,
            step: count(b"keystep")?,
        },
        _ => FindKeys::Unknown,
    };
    Some(KeySpec { begin, find })
}

/// The value of `key` in a map sent as an array of alternating keys and values.
fn field<'f>(frame: &'f OwnedFrame, key: &[u8]) -> Option<&'f OwnedFrame> {
    let OwnedFrame::Array(items) = frame else {
        return None;
    };
    items
        .chunks(2)
        .find(|pair| pair.len() == 2 && string(&pair[0]) == Some(key))
        .map(|pair| &pair[1])
}

fn string(frame: &OwnedFrame) -> Option<&[u8]> {
    match frame {
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => Some(b),
        _ => None,
    }
}

fn int(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(i) => Some(*i),
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => {
            std::str::from_utf8(b).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// The strings of an array field (flags, tips); nothing for anything else.
fn strings(frame: Option<&OwnedFrame>) -> impl Iterator<Item = &[u8]> {
    let items: &[OwnedFrame] = match frame {
        Some(OwnedFrame::Array(items)) => items,
        _ => &[],
    };
    items.iter().filter_map(string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::args::OwnedArgs;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    fn map(pairs: Vec<(&str, OwnedFrame)>) -> OwnedFrame {
        OwnedFrame::Array(pairs.into_iter().flat_map(|(k, v)| [bulk(k), v]).collect())
    }

    fn key_spec(begin: OwnedFrame, find: OwnedFrame) -> OwnedFrame {
        map(vec![
            ("flags", OwnedFrame::Array(vec![])),
            ("begin_search", begin),
            ("find_keys", find),
        ])
    }

    fn index(i: i64) -> OwnedFrame {
        map(vec![
            ("type", bulk("index")),
            ("spec", map(vec![("index", OwnedFrame::Integer(i))])),
        ])
    }

    fn range(last: i64, step: i64, limit: i64) -> OwnedFrame {
        map(vec![
            ("type", bulk("range")),
            (
                "spec",
                map(vec![
                    ("lastkey", OwnedFrame::Integer(last)),
                    ("keystep", OwnedFrame::Integer(step)),
                    ("limit", OwnedFrame::Integer(limit)),
                ]),
            ),
        ])
    }

    fn entry(name: &str, flags: &[&str], tips: &[&str], specs: Vec<OwnedFrame>) -> OwnedFrame {
        OwnedFrame::Array(vec![
            bulk(name),
            OwnedFrame::Integer(-2),
            OwnedFrame::Array(flags.iter().map(|f| bulk(f)).collect()),
            OwnedFrame::Integer(0),
            OwnedFrame::Integer(0),
            OwnedFrame::Integer(0),
            OwnedFrame::Array(vec![]),
            OwnedFrame::Array(tips.iter().map(|t| bulk(t)).collect()),
            OwnedFrame::Array(specs),
            OwnedFrame::Array(vec![]),
        ])
    }

    fn keys_of(learned: &Learned, words: &[&str]) -> Result<Vec<usize>, KeysUnknown> {
        let owned = OwnedArgs::from_parts(words);
        let mut out = Vec::new();
        learned.for_each_key(owned.args(), |i| out.push(i))?;
        Ok(out)
    }

    #[test]
    fn index_and_range_specs_find_the_keys() {
        let zrangestore = entry(
            "zrangestore",
            &["write"],
            &[],
            vec![
                key_spec(index(1), range(0, 1, 0)),
                key_spec(index(2), range(0, 1, 0)),
            ],
        );
        let (name, learned) = parse_entry(&zrangestore).unwrap();
        assert_eq!(name, b"zrangestore");
        assert_eq!(
            keys_of(&learned, &["ZRANGESTORE", "dst", "src", "0", "-1"]),
            Ok(vec![1, 2])
        );
    }

    #[test]
    fn keynum_specs_read_the_count() {
        let keynum = map(vec![
            ("type", bulk("keynum")),
            (
                "spec",
                map(vec![
                    ("keynumidx", OwnedFrame::Integer(0)),
                    ("firstkey", OwnedFrame::Integer(1)),
                    ("keystep", OwnedFrame::Integer(1)),
                ]),
            ),
        ]);
        let (_, eval) =
            parse_entry(&entry("eval", &[], &[], vec![key_spec(index(2), keynum)])).unwrap();
        assert_eq!(
            keys_of(&eval, &["EVAL", "return 1", "2", "a", "b", "arg"]),
            Ok(vec![3, 4])
        );
        assert_eq!(keys_of(&eval, &["EVAL", "return 1", "0"]), Ok(vec![]));
        // More keys announced than given: only those present.
        assert_eq!(keys_of(&eval, &["EVAL", "s", "5", "a"]), Ok(vec![3]));
    }

    #[test]
    fn keyword_specs_with_a_limit_take_half_of_the_rest() {
        let streams = map(vec![
            ("type", bulk("keyword")),
            (
                "spec",
                map(vec![
                    ("keyword", bulk("STREAMS")),
                    ("startfrom", OwnedFrame::Integer(1)),
                ]),
            ),
        ]);
        let (_, xread) = parse_entry(&entry(
            "xread",
            &["blocking"],
            &[],
            vec![key_spec(streams, range(-1, 1, 2))],
        ))
        .unwrap();
        assert_eq!(
            keys_of(
                &xread,
                &["XREAD", "COUNT", "2", "streams", "s1", "s2", "0", "0"]
            ),
            Ok(vec![4, 5])
        );
        assert_eq!(keys_of(&xread, &["XREAD", "COUNT", "2"]), Ok(vec![]));
    }

    #[test]
    fn tips_and_flags_are_read_and_subcommands_found() {
        let kill = entry(
            "script|kill",
            &["noscript", "allow_busy"],
            &["request_policy:all_shards", "response_policy:one_succeeded"],
            vec![],
        );
        let script = OwnedFrame::Array(vec![
            bulk("script"),
            OwnedFrame::Integer(-2),
            OwnedFrame::Array(vec![]),
            OwnedFrame::Integer(0),
            OwnedFrame::Integer(0),
            OwnedFrame::Integer(0),
            OwnedFrame::Array(vec![]),
            OwnedFrame::Array(vec![]),
            OwnedFrame::Array(vec![]),
            OwnedFrame::Array(vec![kill]),
        ]);
        let info = CommandInfo::from_reply(&OwnedFrame::Array(vec![script])).unwrap();
        let owned = OwnedArgs::from_parts(&["script", "KILL"]);
        let learned = info.of_request(owned.args()).unwrap();
        assert_eq!(learned.request, Some(RequestPolicy::AllShards));
        assert_eq!(learned.response, Some(ResponsePolicy::OneSucceeded));
        assert!(learned.allow_busy);
        let owned = OwnedArgs::from_parts(&["SCRIPT", "other"]);
        assert_eq!(info.of_request(owned.args()).unwrap().request, None);
    }

    #[test]
    fn unknown_specs_say_so() {
        let unknown = map(vec![("type", bulk("unknown")), ("spec", map(vec![]))]);
        let (_, sort) = parse_entry(&entry(
            "mod.cmd",
            &[],
            &[],
            vec![key_spec(unknown.clone(), unknown)],
        ))
        .unwrap();
        assert_eq!(keys_of(&sort, &["MOD.CMD", "a"]), Err(KeysUnknown));
    }
}
