//! Combining the replies of a command sent to several nodes into the one reply a single Redis
//! would give ([`Merge`] says how; [`super::routing`] says when).
//!
//! The replies arrive as raw frames, RESP2 or RESP3 as the client speaks. Combining never
//! invents a value no node gave except where the merge is a sum or a choice documented here;
//! where a reply is not in the shape expected, the client gets that node's reply (an error
//! passes through) rather than a guess.

use bytes::{BufMut, Bytes, BytesMut};

use super::routing::Merge;
use crate::protocol::reply::{self, elements, error_text};
use crate::protocol::write;

/// The client's reply from every node's reply (`nodes[i]` answered `replies[i]`); `args` is
/// the request.
/// Whether keyward sends every call of the command named so in Redis's statistics
/// (`config|resetstat`) to every node whose statistics are merged
/// ([`super::routing::Routing::reaches_every_primary`]): each node counted that one call, so
/// the merged statistic takes one node's figure instead of the sum.
pub type CountedOnce<'a> = &'a dyn Fn(&str) -> bool;

pub fn combine(
    merge: Merge,
    nodes: &[String],
    replies: &[Bytes],
    args: &[Bytes],
    counted_once: CountedOnce<'_>,
) -> Bytes {
    if replies.is_empty() {
        return write::error("CLUSTERDOWN keyward: no node to send the command to");
    }
    match merge {
        Merge::OneSucceeded => one_succeeded(replies),
        Merge::AllSucceeded => all_succeeded(nodes, replies),
        Merge::And => aggregate(replies, |a, b| i64::from(a != 0 && b != 0)),
        Merge::Or => aggregate(replies, |a, b| i64::from(a != 0 || b != 0)),
        Merge::Min => aggregate(replies, i64::min),
        Merge::Max => aggregate(replies, i64::max),
        Merge::Sum | Merge::SlowlogLen => aggregate(replies, |a, b| a.saturating_add(b)),
        Merge::Concat => concat(replies),
        Merge::Info => info(replies, counted_once),
        Merge::SlowlogGet => slowlog_get(replies, args),
        Merge::LatencyLatest => latency_latest(replies),
        Merge::LatencyHistory => latency_history(replies),
        Merge::LatencyHistogram => latency_histogram(replies, counted_once),
        Merge::PerNodeText => per_node_text(nodes, replies),
        Merge::RandomKey => random_key(replies),
        Merge::FunctionStats => function_stats(replies),
    }
}

fn first_error(replies: &[Bytes]) -> Option<&Bytes> {
    replies.iter().find(|r| reply::is_error(r))
}

fn one_succeeded(replies: &[Bytes]) -> Bytes {
    replies
        .iter()
        .find(|r| !reply::is_error(r))
        .unwrap_or(&replies[0])
        .clone()
}

/// Any node's error, naming the node when others succeeded (the command took effect there).
fn all_succeeded(nodes: &[String], replies: &[Bytes]) -> Bytes {
    let failed: Vec<usize> = (0..replies.len())
        .filter(|&i| reply::is_error(&replies[i]))
        .collect();
    match failed.first() {
        None => replies[0].clone(),
        Some(&i) if failed.len() == replies.len() => replies[i].clone(),
        Some(&i) => {
            let text = error_text(&replies[i]);
            // Keep the node's error code (the first word) so that clients matching on it
            // still do.
            let (code, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
            write::error(&format!(
                "{code} {rest} (keyward: {} of {} nodes failed, first {}; the others applied it)",
                failed.len(),
                replies.len(),
                nodes.get(i).map_or("?", String::as_str),
            ))
        }
    }
}

/// Integers combined with `op`; arrays of integers combined element by element.
fn aggregate(replies: &[Bytes], op: impl Fn(i64, i64) -> i64) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e.clone();
    }
    if let Some(first) = reply::integer(&replies[0]) {
        let mut acc = first;
        for r in &replies[1..] {
            match reply::integer(r) {
                Some(n) => acc = op(acc, n),
                None => return unexpected(r),
            }
        }
        return write::int(acc);
    }
    let Some(first) = elements(&replies[0]) else {
        return unexpected(&replies[0]);
    };
    let mut acc: Vec<Option<i64>> = first.iter().map(|e| reply::integer(e)).collect();
    for r in &replies[1..] {
        match elements(r) {
            Some(e) if e.len() == acc.len() => {
                for (a, e) in acc.iter_mut().zip(e) {
                    *a = match (*a, reply::integer(&e)) {
                        (Some(a), Some(b)) => Some(op(a, b)),
                        _ => None,
                    };
                }
            }
            _ => return unexpected(r),
        }
    }
    let ints: Option<Vec<Bytes>> = acc.into_iter().map(|a| a.map(write::int)).collect();
    match ints {
        Some(ints) => write::array(&ints),
        None => unexpected(&replies[0]),
    }
}

fn unexpected(frame: &Bytes) -> Bytes {
    if reply::is_error(frame) {
        frame.clone()
    } else {
        write::error("ERR keyward: a node's reply could not be combined with the others")
    }
}

fn concat(replies: &[Bytes]) -> Bytes {
    let mut all = Vec::new();
    for r in replies {
        match elements(r) {
            Some(e) => all.extend(e),
            None => return one_succeeded(replies),
        }
    }
    write::array(&all)
}

/// The text of a bulk string or a RESP3 verbatim string.
fn text_of(frame: &Bytes) -> Option<String> {
    if frame.first() == Some(&b'=') {
        let header_end = memchr::memmem::find(frame, b"\r\n")?;
        let len: usize = std::str::from_utf8(&frame[1..header_end])
            .ok()?
            .parse()
            .ok()?;
        let body = frame.get(header_end + 2..header_end + 2 + len)?;
        // "txt:" or "mkd:" before the text.
        let body = body.get(4..).unwrap_or_default();
        return Some(String::from_utf8_lossy(body).into_owned());
    }
    reply::bulk_string(frame).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `INFO`: one Redis holding every node's keys and serving every node's clients.
/// - `Keyspace`, `Commandstats`, `Errorstats`, `Latencystats`: lines of `field=value` lists,
///   merged by line: integers summed (`avg_ttl` the largest), `usec_per_call` recomputed,
///   other decimals (percentiles) the largest;
/// - `Clients`, `Memory`, `Persistence`, `Stats`, `CPU`: integers summed, except timestamps,
///   maxima and flags (`*_time*`, `*last*`, `max*`, `*_in_progress`, `loading`...), which
///   take the largest; decimals (ratios) the largest; text the first node's;
/// - every other section (`Server`, `Replication`, `Cluster`, `Modules`): the first node's.
fn info(replies: &[Bytes], counted_once: CountedOnce<'_>) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e.clone();
    }
    let texts: Option<Vec<String>> = replies.iter().map(text_of).collect();
    let Some(texts) = texts else {
        return unexpected(&replies[0]);
    };
    let parsed: Vec<Vec<Section>> = texts.iter().map(|t| sections(t)).collect();
    let mut merged: Vec<Section> = Vec::new();
    for node in parsed {
        for section in node {
            match merged.iter_mut().find(|s| s.name == section.name) {
                Some(into) => merge_section(into, section, counted_once),
                None => merged.push(section),
            }
        }
    }
    let mut out = String::new();
    for (i, s) in merged.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str("# ");
        out.push_str(&s.name);
        out.push_str("\r\n");
        for (k, v) in &s.lines {
            out.push_str(k);
            out.push(':');
            out.push_str(v);
            out.push_str("\r\n");
        }
    }
    write::bulk(out.as_bytes())
}

struct Section {
    name: String,
    lines: Vec<(String, String)>,
}

fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("# ") {
            out.push(Section {
                name: name.to_string(),
                lines: Vec::new(),
            });
        } else if let Some((k, v)) = line.split_once(':') {
            if out.is_empty() {
                out.push(Section {
                    name: String::new(),
                    lines: Vec::new(),
                });
            }
            if let Some(s) = out.last_mut() {
                s.lines.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

fn merge_section(into: &mut Section, from: Section, counted_once: CountedOnce<'_>) {
    let name = into.name.to_ascii_lowercase();
    let by_line = matches!(
        name.as_str(),
        "keyspace" | "commandstats" | "errorstats" | "latencystats"
    );
    let summed = matches!(
        name.as_str(),
        "clients" | "memory" | "persistence" | "stats" | "cpu"
    );
    if !by_line && !summed {
        return;
    }
    let commandstats = name == "commandstats";
    for (k, v) in from.lines {
        match into.lines.iter_mut().find(|(ik, _)| *ik == k) {
            // A command every node ran once per call of the client: one node's figures.
            Some((_, iv))
                if commandstats && k.strip_prefix("cmdstat_").is_some_and(counted_once) =>
            {
                *iv = if field_integer(&v, "calls") > field_integer(iv, "calls") {
                    v
                } else {
                    iv.clone()
                };
            }
            Some((_, iv)) if by_line => *iv = merge_fields(iv, &v),
            Some((_, iv)) => *iv = merge_value(&k, iv, &v),
            None if by_line => into.lines.push((k, v)),
            None => {}
        }
    }
}

/// Whether a counter named so is a point in time, a maximum, a flag, or something every node
/// holds a copy of (the scripts and functions keyward loads on every node), rather than an
/// amount that adds up.
fn takes_largest(name: &str) -> bool {
    if name == "rdb_changes_since_last_save" {
        return false;
    }
    name.contains("_time")
        || name.contains("last")
        || name.contains("script")
        || name.contains("lua")
        || name.contains("functions")
        || name.contains("librar")
        || name.contains("max")
        || name.contains("peak")
        || name.ends_with("_in_progress")
        || name.ends_with("_perc")
        || name == "loading"
        || name == "async_loading"
        || name.starts_with("latest_")
        || name.starts_with("current_")
        || name.starts_with("mem_fragmentation")
        || name.starts_with("allocator_")
        || name.starts_with("rss_")
}

fn merge_value(name: &str, a: &str, b: &str) -> String {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) if takes_largest(name) => x.max(y).to_string(),
        (Ok(x), Ok(y)) => x.saturating_add(y).to_string(),
        _ => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => format!("{:.2}", x.max(y)),
            _ => a.to_string(),
        },
    }
}

/// The integer `field` of a `field=value,field=value` list (0 when missing).
fn field_integer(fields: &str, field: &str) -> i64 {
    fields
        .split(',')
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| *k == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Two `field=value,field=value` lists of one line.
fn merge_fields(a: &str, b: &str) -> String {
    let mut fields: Vec<(String, String)> = a
        .split(',')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in b.split(',').filter_map(|f| f.split_once('=')) {
        match fields.iter_mut().find(|(fk, _)| fk == k) {
            Some((_, fv)) => {
                *fv = match (fv.parse::<i64>(), v.parse::<i64>()) {
                    (Ok(x), Ok(y)) if k == "avg_ttl" => x.max(y).to_string(),
                    (Ok(x), Ok(y)) => x.saturating_add(y).to_string(),
                    _ => match (fv.parse::<f64>(), v.parse::<f64>()) {
                        (Ok(x), Ok(y)) => format!("{:.3}", x.max(y)),
                        _ => fv.clone(),
                    },
                }
            }
            None => fields.push((k.to_string(), v.to_string())),
        }
    }
    let usec = fields
        .iter()
        .find(|(k, _)| k == "usec")
        .map(|(_, v)| v.clone());
    let calls = fields
        .iter()
        .find(|(k, _)| k == "calls")
        .map(|(_, v)| v.clone());
    if let (Some(usec), Some(calls)) = (usec, calls)
        && let (Ok(usec), Ok(calls)) = (usec.parse::<f64>(), calls.parse::<f64>())
        && let Some((_, per_call)) = fields.iter_mut().find(|(k, _)| k == "usec_per_call")
    {
        let value = if calls > 0.0 { usec / calls } else { 0.0 };
        *per_call = format!("{value:.2}");
    }
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `SLOWLOG GET [count]`: every node's entries, newest first (by time, then by id), as many as
/// the count asks (10 by default, all for a negative count). Entry ids are each node's own.
fn slowlog_get(replies: &[Bytes], args: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e.clone();
    }
    let count = args
        .get(2)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<i64>().ok())
        .unwrap_or(10);
    let mut entries: Vec<(i64, i64, Bytes)> = Vec::new();
    for r in replies {
        let Some(list) = elements(r) else {
            return unexpected(r);
        };
        for entry in list {
            let fields = elements(&entry).unwrap_or_default();
            let id = fields.first().and_then(|f| reply::integer(f)).unwrap_or(0);
            let time = fields.get(1).and_then(|f| reply::integer(f)).unwrap_or(0);
            entries.push((time, id, entry));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
    if count >= 0 {
        entries.truncate(count as usize);
    }
    let frames: Vec<Bytes> = entries.into_iter().map(|(_, _, e)| e).collect();
    write::array(&frames)
}

/// A merged slow log as one Redis would keep it: at most `slowlog-max-len` entries (`max_len`),
/// the newest. `SLOWLOG LEN` counts at most that many, `SLOWLOG GET` returns at most that many.
pub fn cap_slowlog(merge: Merge, frame: Bytes, max_len: usize) -> Bytes {
    match merge {
        Merge::SlowlogLen => match reply::integer(&frame) {
            Some(n) => write::int(n.min(max_len as i64)),
            None => frame,
        },
        Merge::SlowlogGet => match elements(&frame) {
            Some(entries) if entries.len() > max_len => write::array(&entries[..max_len]),
            _ => frame,
        },
        _ => frame,
    }
}

/// `LATENCY LATEST`: one entry per event: the most recent spike's time and latency, and the
/// highest maximum of any node.
fn latency_latest(replies: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e.clone();
    }
    // event -> (entry fields, time, max)
    let mut events: Vec<(Bytes, Vec<Bytes>, i64, i64)> = Vec::new();
    for r in replies {
        let Some(list) = elements(r) else {
            return unexpected(r);
        };
        for entry in list {
            let Some(fields) = elements(&entry).filter(|f| f.len() >= 4) else {
                continue;
            };
            let time = reply::integer(&fields[1]).unwrap_or(0);
            let max = reply::integer(&fields[3]).unwrap_or(0);
            match events.iter_mut().find(|e| e.0 == fields[0]) {
                Some(known) => {
                    known.3 = known.3.max(max);
                    if time > known.2 {
                        known.1 = fields.clone();
                        known.2 = time;
                    }
                }
                None => events.push((fields[0].clone(), fields.clone(), time, max)),
            }
        }
    }
    let frames: Vec<Bytes> = events
        .into_iter()
        .map(|(_, mut fields, _, max)| {
            fields[3] = write::int(max);
            write::array(&fields)
        })
        .collect();
    write::array(&frames)
}

/// `LATENCY HISTORY event`: every node's samples, oldest first.
fn latency_history(replies: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e.clone();
    }
    let mut samples: Vec<(i64, Bytes)> = Vec::new();
    for r in replies {
        let Some(list) = elements(r) else {
            return unexpected(r);
        };
        for sample in list {
            let time = elements(&sample)
                .and_then(|f| f.first().and_then(|t| reply::integer(t)))
                .unwrap_or(0);
            samples.push((time, sample));
        }
    }
    samples.sort_by_key(|s| s.0);
    let frames: Vec<Bytes> = samples.into_iter().map(|(_, s)| s).collect();
    write::array(&frames)
}

/// Free text (`LATENCY DOCTOR`, `LATENCY GRAPH`): one text per node that answered, each under
/// a line naming the node; an error only when every node gave one.
fn per_node_text(nodes: &[String], replies: &[Bytes]) -> Bytes {
    let mut out = String::new();
    for (node, r) in nodes.iter().zip(replies) {
        if let Some(text) = text_of(r) {
            out.push_str(&format!("# node {node}\n{text}\n"));
        }
    }
    if out.is_empty() {
        return replies[0].clone();
    }
    write::bulk(out.as_bytes())
}

/// `RANDOMKEY`: a key of a node picked at random among those that have keys; null when none
/// has any.
fn random_key(replies: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e.clone();
    }
    let with_keys: Vec<&Bytes> = replies
        .iter()
        .filter(|r| reply::bulk_string(r).is_some())
        .collect();
    if with_keys.is_empty() {
        return replies[0].clone();
    }
    let pick = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
        % with_keys.len();
    with_keys[pick].clone()
}

/// `FUNCTION STATS`: the reply of the node that runs a function now, else the first node's
/// (the libraries, loaded on every primary, are the same everywhere).
fn function_stats(replies: &[Bytes]) -> Bytes {
    for r in replies {
        if let Some(pairs) = map_pairs(r)
            && let Some((_, running)) = pairs
                .iter()
                .find(|(k, _)| reply::bulk_string(k) == Some(b"running_script"))
            && !is_null(running)
        {
            return r.clone();
        }
    }
    one_succeeded(replies)
}

fn is_null(frame: &[u8]) -> bool {
    frame.starts_with(b"$-1") || frame.starts_with(b"*-1") || frame.starts_with(b"_")
}

/// The key/value pairs of a map: a RESP3 map (`%`), or the flat array of alternating keys and
/// values RESP2 sends.
fn map_pairs(frame: &Bytes) -> Option<Vec<(Bytes, Bytes)>> {
    let items = if frame.first() == Some(&b'%') {
        let header_end = memchr::memmem::find(frame, b"\r\n")?;
        let count: usize = std::str::from_utf8(&frame[1..header_end])
            .ok()?
            .parse()
            .ok()?;
        // The same elements as an array of twice as many.
        let mut as_array = BytesMut::with_capacity(frame.len() + 8);
        as_array.put_slice(format!("*{}\r\n", count * 2).as_bytes());
        as_array.put_slice(&frame[header_end + 2..]);
        elements(&as_array.freeze())?
    } else {
        elements(frame)?
    };
    if items.len() % 2 != 0 {
        return None;
    }
    Some(
        items
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect(),
    )
}

/// A map frame of `pairs`, RESP3 (`%`) when `like` is one, else a flat array.
fn encode_map(like: &Bytes, pairs: &[(Bytes, Bytes)]) -> Bytes {
    let mut out = BytesMut::new();
    if like.first() == Some(&b'%') {
        out.put_slice(format!("%{}\r\n", pairs.len()).as_bytes());
    } else {
        out.put_slice(format!("*{}\r\n", pairs.len() * 2).as_bytes());
    }
    for (k, v) in pairs {
        out.put_slice(k);
        out.put_slice(v);
    }
    out.freeze()
}

/// `LATENCY HISTOGRAM`: per command, `calls` and each bucket's count summed over the nodes,
/// except for a command every node ran once per call of the client (`CONFIG RESETSTAT`): the
/// figures of the node that counted the most calls.
fn latency_histogram(replies: &[Bytes], counted_once: CountedOnce<'_>) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e.clone();
    }
    let mut merged: Vec<(Bytes, Bytes)> = Vec::new();
    for r in replies {
        let Some(pairs) = map_pairs(r) else {
            return unexpected(r);
        };
        for (command, figures) in pairs {
            let Some((_, into)) = merged.iter_mut().find(|(c, _)| *c == command) else {
                merged.push((command, figures));
                continue;
            };
            let name = reply::bulk_string(&command).map(String::from_utf8_lossy);
            if name.is_some_and(|n| counted_once(&n)) {
                if calls_of(&figures) > calls_of(into) {
                    *into = figures;
                }
            } else if let Some(sum) = sum_two_maps(into, &figures) {
                *into = sum;
            }
        }
    }
    encode_map(&replies[0], &merged)
}

/// The `calls` of one command's `LATENCY HISTOGRAM` figures.
fn calls_of(figures: &Bytes) -> i64 {
    map_pairs(figures)
        .and_then(|pairs| {
            pairs
                .iter()
                .find(|(k, _)| reply::bulk_string(k) == Some(&b"calls"[..]))
                .and_then(|(_, v)| reply::integer(v))
        })
        .unwrap_or(0)
}

fn sum_two_maps(a: &Bytes, b: &Bytes) -> Option<Bytes> {
    let mut pairs = map_pairs(a)?;
    for (k, v) in map_pairs(b)? {
        match pairs.iter_mut().find(|(pk, _)| *pk == k) {
            Some((_, pv)) => {
                *pv = match (reply::integer(pv), reply::integer(&v)) {
                    (Some(x), Some(y)) => write::int(x.saturating_add(y)),
                    _ => sum_two_maps(pv, &v).unwrap_or_else(|| pv.clone()),
                }
            }
            None => pairs.push((k, v)),
        }
    }
    Some(encode_map(a, &pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn one_succeeded_takes_the_ok() {
        let r = [b("-NOTBUSY No scripts\r\n"), b("+OK\r\n")];
        assert_eq!(
            combine(Merge::OneSucceeded, &[], &r, &[], &|_| false),
            b("+OK\r\n")
        );
        let r = [b("-NOTBUSY No scripts\r\n"), b("-NOTBUSY No scripts\r\n")];
        assert_eq!(combine(Merge::OneSucceeded, &[], &r, &[], &|_| false), r[0]);
    }

    #[test]
    fn all_succeeded_names_a_partial_failure() {
        let nodes = ["a:1".to_string(), "b:2".to_string()];
        let r = [b("+OK\r\n"), b("-ERR bad\r\n")];
        let out = combine(Merge::AllSucceeded, &nodes, &r, &[], &|_| false);
        assert!(out.starts_with(b"-ERR bad (keyward: 1 of 2 nodes failed, first b:2"));
        let r = [b("$3\r\nabc\r\n"), b("$3\r\nabc\r\n")];
        assert_eq!(
            combine(Merge::AllSucceeded, &nodes, &r, &[], &|_| false),
            r[0]
        );
    }

    #[test]
    fn aggregates_work_element_by_element() {
        let r = [b("*2\r\n:1\r\n:0\r\n"), b("*2\r\n:1\r\n:1\r\n")];
        assert_eq!(
            combine(Merge::And, &[], &r, &[], &|_| false),
            b("*2\r\n:1\r\n:0\r\n")
        );
        assert_eq!(
            combine(Merge::Sum, &[], &[b(":2\r\n"), b(":3\r\n")], &[], &|_| {
                false
            }),
            b(":5\r\n")
        );
    }

    #[test]
    fn info_sums_counters_and_merges_stats_lines() {
        let a = "# Server\r\nredis_version:7.0.15\r\n\r\n# Stats\r\nexpired_keys:2\r\nrdb_last_save_time:100\r\nrdb_changes_since_last_save:1\r\nnumber_of_cached_scripts:4\r\n\r\n# Commandstats\r\ncmdstat_set:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n";
        let c = "# Server\r\nredis_version:7.0.15\r\n\r\n# Stats\r\nexpired_keys:5\r\nrdb_last_save_time:90\r\nrdb_changes_since_last_save:2\r\nnumber_of_cached_scripts:4\r\n\r\n# Commandstats\r\ncmdstat_set:calls=2,usec=30,usec_per_call=15.00,rejected_calls=0,failed_calls=1\r\ncmdstat_get:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\r\n# Keyspace\r\ndb0:keys=4,expires=1,avg_ttl=50\r\n";
        let out = combine(
            Merge::Info,
            &[],
            &[write::bulk(a.as_bytes()), write::bulk(c.as_bytes())],
            &[],
            &|_| false,
        );
        let text = String::from_utf8(reply::bulk_string(&out).unwrap().to_vec()).unwrap();
        assert!(text.contains("expired_keys:7\r\n"), "{text}");
        assert!(text.contains("rdb_last_save_time:100\r\n"), "{text}");
        assert!(text.contains("rdb_changes_since_last_save:3\r\n"), "{text}");
        assert!(text.contains("number_of_cached_scripts:4\r\n"), "{text}");
        assert!(text.contains("cmdstat_set:calls=4,usec=40,usec_per_call=10.00,rejected_calls=0,failed_calls=1\r\n"), "{text}");
        assert!(text.contains("cmdstat_get:calls=1"), "{text}");
        assert!(
            text.contains("db0:keys=7,expires=1,avg_ttl=50\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("redis_version").count(), 1);
    }

    #[test]
    fn slowlog_entries_are_merged_newest_first() {
        let entry = |id: i64, t: i64| {
            format!("*6\r\n:{id}\r\n:{t}\r\n:5\r\n*1\r\n$4\r\nPING\r\n$0\r\n\r\n$0\r\n\r\n")
        };
        let a = b(&format!("*2\r\n{}{}", entry(1, 20), entry(0, 10)));
        let c = b(&format!("*1\r\n{}", entry(0, 15)));
        let out = combine(
            Merge::SlowlogGet,
            &[],
            &[a, c],
            &[b("SLOWLOG"), b("GET"), b("2")],
            &|_| false,
        );
        assert_eq!(out, b(&format!("*2\r\n{}{}", entry(1, 20), entry(0, 15))));
    }

    #[test]
    fn histograms_are_summed() {
        let a = b(
            "*2\r\n$3\r\nset\r\n*4\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n*2\r\n:1\r\n:1\r\n",
        );
        let c = b(
            "*2\r\n$3\r\nset\r\n*4\r\n$5\r\ncalls\r\n:2\r\n$14\r\nhistogram_usec\r\n*2\r\n:1\r\n:2\r\n",
        );
        assert_eq!(
            combine(Merge::LatencyHistogram, &[], &[a, c], &[], &|_| false),
            b(
                "*2\r\n$3\r\nset\r\n*4\r\n$5\r\ncalls\r\n:3\r\n$14\r\nhistogram_usec\r\n*2\r\n:1\r\n:3\r\n"
            )
        );
    }

    #[test]
    fn a_command_every_node_ran_once_per_call_counts_once() {
        let node = |calls: u8| {
            b(&format!(
                "*4\r\n$3\r\nset\r\n*4\r\n$5\r\ncalls\r\n:{calls}\r\n$14\r\nhistogram_usec\r\n*2\r\n:1\r\n:{calls}\r\n\
                 $16\r\nconfig|resetstat\r\n*4\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n*2\r\n:128\r\n:1\r\n"
            ))
        };
        let everywhere = |name: &str| name == "config|resetstat";
        let merged = combine(
            Merge::LatencyHistogram,
            &[],
            &[node(1), node(2), node(0)],
            &[],
            &everywhere,
        );
        assert_eq!(
            merged,
            b(
                "*4\r\n$3\r\nset\r\n*4\r\n$5\r\ncalls\r\n:3\r\n$14\r\nhistogram_usec\r\n*2\r\n:1\r\n:3\r\n\
               $16\r\nconfig|resetstat\r\n*4\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n*2\r\n:128\r\n:1\r\n"
            )
        );

        let info = |calls: u8| {
            write::bulk(format!(
                "# Commandstats\r\ncmdstat_set:calls={calls},usec=4,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\
                 cmdstat_config|set:calls=2,usec=6,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n"
            ).as_bytes())
        };
        let everywhere = |name: &str| name == "config|set";
        let merged = combine(Merge::Info, &[], &[info(1), info(3)], &[], &everywhere);
        let text = String::from_utf8_lossy(&merged).into_owned();
        assert!(text.contains("cmdstat_set:calls=4,usec=8,"), "{text}");
        assert!(
            text.contains("cmdstat_config|set:calls=2,usec=6,usec_per_call=3.00,"),
            "{text}"
        );
    }
}
