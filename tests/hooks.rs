//! Hooks (`[[hooks]]`) seen from a Redis client: `RUNHOOK name [param value ...]`, writes that
//! match an `on_write` template (the hook's keys are gone before the write's reply arrives),
//! writes inside MULTI/EXEC, and the second removal after `delay_ms`. What keyward removed is
//! always read from Redis directly, right after the reply.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::in_process::InProcess;
use support::*;

const HOOKS: &str = "[[hooks]]\nname = \"product-updated\"\n\
     remove = [\"cache:product:{id}\", \"cache:product:{id}:reviews\", \"cache:home\"]\n\
     on_write = [\"product:{id}\"]\n\
     [[hooks]]\nname = \"user-changed\"\n\
     remove = [\"cache:user:{uid}\"]\n\
     on_write = [\"user:{uid}:profile\"]\n\
     [[hooks]]\nname = \"menu\"\n\
     remove = [\"cache:menu\"]\n";

const PRODUCT_KEYS: [&str; 3] = ["cache:product:{}", "cache:product:{}:reviews", "cache:home"];

fn product_keys(id: &str) -> Vec<String> {
    PRODUCT_KEYS.iter().map(|t| t.replace("{}", id)).collect()
}

fn start(extra: &str) -> (RedisServer, InProcess) {
    let redis = RedisServer::start();
    let keyward = InProcess::standalone(&redis.addr(), extra);
    (redis, keyward)
}

/// Sets the three cache keys of product `id` on Redis directly.
fn preset(redis: &RedisServer, id: &str) {
    let mut pipe = redis::pipe();
    for k in product_keys(id) {
        pipe.cmd("SET").arg(k).arg("cached").ignore();
    }
    let () = pipe.query(&mut redis.conn()).expect("SET on redis");
}

/// Which of `keys` exist on Redis, read directly.
fn existing(redis: &RedisServer, keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| redis.exists(k.as_bytes()))
        .cloned()
        .collect()
}

fn error(reply: &Reply) -> &str {
    reply
        .error_text()
        .unwrap_or_else(|| panic!("expected an error reply, got {reply:?}"))
}

#[test]
fn runhook_removes_the_hooks_keys_and_answers_how_many() {
    let (redis, keyward) = start(HOOKS);
    let mut c = keyward.raw_conn();
    preset(&redis, "7");
    preset(&redis, "42");
    assert_eq!(
        c.request(&["RUNHOOK", "product-updated", "id", "42"]),
        Reply::Int(3)
    );
    assert_eq!(existing(&redis, &product_keys("42")), Vec::<String>::new());
    assert_eq!(
        existing(&redis, &product_keys("7")),
        ["cache:product:7", "cache:product:7:reviews"],
        "only product 42's keys (and the shared one)"
    );
    assert_eq!(
        c.request(&["RUNHOOK", "product-updated", "id", "42"]),
        Reply::Int(0)
    );
    assert_eq!(
        c.request(&["runhook", "product-updated", "id", "7"]),
        Reply::Int(2),
        "case-insensitive command name; cache:home was already gone"
    );

    // A hook without parameters.
    redis.cli(&["SET", "cache:menu", "x"]);
    assert_eq!(c.request(&["RUNHOOK", "menu"]), Reply::Int(1));
    assert!(!redis.exists(b"cache:menu"));

    // Through a client library.
    preset(&redis, "9");
    let removed: i64 = redis::cmd("RUNHOOK")
        .arg("product-updated")
        .arg("id")
        .arg("9")
        .query(&mut redis_conn(&keyward.addr()))
        .expect("RUNHOOK through redis-rs");
    assert_eq!(removed, 3);

    // Refusals: nothing is deleted.
    preset(&redis, "42");
    let unknown = c.request(&["RUNHOOK", "no-such-hook", "id", "42"]);
    assert!(error(&unknown).starts_with("ERR"), "{unknown:?}");
    let missing = c.request(&["RUNHOOK", "product-updated"]);
    assert!(error(&missing).contains("id"), "{missing:?}");
    let other = c.request(&["RUNHOOK", "product-updated", "uid", "42"]);
    assert!(error(&other).contains("id"), "{other:?}");
    let wildcard = c.request(&["RUNHOOK", "product-updated", "id", "4*"]);
    assert!(error(&wildcard).contains("wildcard_chars"), "{wildcard:?}");
    let wildcard = c.request(&["RUNHOOK", "product-updated", "id", "[0-9]"]);
    assert!(error(&wildcard).contains("wildcard_chars"), "{wildcard:?}");
    assert!(c.request(&["RUNHOOK"]).is_error());
    assert_eq!(
        existing(&redis, &product_keys("42")),
        product_keys("42"),
        "a refused RUNHOOK deletes nothing"
    );
    // The session is still usable.
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn a_matching_write_removes_the_hooks_keys_before_its_reply() {
    let (redis, keyward) = start(HOOKS);
    let mut c = keyward.raw_conn();
    let keys42 = product_keys("42");

    // SET, then the keys are gone the moment the reply is in.
    preset(&redis, "42");
    assert_eq!(c.request(&["SET", "product:42", "x"]), Reply::ok());
    assert_eq!(existing(&redis, &keys42), Vec::<String>::new(), "after SET");
    assert_eq!(
        redis.cli(&["GET", "product:42"]).trim(),
        "x",
        "the write happened"
    );

    // A read does not trigger; a write that fails does not trigger.
    preset(&redis, "42");
    assert_eq!(c.request(&["GET", "product:42"]), Reply::bulk("x"));
    let failed = c.request(&["INCR", "product:42"]);
    assert!(failed.is_error(), "{failed:?}");
    let wrongtype = c.request(&["HSET", "product:42", "f", "v"]);
    assert!(wrongtype.is_error(), "{wrongtype:?}");
    assert_eq!(
        existing(&redis, &keys42),
        keys42,
        "after a read and failed writes"
    );

    // A write to a key no template matches.
    assert_eq!(c.request(&["SET", "other:1", "x"]), Reply::ok());
    assert_eq!(c.request(&["SET", "products:42", "x"]), Reply::ok());
    assert_eq!(existing(&redis, &keys42), keys42, "after unrelated writes");

    // DEL is a write; then HSET on the (now missing) key.
    assert_eq!(c.request(&["DEL", "product:42"]), Reply::Int(1));
    assert_eq!(existing(&redis, &keys42), Vec::<String>::new(), "after DEL");
    preset(&redis, "42");
    assert_eq!(c.request(&["HSET", "product:42", "f", "v"]), Reply::Int(1));
    assert_eq!(
        existing(&redis, &keys42),
        Vec::<String>::new(),
        "after HSET"
    );

    // Through a client library.
    preset(&redis, "7");
    let () = redis::cmd("SET")
        .arg("product:7")
        .arg("a")
        .query(&mut redis_conn(&keyward.addr()))
        .expect("SET through keyward");
    assert_eq!(existing(&redis, &product_keys("7")), Vec::<String>::new());

    // A template with text after the placeholder: `user:{uid}:profile`.
    let set_user_caches = || redis.cli(&["MSET", "cache:user:5", "1", "cache:user:", "1"]);
    set_user_caches();
    assert_eq!(c.request(&["SET", "user:5:settings", "x"]), Reply::ok());
    assert_eq!(c.request(&["SET", "user::profile", "x"]), Reply::ok());
    assert!(
        redis.exists(b"cache:user:5"),
        "user:5:settings is not a profile"
    );
    assert!(
        redis.exists(b"cache:user:"),
        "an empty placeholder matches nothing"
    );
    assert_eq!(c.request(&["SET", "user:5:profile", "x"]), Reply::ok());
    assert!(!redis.exists(b"cache:user:5"), "after SET user:5:profile");

    // Pipelined: each reply comes after its own removal.
    preset(&redis, "1");
    preset(&redis, "2");
    let mut pipeline = resp_str(&["SET", "product:1", "a"]);
    pipeline.extend(resp_str(&["SET", "product:2", "b"]));
    c.send(&pipeline);
    assert_eq!(c.read_reply(IO_TIMEOUT), Reply::ok());
    assert_eq!(existing(&redis, &product_keys("1")), Vec::<String>::new());
    assert_eq!(c.read_reply(IO_TIMEOUT), Reply::ok());
    assert_eq!(existing(&redis, &product_keys("2")), Vec::<String>::new());
}

#[test]
fn inside_multi_hooks_run_after_exec_for_the_writes_that_succeeded() {
    let (redis, keyward) = start(HOOKS);
    let mut c = keyward.raw_conn();
    preset(&redis, "42");
    preset(&redis, "43");
    redis.cli(&["SET", "product:43", "not-a-number"]);

    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.request(&["SET", "product:42", "x"]),
        Reply::simple("QUEUED")
    );
    assert_eq!(c.request(&["INCR", "product:43"]), Reply::simple("QUEUED"));
    assert_eq!(
        existing(&redis, &product_keys("42")),
        product_keys("42"),
        "nothing runs before EXEC"
    );
    let exec = c.request(&["EXEC"]);
    let Reply::Array(replies) = &exec else {
        panic!("EXEC: {exec:?}");
    };
    assert_eq!(replies[0], Reply::ok(), "{exec:?}");
    assert!(replies[1].is_error(), "{exec:?}");
    assert_eq!(
        existing(&redis, &product_keys("42")),
        Vec::<String>::new(),
        "the queued SET succeeded"
    );
    assert_eq!(
        existing(&redis, &product_keys("43")),
        ["cache:product:43", "cache:product:43:reviews"],
        "the queued INCR failed (cache:home went with product 42)"
    );

    // DISCARD: nothing ran, nothing is removed.
    preset(&redis, "42");
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.request(&["SET", "product:42", "y"]),
        Reply::simple("QUEUED")
    );
    assert_eq!(c.request(&["DISCARD"]), Reply::ok());
    assert_eq!(existing(&redis, &product_keys("42")), product_keys("42"));

    // An EXEC that a WATCH aborts runs nothing either.
    let mut other = redis.conn();
    assert_eq!(c.request(&["WATCH", "product:42"]), Reply::ok());
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.request(&["SET", "product:42", "z"]),
        Reply::simple("QUEUED")
    );
    let () = redis::cmd("SET")
        .arg("product:42")
        .arg("changed-by-someone-else")
        .query(&mut other)
        .expect("SET on redis");
    let aborted = c.request(&["EXEC"]);
    assert!(
        matches!(aborted, Reply::NilArray | Reply::Null),
        "{aborted:?}"
    );
    assert_eq!(existing(&redis, &product_keys("42")), product_keys("42"));
}

#[test]
fn delay_ms_removes_the_keys_a_second_time() {
    const DELAY: Duration = Duration::from_millis(1000);
    let extra = format!(
        "[[hooks]]\nname = \"item\"\nremove = [\"cache:item:{{id}}\"]\n\
         on_write = [\"item:{{id}}\"]\ndelay_ms = {}\n",
        DELAY.as_millis()
    );
    let (redis, keyward) = start(&extra);
    let mut c = keyward.raw_conn();

    // Triggered by a write, then by RUNHOOK.
    for (id, trigger) in [
        ("1", vec!["SET", "item:1", "v"]),
        ("2", vec!["RUNHOOK", "item", "id", "2"]),
    ] {
        let cache = format!("cache:item:{id}");
        redis.cli(&["SET", &cache, "old"]);
        let t0 = Instant::now();
        let reply = c.request(&trigger);
        assert!(!reply.is_error(), "{trigger:?}: {reply:?}");
        assert!(
            !redis.exists(cache.as_bytes()),
            "{trigger:?}: the first removal is at once"
        );
        // A reader refills the cache with what it read before the write.
        redis.cli(&["SET", &cache, "stale"]);
        thread::sleep(Duration::from_millis(300));
        if t0.elapsed() < DELAY - Duration::from_millis(200) {
            assert!(
                redis.exists(cache.as_bytes()),
                "{trigger:?}: removed again after {:?}, before delay_ms",
                t0.elapsed()
            );
        }
        let gone = wait_until(DELAY + Duration::from_secs(2), || {
            !redis.exists(cache.as_bytes())
        });
        let at = t0.elapsed();
        assert!(
            gone,
            "{trigger:?}: {cache} was not removed again after delay_ms"
        );
        assert!(
            at >= DELAY - Duration::from_millis(50),
            "{trigger:?}: removed again after {at:?}, before delay_ms"
        );
    }
}

/// One command that writes several keys of one hook's template triggers the hook for each key,
/// with that key's parameters.
#[test]
fn a_write_of_several_matching_keys_triggers_the_hook_for_each() {
    let (redis, keyward) = start(HOOKS);
    let mut c = keyward.raw_conn();
    let both = |a: &str, b: &str| {
        let mut keys = product_keys(a);
        keys.extend(product_keys(b));
        keys
    };

    preset(&redis, "7");
    preset(&redis, "8");
    let reply = c.request(&["MSET", "product:7", "a", "product:8", "b"]);
    assert_eq!(reply, Reply::ok());
    let after_mset = existing(&redis, &both("7", "8"));

    preset(&redis, "7");
    preset(&redis, "8");
    assert_eq!(c.request(&["DEL", "product:7", "product:8"]), Reply::Int(2));
    let after_del = existing(&redis, &both("7", "8"));

    preset(&redis, "5");
    preset(&redis, "6");
    let reply = c.request(&[
        "MSET",
        "product:5",
        "a",
        "user:6:profile",
        "b",
        "product:6",
        "c",
    ]);
    assert_eq!(reply, Reply::ok());
    let after_mixed = existing(&redis, &both("5", "6"));

    assert_eq!(
        (after_mset, after_del, after_mixed),
        (vec![], vec![], vec![]),
        "caches left after MSET product:7 product:8, after DEL product:7 product:8, after \
         MSET product:5 user:6:profile product:6"
    );
}
