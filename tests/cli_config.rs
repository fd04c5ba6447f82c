//! The real `keyward` binary's command line and configuration handling: flags, environment
//! variables, `--check-config` and exit statuses. Nothing here starts the proxy.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::{keyward_command, run_with_timeout};

/// `keyward` with `args`, in an empty directory (so no ./proxy.toml is picked up) and with none
/// of the environment variables that would change its behaviour, except those in `env`; it must
/// exit within 10 s.
fn keyward(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = keyward_command();
    command.args(args).current_dir(dir.path());
    command.envs(env.iter().copied());
    run_with_timeout(&mut command, Duration::from_secs(10))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A configuration file with `contents`, kept alive by the returned directory.
fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward-test.toml");
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

fn repo_proxy_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml")
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn help_explains_every_flag() {
    let output = keyward(&["--help"], &[]);
    assert!(output.status.success());
    let help = stdout(&output);
    for flag in [
        "--config",
        "--listen",
        "--upstream",
        "--max-keys",
        "--guard-mode",
        "--log-level",
        "--log-format",
        "--check-config",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    for env in [
        "KEYWARD_CONFIG",
        "KEYWARD_LISTEN",
        "KEYWARD_UPSTREAM",
        "KEYWARD_MAX_KEYS",
        "KEYWARD_GUARD_MODE",
        "KEYWARD_LOG_LEVEL",
        "KEYWARD_LOG_FORMAT",
    ] {
        assert!(help.contains(env), "--help does not mention {env}:\n{help}");
    }
}

#[test]
fn check_config_accepts_the_repository_proxy_toml() {
    let file = repo_proxy_toml();
    let output = keyward(&["--check-config", arg(&file)], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("max_keys = 1000\n"), "{text}");
    assert!(text.contains("[guard]\nmode = \"enforce\"\n"), "{text}");
    assert!(text.contains("[upstream]"), "{text}");
    assert!(
        text.contains(
            "deny_commands = [\"FLUSHALL\", \"FLUSHDB\", \"SWAPDB\", \"FUNCTION FLUSH\", \
             \"REPLICAOF\", \"SLAVEOF\", \"SHUTDOWN\", \"DEBUG\"]"
        ),
        "{text}"
    );
}

#[test]
fn unknown_key_exits_2_naming_file_and_key() {
    let (_dir, path) = config_file("[guard]\nmax_keys = 10\nmax_kyes = 20\n");
    let output = keyward(&["--check-config", arg(&path)], &[]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("keyward-test.toml"), "{err}");
    assert!(err.contains("guard.max_kyes"), "{err}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn invalid_value_at_normal_start_exits_2() {
    let (_dir, path) = config_file("[guard]\nmax_keys = 0\n");
    let output = keyward(&["--config", arg(&path)], &[]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("keyward-test.toml") && err.contains("guard.max_keys"),
        "{err}"
    );

    let output = keyward(&[], &[("KEYWARD_CONFIG", arg(&path))]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let output = keyward(&["--config", "/nonexistent/keyward.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/keyward.toml"));
}

#[test]
fn check_config_never_prints_the_password() {
    let (_dir, path) = config_file(
        "[upstream]\nusername = \"proxy\"\npassword = \"correct-horse-battery-staple\"\n",
    );
    let output = keyward(&["--check-config", arg(&path)], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains("correct-horse"), "{text}");
    assert!(!stderr(&output).contains("correct-horse"));
    assert!(text.contains("password = \"<set>\""), "{text}");
}

#[test]
fn env_overrides_the_file_and_a_flag_overrides_env() {
    let (_dir, path) = config_file("[guard]\nmax_keys = 50\n");

    let output = keyward(&["--check-config", arg(&path)], &[]);
    assert!(
        stdout(&output).contains("max_keys = 50\n"),
        "{}",
        stderr(&output)
    );

    let output = keyward(
        &["--check-config", arg(&path)],
        &[("KEYWARD_MAX_KEYS", "7")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("max_keys = 7\n"),
        "{}",
        stdout(&output)
    );

    let output = keyward(
        &["--check-config", arg(&path), "--max-keys", "9"],
        &[("KEYWARD_MAX_KEYS", "7")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("max_keys = 9\n"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn upstream_and_listen_flags_and_env() {
    let file = repo_proxy_toml();
    let output = keyward(
        &["--check-config", arg(&file), "--listen", "127.0.0.2:7000"],
        &[("KEYWARD_UPSTREAM", "redis.internal:6400")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("listen = \"127.0.0.2:7000\""), "{text}");
    assert!(text.contains("nodes = [\"redis.internal:6400\"]"), "{text}");

    // Several nodes are refused in standalone mode, but the message shows they were all read.
    let output = keyward(
        &[
            "--check-config",
            arg(&file),
            "--upstream",
            "a:1,b:2",
            "--upstream",
            "c:3",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("--upstream") && err.contains("a:1, b:2, c:3"),
        "{err}"
    );
}

#[test]
fn bad_flag_values_exit_2() {
    let file = repo_proxy_toml();
    for args in [
        &["--max-keys", "many"][..],
        &["--max-keys", "0"],
        &["--listen", "nowhere"],
        &["--log-level", "verbose"],
        &["--guard-mode", "permissive"],
        &["--log-format", "logfmt"],
    ] {
        let mut all = vec!["--check-config", arg(&file)];
        all.extend_from_slice(args);
        let output = keyward(&all, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn guard_mode_from_the_file_env_and_flag() {
    let (_dir, path) = config_file("[guard]\nmode = \"dry-run\"\n");
    let output = keyward(&["--check-config", arg(&path)], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("mode = \"dry-run\"\n"));

    let output = keyward(
        &["--check-config", arg(&path)],
        &[("KEYWARD_GUARD_MODE", "enforce")],
    );
    assert!(stdout(&output).contains("mode = \"enforce\"\n"));

    let file = repo_proxy_toml();
    let output = keyward(
        &["--check-config", arg(&file), "--guard-mode", "dry-run"],
        &[("KEYWARD_GUARD_MODE", "enforce")],
    );
    assert!(stdout(&output).contains("mode = \"dry-run\"\n"));

    let (_dir, path) = config_file("[guard]\nmode = \"dryrun\"\n");
    let output = keyward(&["--check-config", arg(&path)], &[]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("guard.mode") && err.contains("dry-run"),
        "{err}"
    );
}

#[test]
fn log_format_from_the_file_env_and_flag() {
    let (_dir, path) = config_file("[server]\nlog_format = \"json\"\n");
    let output = keyward(&["--check-config", arg(&path)], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("log_format = \"json\"\n"));

    let file = repo_proxy_toml();
    let output = keyward(&["--check-config", arg(&file)], &[]);
    assert!(stdout(&output).contains("log_format = \"text\"\n"));
    let output = keyward(
        &["--check-config", arg(&file)],
        &[("KEYWARD_LOG_FORMAT", "json")],
    );
    assert!(stdout(&output).contains("log_format = \"json\"\n"));
    let output = keyward(
        &["--check-config", arg(&file), "--log-format", "text"],
        &[("KEYWARD_LOG_FORMAT", "json")],
    );
    assert!(stdout(&output).contains("log_format = \"text\"\n"));

    let (_dir, path) = config_file("[server]\nlog_format = \"xml\"\n");
    let output = keyward(&["--check-config", arg(&path)], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("server.log_format"),
        "{}",
        stderr(&output)
    );
}
