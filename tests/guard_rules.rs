//! The delete guard end to end: REMOVEKEYS / DEL / UNLINK through the real binary, with every
//! outcome checked on Redis directly (a refusal must delete nothing).

mod support;

use std::time::Duration;

use support::*;

const T: Duration = IO_TIMEOUT;

/// Sets every key to "1" on Redis directly.
fn seed(redis: &RedisServer, keys: &[&[u8]]) {
    let mut con = redis.conn();
    for k in keys {
        let _: () = redis::cmd("SET")
            .arg(*k)
            .arg("1")
            .query(&mut con)
            .expect("seed SET");
    }
}

fn count_existing(redis: &RedisServer, keys: &[&[u8]]) -> usize {
    keys.iter().filter(|k| redis.exists(k)).count()
}

fn request_bytes(c: &mut RawConn, args: &[&[u8]]) -> Reply {
    c.cmd_bytes(args);
    c.read_reply(T)
}

fn assert_guard_error(reply: &Reply, needles: &[&str]) {
    let text = reply
        .error_text()
        .unwrap_or_else(|| panic!("expected a guard error, got {reply:?}"));
    assert!(
        text.starts_with("ERR keyward guard:"),
        "error must start with 'ERR keyward guard:': {text}"
    );
    for needle in needles {
        assert!(text.contains(needle), "error lacks {needle:?}: {text}");
    }
}

#[test]
fn removekeys_counts_removed_keys_and_skips_missing_ones() {
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"k1", b"k2", b"untouched"]);
    let mut c = kw.raw_conn();
    assert_eq!(
        c.request(&["REMOVEKEYS", "k1", "k2", "missing"]),
        Reply::Int(2)
    );
    assert!(!redis.exists(b"k1") && !redis.exists(b"k2"));
    assert!(redis.exists(b"untouched"));
    assert_eq!(c.request(&["REMOVEKEYS", "k1", "missing"]), Reply::Int(0));
    assert_eq!(kw.cli(&["REMOVEKEYS", "untouched"]).trim(), "1");
    assert!(!redis.exists(b"untouched"));
}

#[test]
fn delete_commands_are_recognised_in_any_letter_case() {
    let (redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    for (i, name) in [
        "removekeys",
        "ReMoVeKeYs",
        "REMOVEKEYS",
        "del",
        "Del",
        "unlink",
        "uNLINK",
    ]
    .iter()
    .enumerate()
    {
        let a = format!("case{i}:a");
        let b = format!("case{i}:b");
        seed(&redis, &[a.as_bytes(), b.as_bytes()]);
        assert_eq!(
            c.request(&[*name, a.as_str(), b.as_str()]),
            Reply::Int(2),
            "{name}"
        );
        assert_eq!(count_existing(&redis, &[a.as_bytes(), b.as_bytes()]), 0);

        // The same spelling is guarded too.
        let star = format!("case{i}:*");
        let reply = c.request(&[*name, a.as_str(), star.as_str()]);
        assert_guard_error(&reply, &["wildcard", &star, "nothing was deleted"]);
    }
}

/// Redis compares command names only up to a NUL byte, so `DEL\0NNN` can run as DEL. The guard
/// must see it as DEL too, whatever follows the NUL.
#[test]
fn a_nul_byte_in_the_command_name_does_not_bypass_the_guard() {
    let (redis, kw) = start_pair("");
    redis.cli(&["SET", "user:*", "precious"]);
    let mut c = kw.raw_conn();
    for n in 0..400 {
        let name = format!("DEL\0{n}");
        let reply = c.request_bytes(&[name.as_bytes(), b"user:*"]);
        assert!(
            reply
                .error_text()
                .is_some_and(|e| e.contains("keyward guard")),
            "DEL\\0{n} user:* got {reply:?}"
        );
    }
    for n in 0..400 {
        let name = format!("FLUSHALL\0{n}");
        let reply = c.request_bytes(&[name.as_bytes()]);
        assert!(
            reply
                .error_text()
                .is_some_and(|e| e.contains("deny_commands")),
            "FLUSHALL\\0{n} got {reply:?}"
        );
    }
    assert!(redis.exists(b"user:*"), "the key was deleted");
}

#[test]
fn wildcard_anywhere_in_any_key_refuses_the_whole_request() {
    let (redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    let mut case = 0;
    for cmd in ["DEL", "UNLINK", "REMOVEKEYS"] {
        for bad_key in ["x*", "*", "a?c", "?", "user[1]", "[", "mid*dle"] {
            for position in [0usize, 2, 4] {
                case += 1;
                let mut keys: Vec<String> = (0..4).map(|i| format!("w{case}:{i}")).collect();
                keys.insert(position, bad_key.to_string());
                let key_bytes: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
                // The offending key exists literally too: it must survive as well.
                seed(&redis, &key_bytes);

                let mut args = vec![cmd];
                args.extend(keys.iter().map(String::as_str));
                let reply = c.request(&args);
                assert_guard_error(&reply, &["wildcard", bad_key, "nothing was deleted"]);
                assert_eq!(
                    count_existing(&redis, &key_bytes),
                    5,
                    "{cmd} {keys:?} deleted something"
                );
            }
        }
    }
    // The connection stays usable after refusals.
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn more_than_max_keys_is_refused_and_exactly_max_keys_is_accepted() {
    let (redis, kw) = start_pair("");
    let keys: Vec<String> = (0..1001).map(|i| format!("many:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg("v");
    }
    let _: () = mset.query(&mut redis.conn()).expect("MSET on redis");

    let mut c = kw.raw_conn();
    for cmd in ["REMOVEKEYS", "DEL", "unlink"] {
        let mut args = vec![cmd];
        args.extend(keys.iter().map(String::as_str));
        let reply = c.request(&args);
        assert_guard_error(&reply, &["max_keys", "1000", "nothing was deleted"]);
        assert_eq!(redis.cli(&["DBSIZE"]).trim(), "1001", "{cmd} deleted keys");
    }

    let mut args = vec!["REMOVEKEYS"];
    args.extend(keys[..1000].iter().map(String::as_str));
    assert_eq!(c.request(&args), Reply::Int(1000));
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "1");
    assert!(redis.exists(b"many:1000"));
}

#[test]
fn removekeys_without_keys_is_an_arity_error() {
    let (_redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    assert_eq!(
        c.request(&["REMOVEKEYS"]),
        Reply::Error("ERR wrong number of arguments for 'removekeys' command".into())
    );
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn hash_tags_empty_and_binary_keys_are_ordinary_keys() {
    let (redis, kw) = start_pair("");
    let keys: [&[u8]; 5] = [b"{user}:1", b"{user}:2", b"", b"bin\0\xff\r\nkey", b"{}"];
    seed(&redis, &keys);
    let mut c = kw.raw_conn();
    let mut args: Vec<&[u8]> = vec![b"REMOVEKEYS"];
    args.extend(keys.iter());
    assert_eq!(request_bytes(&mut c, &args), Reply::Int(5));
    assert_eq!(count_existing(&redis, &keys), 0);

    seed(&redis, &keys);
    let mut args: Vec<&[u8]> = vec![b"DEL"];
    args.extend(keys.iter());
    assert_eq!(request_bytes(&mut c, &args), Reply::Int(5));
    assert_eq!(count_existing(&redis, &keys), 0);
}

#[test]
fn a_refusal_keeps_its_place_in_a_pipeline() {
    let (redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    let mut batch = resp_str(&["SET", "x", "1"]);
    batch.extend(resp_str(&["DEL", "x*"]));
    batch.extend(resp_str(&["GET", "x"]));
    c.send(&batch);
    let replies = c.read_n_replies(3, T);
    assert_eq!(replies[0], Reply::ok());
    assert_guard_error(&replies[1], &["wildcard", "x*", "nothing was deleted"]);
    assert_eq!(replies[2], Reply::bulk("1"));

    // Longer mix, with an accepted REMOVEKEYS in the middle.
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend(resp_str(&["SET", &format!("p{i}"), "v"]));
        if i % 10 == 0 {
            batch.extend(resp_str(&["UNLINK", &format!("p{i}"), "p?"]));
        } else {
            batch.extend(resp_str(&["REMOVEKEYS", &format!("p{i}")]));
        }
        batch.extend(resp_str(&["ECHO", &format!("after-{i}")]));
    }
    c.send(&batch);
    let replies = c.read_n_replies(150, T);
    for i in 0..50 {
        assert_eq!(replies[3 * i], Reply::ok(), "SET #{i}");
        if i % 10 == 0 {
            assert_guard_error(&replies[3 * i + 1], &["p?"]);
            assert!(redis.exists(format!("p{i}").as_bytes()));
        } else {
            assert_eq!(replies[3 * i + 1], Reply::Int(1), "REMOVEKEYS #{i}");
            assert!(!redis.exists(format!("p{i}").as_bytes()));
        }
        assert_eq!(replies[3 * i + 2], Reply::bulk(format!("after-{i}")));
    }
}

#[test]
fn refused_command_inside_multi_aborts_the_transaction() {
    let (redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    let mut batch = resp_str(&["MULTI"]);
    batch.extend(resp_str(&["SET", "a", "1"]));
    batch.extend(resp_str(&["DEL", "a*"]));
    batch.extend(resp_str(&["EXEC"]));
    c.send(&batch);
    let replies = c.read_n_replies(4, T);
    assert_eq!(replies[0], Reply::ok());
    assert_eq!(replies[1], Reply::simple("QUEUED"));
    assert_guard_error(&replies[2], &["wildcard", "a*"]);
    let exec = replies[3].error_text().unwrap_or_default();
    assert!(exec.starts_with("EXECABORT"), "{:?}", replies[3]);
    assert!(!redis.exists(b"a"), "EXECABORT must apply nothing");
    // Out of the transaction again.
    assert_eq!(c.request(&["GET", "a"]), Reply::Nil);
}

#[test]
fn accepted_removekeys_is_queued_inside_multi() {
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"a", b"b"]);
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.request(&["REMOVEKEYS", "a", "b"]),
        Reply::simple("QUEUED")
    );
    assert!(redis.exists(b"a"), "nothing runs before EXEC");
    assert_eq!(c.request(&["EXEC"]), Reply::Array(vec![Reply::Int(2)]));
    assert_eq!(count_existing(&redis, &[b"a", b"b"]), 0);
}

#[test]
fn deny_commands_refuses_flushall_by_default() {
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"keep"]);
    let mut c = kw.raw_conn();
    for cmd in ["FLUSHALL", "flushall", "FLUSHDB"] {
        let reply = c.request(&[cmd]);
        let text = reply
            .error_text()
            .unwrap_or_else(|| panic!("{cmd} must be refused, got {reply:?}"));
        assert!(text.to_uppercase().contains(&cmd.to_uppercase()), "{text}");
        assert!(text.contains("deny_commands"), "{text}");
        assert!(redis.exists(b"keep"), "{cmd} ran");
    }
    let out = kw.cli(&["FLUSHALL", "ASYNC"]);
    assert!(out.contains("deny_commands"), "{out}");
    assert!(redis.exists(b"keep"));
}

#[test]
fn empty_deny_commands_allows_flushall() {
    let (redis, kw) = start_pair("deny_commands = []");
    seed(&redis, &[b"gone"]);
    assert_eq!(kw.cli(&["FLUSHALL"]).trim(), "OK");
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
}

#[test]
fn inline_delete_with_wildcard_is_refused() {
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"a*", b"ab"]);
    let mut c = kw.raw_conn();
    c.send(b"DEL a*\r\n");
    assert_guard_error(&c.read_reply(T), &["wildcard", "a*", "nothing was deleted"]);
    c.send(b"unlink ab \"a*\"\r\n");
    assert_guard_error(&c.read_reply(T), &["wildcard", "a*"]);
    assert_eq!(count_existing(&redis, &[b"a*", b"ab"]), 2);
    c.send(b"REMOVEKEYS ab\r\n");
    assert_eq!(c.read_reply(T), Reply::Int(1));
    assert!(!redis.exists(b"ab"));
}

#[test]
fn custom_limits_wildcards_and_delete_command() {
    let (redis, kw) = start_pair(
        "max_keys = 3\nwildcard_chars = \"*\"\ndelete_command = \"DEL\"\ndeny_commands = []",
    );
    let mut c = kw.raw_conn();

    // `?` and `[` are ordinary characters now; `*` is still refused.
    seed(&redis, &[b"a?", b"b[1]"]);
    assert_eq!(c.request(&["REMOVEKEYS", "a?", "b[1]"]), Reply::Int(2));
    assert_eq!(count_existing(&redis, &[b"a?", b"b[1]"]), 0);
    seed(&redis, &[b"c*"]);
    assert_guard_error(&c.request(&["DEL", "c*"]), &["wildcard", "c*"]);
    assert!(redis.exists(b"c*"));

    // max_keys = 3.
    seed(&redis, &[b"k1", b"k2", b"k3", b"k4"]);
    assert_guard_error(
        &c.request(&["REMOVEKEYS", "k1", "k2", "k3", "k4"]),
        &["max_keys", "3", "nothing was deleted"],
    );
    assert_eq!(count_existing(&redis, &[b"k1", b"k2", b"k3", b"k4"]), 4);

    // REMOVEKEYS runs as DEL upstream.
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).trim(), "OK");
    assert_eq!(c.request(&["REMOVEKEYS", "k1", "k2", "k3"]), Reply::Int(3));
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_del:calls=1,"), "{stats}");
    assert!(!stats.contains("cmdstat_unlink"), "{stats}");
}

#[test]
fn removekeys_runs_as_unlink_by_default() {
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"u1", b"u2"]);
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).trim(), "OK");
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["REMOVEKEYS", "u1", "u2"]), Reply::Int(2));
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_unlink:calls=1,"), "{stats}");
    assert!(!stats.contains("cmdstat_del:"), "{stats}");
}

#[test]
fn audit_log_has_one_line_per_guarded_request() {
    let (redis, kw) = start_pair("");
    let keys: Vec<String> = (0..13).map(|i| format!("audit:{i}")).collect();
    let key_bytes: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    seed(&redis, &key_bytes[..11]);
    let mut c = kw.raw_conn();
    let mut args = vec!["REMOVEKEYS"];
    args.extend(keys.iter().map(String::as_str));
    assert_eq!(c.request(&args), Reply::Int(11));
    let mut args = vec!["UNLINK"];
    args.extend(keys.iter().map(String::as_str));
    args.extend(["audit:extra1", "audit:extra2", "audit:extra3", "audit:*"]);
    assert_eq!(args.len() - 1, 17);
    assert_guard_error(&c.request(&args), &["wildcard", "audit:*"]);

    let has_token = |line: &str, token: &str| {
        line.split(|ch: char| !ch.is_ascii_alphanumeric())
            .any(|t| t == token)
    };
    let is_removed_line = |l: &str| {
        let lower = l.to_lowercase();
        lower.contains("removekeys") && lower.contains("removed") && has_token(l, "13")
    };
    let removed = kw.wait_log_line(Duration::from_secs(3), is_removed_line);
    assert!(
        removed.is_some(),
        "no audit line for the accepted REMOVEKEYS (13 keys, removed); log:\n{}",
        kw.log()
    );
    let removed_lines = kw.log().lines().filter(|l| is_removed_line(l)).count();
    assert_eq!(
        removed_lines,
        1,
        "one audit line per request; log:\n{}",
        kw.log()
    );
    let refused = kw.wait_log_line(Duration::from_secs(3), |l| {
        let lower = l.to_lowercase();
        lower.contains("unlink") && lower.contains("refused") && has_token(l, "17")
    });
    assert!(
        refused.is_some(),
        "no audit line for the refused UNLINK (17 keys, refused); log:\n{}",
        kw.log()
    );
}

#[test]
fn guard_through_redis_rs() {
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"r1", b"r2", b"r3"]);
    let mut con = kw.conn();
    let n: i64 = redis::cmd("REMOVEKEYS")
        .arg("r1")
        .arg("r2")
        .arg("nope")
        .query(&mut con)
        .expect("REMOVEKEYS");
    assert_eq!(n, 2);
    let err = redis::cmd("DEL")
        .arg("r3")
        .arg("r?")
        .query::<i64>(&mut con)
        .expect_err("DEL r? must be refused");
    let text = err.to_string();
    assert!(text.contains("keyward guard"), "{text}");
    assert!(text.contains("r?"), "{text}");
    assert!(redis.exists(b"r3"));
    let n: i64 = redis::cmd("UNLINK").arg("r3").query(&mut con).unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn guard_through_fred() {
    use fred::prelude::*;
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"f1", b"f2", b"f3"]);
    let client = fred_client(&kw.addr()).await;

    let n: i64 = client
        .custom(fred::cmd!("REMOVEKEYS"), vec!["f1", "f2", "missing"])
        .await
        .expect("REMOVEKEYS through fred");
    assert_eq!(n, 2);
    let err = client
        .del::<i64, _>(vec!["f3", "f*"])
        .await
        .expect_err("DEL f* must be refused");
    let text = err.details().to_string();
    assert!(text.contains("keyward guard"), "{text}");
    assert!(text.contains("nothing was deleted"), "{text}");
    let err = client
        .custom::<Value, _>(fred::cmd!("REMOVEKEYS"), Vec::<String>::new())
        .await
        .expect_err("REMOVEKEYS without keys");
    assert!(
        err.details().contains("wrong number of arguments"),
        "{err:?}"
    );
    // Still usable afterwards.
    let n: i64 = client.unlink("f3").await.expect("UNLINK");
    assert_eq!(n, 1);
    let _ = client.quit().await;
    assert_eq!(count_existing(&redis, &[b"f1", b"f2", b"f3"]), 0);
}

#[test]
fn refusals_right_after_forwarded_replies_are_never_lost() {
    // Request, reply, request, reply: each refusal is answered locally right after an upstream
    // reply was delivered. A lost wake-up in the reply queue shows here as a read timeout.
    let (redis, kw) = start_pair("");
    seed(&redis, &[b"x"]);
    let mut c = kw.raw_conn();
    for i in 0..300 {
        assert_eq!(c.request(&["GET", "x"]), Reply::bulk("1"), "GET #{i}");
        c.cmd(&["DEL", "x", "x*"]);
        let reply = c.try_read_reply(Duration::from_secs(3)).unwrap_or_else(|| {
            panic!(
                "no reply to the refused DEL #{i} within 3 s; log:\n{}",
                kw.log()
            )
        });
        assert_guard_error(&reply, &["wildcard", "x*"]);
        let reply = c.request(&["FLUSHALL"]);
        assert!(
            reply
                .error_text()
                .is_some_and(|e| e.contains("deny_commands")),
            "FLUSHALL #{i}: {reply:?}"
        );
    }
    assert!(redis.exists(b"x"));
}

/// The audit line of `command` whose outcome is `outcome`, waited for.
fn audit_line(kw: &Keyward, command: &str, outcome: &str) -> String {
    let command = format!("command={command} ");
    let outcome = format!("outcome={outcome} ");
    kw.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("keyward::audit") && l.contains(&command) && l.contains(&outcome)
    })
    .unwrap_or_else(|| panic!("no audit line `{command}... {outcome}`; log:\n{}", kw.log()))
}

#[test]
fn dry_run_forwards_a_wildcard_delete_and_logs_the_rule() {
    let (redis, kw) = start_pair("mode = \"dry-run\"");
    seed(&redis, &[b"plain", b"user:*"]);
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["DEL", "plain", "user:*"]), Reply::Int(2));
    assert_eq!(count_existing(&redis, &[b"plain", b"user:*"]), 0);
    let would = audit_line(&kw, "DEL", "would refuse: wildcard_chars");
    assert!(would.contains("keys=2 "), "{would}");
    // And, as for any forwarded delete, the line of its reply.
    audit_line(&kw, "DEL", "removed 2");
    assert!(!kw.log().contains("outcome=refused"), "{}", kw.log());
    // keyward does not authenticate clients here: it does not know a user to name.
    assert!(!would.contains("user="), "{would}");
}

#[test]
fn dry_run_forwards_removekeys_over_max_keys_as_the_delete_command() {
    let (redis, kw) = start_pair("mode = \"dry-run\"");
    let keys: Vec<String> = (0..1001).map(|i| format!("many:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg("v");
    }
    let _: () = mset.query(&mut redis.conn()).expect("MSET on redis");
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).trim(), "OK");

    let mut c = kw.raw_conn();
    let mut args = vec!["REMOVEKEYS"];
    args.extend(keys.iter().map(String::as_str));
    assert_eq!(c.request(&args), Reply::Int(1001));
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_unlink:calls=1,"), "{stats}");
    let would = audit_line(&kw, "REMOVEKEYS", "would refuse: max_keys");
    assert!(would.contains("keys=1001 "), "{would}");
    audit_line(&kw, "REMOVEKEYS", "removed 1001");
}

#[test]
fn dry_run_forwards_a_denied_flushall() {
    let (redis, kw) = start_pair("mode = \"dry-run\"");
    seed(&redis, &[b"gone"]);
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["FLUSHALL"]), Reply::ok());
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
    audit_line(&kw, "FLUSHALL", "would refuse: deny_commands");
    // A malformed REMOVEKEYS breaks no rule: it is still answered with the arity error.
    assert_eq!(
        c.request(&["REMOVEKEYS"]),
        Reply::Error("ERR wrong number of arguments for 'removekeys' command".into())
    );
}

#[test]
fn enforce_mode_written_out_refuses_as_before() {
    let (redis, kw) = start_pair("mode = \"enforce\"");
    seed(&redis, &[b"keep", b"user:*"]);
    let mut c = kw.raw_conn();
    assert_guard_error(
        &c.request(&["DEL", "keep", "user:*"]),
        &["wildcard", "nothing was deleted"],
    );
    let reply = c.request(&["FLUSHALL"]);
    assert!(
        reply
            .error_text()
            .is_some_and(|e| e.contains("deny_commands")),
        "{reply:?}"
    );
    assert_eq!(count_existing(&redis, &[b"keep", b"user:*"]), 2);
    audit_line(&kw, "DEL", "refused: wildcard_chars");
    audit_line(&kw, "FLUSHALL", "refused: deny_commands");
    assert!(!kw.log().contains("would refuse"), "{}", kw.log());
}

/// `--log-format json`: every log line is one JSON object, and the audit line's fields are
/// members of it, numbers as numbers.
#[test]
fn json_logs_carry_the_audit_fields_as_members() {
    let redis = RedisServer::start();
    let extra = "[server]\npassword = \"pw\"\n[guard]\nmode = \"dry-run\"";
    let kw = Keyward::start_with_args(&redis.addr(), extra, &["--log-format", "json"]);
    seed(&redis, &[b"j1", b"j2"]);
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["AUTH", "pw"]), Reply::ok());
    assert_eq!(c.request(&["REMOVEKEYS", "j1", "j2", "j3"]), Reply::Int(2));
    assert_eq!(c.request(&["DEL", "j*"]), Reply::Int(0));

    let audit_lines = || -> Vec<serde_json::Value> {
        kw.log()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"))
            })
            .filter(|v| v["target"] == "keyward::audit")
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(3), || audit_lines().len() >= 3),
        "log:\n{}",
        kw.log()
    );
    let lines = audit_lines();
    let find = |command: &str, outcome: &str| {
        lines
            .iter()
            .find(|v| v["command"] == command && v["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {command} {outcome} line in {lines:#?}"))
    };
    let removed = find("REMOVEKEYS", "removed 2");
    assert_eq!(removed["user"], "default");
    assert_eq!(removed["keys"], 3);
    assert_eq!(removed["level"], "INFO");
    assert!(removed["duration_us"].is_u64(), "{removed}");
    let client: std::net::SocketAddr = removed["client"]
        .as_str()
        .expect("client is a string")
        .parse()
        .expect("client is an address");
    assert!(client.ip().is_loopback());
    let would = find("DEL", "would refuse: wildcard_chars");
    assert_eq!(would["user"], "default");
    assert_eq!(would["keys"], 1);
    find("DEL", "removed 0");
}
