//! Client authentication at keyward: the `requirepass` model (`[server] password`) and named
//! users (`[[server.users]]`, passwords stored as SHA-256 hashes).
//!
//! When it is configured, keyward itself answers `AUTH` and the `AUTH` option of `HELLO`, and
//! nothing a client sends about credentials ever reaches Redis: keyward logs in to Redis with its
//! own `[upstream]` credentials, so a client can neither learn them nor switch the upstream user.
//! Until a client has logged in, every command but AUTH, HELLO, PING and QUIT is answered with
//! `-NOAUTH`, and the request scanner applies Redis's caps for unauthenticated clients
//! ([`crate::protocol::request::RequestScanner::set_unauthenticated`]), so an anonymous socket
//! cannot make keyward buffer much.
//!
//! Wrong passwords are counted per client address. Past a few free attempts, every further
//! attempt from that address waits for its turn ([`Throttle`]), so guessing runs at a bounded
//! rate however many connections the guesser opens.
//!
//! Without this configuration keyward is transparent: `AUTH` goes to Redis as it is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::commands::{self, CommandSpec, Role};
use crate::guard::{DeleteScope, NO_RIGHTS, Rights};
use crate::printable::printable_key;
use crate::protocol::request::Request;
use crate::protocol::write;

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
     and select the RESP protocol version at the same time";
const AUTH_WITHOUT_DEFAULT: &str = "ERR AUTH <password> called without any password configured \
     for the default user. Are you sure your configuration is correct?";

/// Requests a client that has not logged in may have waiting for replies (all answered by
/// keyward itself): with Redis's caps of 10 arguments of 16 KiB, an anonymous socket that never
/// reads cannot make keyward hold more than a few hundred KiB for it.
pub const UNAUTHENTICATED_MAX_PENDING: usize = 16;

/// The user that `AUTH <password>` (one argument) logs in as, as in Redis.
pub const DEFAULT_USER: &str = "default";

/// One user who may log in to keyward.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// SHA-256 of the password.
    pub password_sha256: [u8; 32],
    /// The user may run commands listed in `[guard] deny_commands` (the key rules still apply).
    pub bypass_deny_commands: bool,
    /// The user may delete keys under `[guard] protected_prefixes`.
    pub bypass_protected_prefixes: bool,
    /// The user may delete only keys under these prefixes; None: any key.
    pub delete_prefixes: Option<Vec<String>>,
    /// Overrides `[guard] max_deleted_keys_per_second` for this user.
    pub max_deleted_keys_per_second: Option<u64>,
}

impl User {
    /// What the guard lets this user do beyond the rules that bind everyone.
    pub fn rights(&self) -> Rights {
        Rights {
            bypass_deny_commands: self.bypass_deny_commands,
            bypass_protected_prefixes: self.bypass_protected_prefixes,
            delete_scope: self.delete_prefixes.as_deref().map(DeleteScope::new),
            max_deleted_keys_per_second: self.max_deleted_keys_per_second,
        }
    }
}

/// Written by hand so that `{:?}` never shows a password hash.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password_sha256", &"<set>")
            .field("bypass_deny_commands", &self.bypass_deny_commands)
            .field("bypass_protected_prefixes", &self.bypass_protected_prefixes)
            .field("delete_prefixes", &self.delete_prefixes)
            .field(
                "max_deleted_keys_per_second",
                &self.max_deleted_keys_per_second,
            )
            .finish()
    }
}

/// SHA-256 of `password`, as stored in `[[server.users]] password_sha256`.
pub fn sha256(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

/// Parses 64 hexadecimal digits.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        out[i] = (high * 16 + low) as u8;
    }
    Some(out)
}

/// Compares two digests in time that does not depend on where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who may log in, prepared once at start-up; `None` in a session means authentication is off.
#[derive(Debug)]
pub struct ClientAuth {
    users: Vec<User>,
    /// `users[i].rights()`, prepared once and shared by every login of the user.
    rights: Vec<Arc<Rights>>,
    throttle: Throttle,
}

impl ClientAuth {
    /// `users` must include the default user when `[server] password` is set (the
    /// configuration adds it). Returns `None` when there is no one to log in as.
    pub fn new(users: Vec<User>) -> Option<ClientAuth> {
        (!users.is_empty()).then(|| ClientAuth {
            rights: users.iter().map(|u| Arc::new(u.rights())).collect(),
            users,
            throttle: Throttle::default(),
        })
    }

    /// The prepared rights of the user `name`.
    fn rights_of(&self, name: &str) -> Option<Arc<Rights>> {
        let i = self.users.iter().position(|u| u.name == name)?;
        Some(self.rights[i].clone())
    }

    /// The user `name` with `password`, if the pair is right. Every configured user's digest is
    /// compared, so the time taken does not tell whether the name exists.
    fn verify(&self, name: &[u8], password: &[u8]) -> Option<&User> {
        let digest = sha256(password);
        let mut found = None;
        for user in &self.users {
            let matches = digests_equal(&user.password_sha256, &digest);
            if matches && user.name.as_bytes() == name {
                found = Some(user);
            }
        }
        found
    }

    /// Checks the credentials of a request that is not a RESP session (the HTTP API), with the
    /// same throttle as `AUTH`: a wrong password is answered only after the throttle's wait.
    pub async fn check_credentials(
        &self,
        peer: IpAddr,
        name: &[u8],
        password: &[u8],
    ) -> Option<Login> {
        self.attempt(peer, name, password).await
    }

    fn has_default_user(&self) -> bool {
        self.users.iter().any(|u| u.name == DEFAULT_USER)
    }

    /// Checks a login attempt from `peer`. A right password is answered at once, whatever
    /// happened before (a flood of wrong ones from the same address must not lock the rightful
    /// user out); a wrong one is answered only after the throttle's wait, during which the
    /// session reads nothing more from its client.
    async fn attempt(&self, peer: IpAddr, name: &[u8], password: &[u8]) -> Option<Login> {
        let key = self.throttle.key(peer, name);
        if let Some(user) = self.verify(name, password) {
            self.throttle.succeeded(&key);
            return Some(Login::User {
                name: Arc::from(user.name.as_str()),
                rights: self.rights_of(&user.name).unwrap_or_default(),
            });
        }
        let (failures, wait) = self.throttle.failed(key);
        tracing::warn!(
            client = %peer,
            user = %printable_key(name),
            failures,
            wait_ms = wait.as_millis() as u64,
            "authentication failed"
        );
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        None
    }
}

/// A client's login after a configuration reload replaced `before` with `after`; None when the
/// client must be disconnected: it is logged in as a user who no longer exists or whose password
/// changed (as Redis disconnects the clients of a user removed with `ACL DELUSER`). A client that
/// had not logged in yet needs to no more once keyward stops authenticating; one admitted
/// without authentication stays admitted (Redis keeps connections made before `requirepass`).
pub fn relogin(
    login: &Login,
    before: Option<&ClientAuth>,
    after: Option<&ClientAuth>,
) -> Option<Login> {
    match login {
        Login::Open => Some(Login::Open),
        Login::Required => Some(Login::new(after)),
        Login::User { name, .. } => {
            let user_in = |auth: Option<&ClientAuth>| {
                auth.and_then(|a| a.users.iter().find(|u| u.name == **name).cloned())
            };
            let (old, new) = (user_in(before)?, user_in(after)?);
            let rights = after?.rights_of(name)?;
            (old.password_sha256 == new.password_sha256).then(|| Login::User {
                name: name.clone(),
                rights,
            })
        }
    }
}

/// What a session knows about its client's login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// keyward does not authenticate clients: everything passes, Redis decides.
    Open,
    /// Authentication is required and has not happened (or RESET undid it).
    Required,
    /// Logged in as the user `name` (shared, so that every audit line of the client can carry
    /// it without an allocation).
    User { name: Arc<str>, rights: Arc<Rights> },
}

impl Login {
    /// The state of a new connection.
    pub fn new(auth: Option<&ClientAuth>) -> Login {
        match auth {
            Some(_) => Login::Required,
            None => Login::Open,
        }
    }

    /// Logged in as a named user (whom a reload may remove).
    pub fn is_user(&self) -> bool {
        matches!(self, Login::User { .. })
    }

    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Login::Required)
    }

    /// How many requests the client may have waiting for replies: `configured`
    /// (`limits.max_pending_replies`), or [`UNAUTHENTICATED_MAX_PENDING`] before the login.
    pub fn pending_limit(&self, configured: usize) -> usize {
        if self.is_authenticated() {
            configured
        } else {
            UNAUTHENTICATED_MAX_PENDING
        }
    }

    /// Whether `[guard] deny_commands` is waived for this client.
    pub fn bypasses_deny_commands(&self) -> bool {
        self.rights().bypass_deny_commands
    }

    /// What the guard lets this client do beyond the rules that bind everyone.
    pub fn rights(&self) -> &Rights {
        match self {
            Login::User { rights, .. } => rights,
            Login::Open | Login::Required => &NO_RIGHTS,
        }
    }

    /// The shared rights of a logged-in user, or None.
    pub fn shared_rights(&self) -> Option<Arc<Rights>> {
        match self {
            Login::User { rights, .. } => Some(rights.clone()),
            Login::Open | Login::Required => None,
        }
    }

    /// The name of the logged-in user, for the audit line; None when keyward does not
    /// authenticate clients (Redis then decides who they are) or before the login.
    pub fn user(&self) -> Option<&Arc<str>> {
        match self {
            Login::User { name, .. } => Some(name),
            Login::Open | Login::Required => None,
        }
    }
}

/// What a session does with a request after the login check.
#[derive(Debug)]
pub enum Gate {
    /// Go on with the request (a `HELLO` may have lost its `AUTH` option: the request was
    /// rebuilt in place).
    Pass,
    /// Answer with this reply and send nothing upstream.
    Answer(Bytes),
}

/// Applies the login rules to one request: answers `AUTH`, takes the `AUTH` option out of `HELLO`,
/// and refuses everything else until the client has logged in. `in_transaction`: `AUTH` inside
/// MULTI is refused (Redis would run it at EXEC, out of keyward's sight).
pub async fn gate(
    auth: &ClientAuth,
    login: &mut Login,
    peer: IpAddr,
    spec: Option<&CommandSpec>,
    request: &mut Request,
    in_transaction: bool,
) -> Gate {
    let role = spec.map_or(Role::Ordinary, |s| s.role);
    match role {
        Role::Auth => {
            if in_transaction {
                return Gate::Answer(write::error(
                    "ERR keyward: AUTH inside MULTI is not supported when keyward authenticates \
                     clients; authenticate before MULTI",
                ));
            }
            let args = request.args();
            let (user, password) = match args.len() {
                2 if !auth.has_default_user() => {
                    return Gate::Answer(write::error(AUTH_WITHOUT_DEFAULT));
                }
                2 => (DEFAULT_USER.as_bytes(), &args[1]),
                3 => (&args[1], &args[2]),
                _ => {
                    return Gate::Answer(write::error(
                        "ERR wrong number of arguments for 'auth' command",
                    ));
                }
            };
            match auth.attempt(peer, user, password).await {
                Some(new) => {
                    *login = new;
                    Gate::Answer(write::simple("OK"))
                }
                None => Gate::Answer(write::error(WRONGPASS)),
            }
        }
        Role::Hello => hello(auth, login, peer, request).await,
        Role::Quit => Gate::Pass,
        // Before the login keyward answers these itself: nothing an anonymous client sends
        // reaches Redis, and nothing it sends moves it to a connection of its own.
        Role::Ping if !login.is_authenticated() => Gate::Answer(match request.args().len() {
            1 => write::simple("PONG"),
            2 => write::bulk(&request.args()[1]),
            _ => write::error("ERR wrong number of arguments for 'ping' command"),
        }),
        Role::Reset if !login.is_authenticated() => Gate::Answer(write::simple("RESET")),
        Role::Reset => {
            // Redis logs a RESET connection back in as the default user, which with a password
            // set means logged out.
            *login = Login::Required;
            Gate::Pass
        }
        _ if login.is_authenticated() => Gate::Pass,
        _ => Gate::Answer(write::error(NOAUTH)),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: the credentials are checked here and only
/// the protocol version and `SETNAME` go to Redis, in a HELLO rebuilt from them: nothing else the
/// client wrote can reach Redis, so no option spelling that Redis reads as AUTH and keyward does
/// not (an option cut at a NUL byte, as Redis's `strcasecmp` cuts it) can switch the upstream
/// user. Options are parsed as Redis parses them, and a syntax error is answered before any
/// credential is checked; the login changes only if every AUTH pair in the request is right.
async fn hello(auth: &ClientAuth, login: &mut Login, peer: IpAddr, request: &mut Request) -> Gate {
    let args = request.args();
    if let Some(version) = args.get(1) {
        match std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            None => {
                return Gate::Answer(write::error(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
            Some(2 | 3) => {}
            Some(_) => return Gate::Answer(write::error("NOPROTO unsupported protocol version")),
        }
    }
    let mut credentials: Vec<(&[u8], &[u8])> = Vec::new();
    let mut setname: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        let option = commands::effective_name(&args[i]);
        let more = args.len() - 1 - i;
        if option.eq_ignore_ascii_case(b"auth") && more >= 2 {
            credentials.push((&args[i + 1], &args[i + 2]));
            i += 3;
        } else if option.eq_ignore_ascii_case(b"setname") && more >= 1 {
            setname = Some(&args[i + 1]);
            i += 2;
        } else {
            return Gate::Answer(write::error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                printable_key(option)
            )));
        }
    }
    let mut new_login = login.clone();
    for (user, password) in credentials {
        match auth.attempt(peer, user, password).await {
            Some(logged_in) => new_login = logged_in,
            None => return Gate::Answer(write::error(WRONGPASS)),
        }
    }
    if !new_login.is_authenticated() {
        return Gate::Answer(write::error(HELLO_NOAUTH));
    }
    *login = new_login;
    let mut kept: Vec<&[u8]> = vec![b"HELLO"];
    kept.extend(args.get(1));
    if let Some(name) = setname {
        kept.push(b"SETNAME");
        kept.push(name);
    }
    let mut rebuilt = Request::from_args(&kept);
    rebuilt.inline = request.inline;
    *request = rebuilt;
    Gate::Pass
}

/// Free failed attempts per address and user name before the throttle starts.
const FREE_FAILURES: u32 = 5;
/// The wait added by the first throttled failure; it doubles with every further one.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait of one failed attempt, however many failed before it.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A key with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Keys tracked at most; when full, expired keys are dropped, and if none has expired the table
/// starts afresh (amortised: once per this many new keys, never a scan per failure).
const MAX_TRACKED: usize = 65_536;

/// Failed logins per client address and user name, and when the next wrong answer to that
/// pair may be given.
///
/// Keyed by the name too, so that a client who knows one user's password cannot reset the count
/// of guesses at another's by logging in between them. Only wrong answers wait: a right password
/// is never delayed, so a burst of wrong ones (a stale service after a password rotation, an
/// attacker sharing a NAT or a sidecar's address) cannot lock the rightful users out.
#[derive(Debug, Default)]
struct Throttle {
    by_key: Mutex<HashMap<ThrottleKey, Failures>>,
    /// Hashes user names (which a client chooses, up to 16 KiB before login) into the key.
    names: std::hash::RandomState,
}

type ThrottleKey = (IpAddr, u64);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// The next wrong answer for this key is not given before this time.
    next_turn: Instant,
}

impl Throttle {
    fn key(&self, peer: IpAddr, name: &[u8]) -> ThrottleKey {
        use std::hash::BuildHasher;
        (peer, self.names.hash_one(name))
    }

    /// Records a failure; returns how many in a row the key has had and how long to wait before
    /// answering it. Concurrent failures queue up behind each other, but no wait exceeds
    /// [`MAX_DELAY`].
    fn failed(&self, key: ThrottleKey) -> (u32, Duration) {
        let now = Instant::now();
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            next_turn: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let delay = delay_after(entry.count);
        if !delay.is_zero() {
            entry.next_turn = (entry.next_turn.max(now) + delay).min(now + MAX_DELAY);
        }
        (entry.count, entry.next_turn.saturating_duration_since(now))
    }

    fn succeeded(&self, key: &ThrottleKey) {
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

/// The wait the `failures`-th failure in a row adds before the next attempt.
fn delay_after(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(16);
    (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands;

    fn request(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    fn auth() -> ClientAuth {
        ClientAuth::new(vec![
            User {
                name: DEFAULT_USER.into(),
                password_sha256: sha256(b"secret"),
                bypass_deny_commands: false,
                ..User::default()
            },
            User {
                name: "ops".into(),
                password_sha256: sha256(b"opspass"),
                bypass_deny_commands: true,
                ..User::default()
            },
        ])
        .unwrap()
    }

    async fn run(auth: &ClientAuth, login: &mut Login, args: &[&str]) -> Result<Request, String> {
        let mut request = request(args);
        let spec = commands::lookup(&request.args()[0]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        match gate(auth, login, peer, spec, &mut request, false).await {
            Gate::Pass => Ok(request),
            Gate::Answer(reply) => Err(String::from_utf8_lossy(&reply).trim_end().to_string()),
        }
    }

    #[test]
    fn hex_digests_parse_and_reject_bad_text() {
        let digest = sha256(b"secret");
        let text: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_sha256_hex(&text), Some(digest));
        assert_eq!(parse_sha256_hex(&text.to_uppercase()), Some(digest));
        assert_eq!(parse_sha256_hex(&text[..62]), None);
        assert_eq!(parse_sha256_hex(&format!("{}zz", &text[..62])), None);
    }

    #[tokio::test]
    async fn commands_wait_for_a_login() {
        let auth = auth();
        let mut login = Login::new(Some(&auth));
        assert_eq!(
            run(&auth, &mut login, &["GET", "k"]).await.unwrap_err(),
            "-NOAUTH Authentication required."
        );
        assert_eq!(
            run(&auth, &mut login, &["PING"]).await.unwrap_err(),
            "+PONG"
        );
        assert_eq!(
            run(&auth, &mut login, &["AUTH", "wrong"])
                .await
                .unwrap_err(),
            "-WRONGPASS invalid username-password pair or user is disabled."
        );
        assert_eq!(
            run(&auth, &mut login, &["AUTH", "secret"])
                .await
                .unwrap_err(),
            "+OK"
        );
        assert!(run(&auth, &mut login, &["GET", "k"]).await.is_ok());
        assert!(!login.bypasses_deny_commands());
        assert_eq!(login.user().map(|n| &**n), Some(DEFAULT_USER));
        run(&auth, &mut login, &["AUTH", "ops", "opspass"])
            .await
            .unwrap_err();
        assert!(login.bypasses_deny_commands());
        assert_eq!(login.user().map(|n| &**n), Some("ops"));
        // RESET logs the client out.
        assert!(run(&auth, &mut login, &["RESET"]).await.is_ok());
        assert_eq!(login, Login::Required);
        assert_eq!(login.user(), None);
        assert_eq!(Login::new(None).user(), None);
    }

    #[tokio::test]
    async fn hello_auth_is_taken_out_before_redis_sees_it() {
        let auth = auth();
        let mut login = Login::new(Some(&auth));
        assert!(
            run(&auth, &mut login, &["HELLO", "3"])
                .await
                .unwrap_err()
                .starts_with("-NOAUTH HELLO must be called")
        );
        let passed = run(
            &auth,
            &mut login,
            &["hello", "3", "auth", "ops", "opspass", "SETNAME", "n"],
        )
        .await
        .unwrap();
        assert_eq!(
            &passed.raw()[..],
            b"*4\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$7\r\nSETNAME\r\n$1\r\nn\r\n"
        );
        assert!(login.bypasses_deny_commands());
        assert_eq!(
            run(
                &auth,
                &mut login,
                &["HELLO", "4", "AUTH", "default", "secret"]
            )
            .await
            .unwrap_err(),
            "-NOPROTO unsupported protocol version"
        );
    }

    #[tokio::test]
    async fn auth_without_a_default_password_says_so() {
        let auth = ClientAuth::new(vec![User {
            name: "app".into(),
            password_sha256: sha256(b"pw"),
            bypass_deny_commands: false,
            ..User::default()
        }])
        .unwrap();
        let mut login = Login::new(Some(&auth));
        assert!(
            run(&auth, &mut login, &["AUTH", "pw"])
                .await
                .unwrap_err()
                .starts_with("-ERR AUTH <password> called without any password configured")
        );
        // Another user's password does not log in as this one.
        assert!(
            run(&auth, &mut login, &["AUTH", "app", "secret"])
                .await
                .is_err()
        );
        assert_eq!(login, Login::Required);
    }

    #[test]
    fn the_throttle_starts_after_the_free_attempts_and_is_capped() {
        assert_eq!(delay_after(1), Duration::ZERO);
        assert_eq!(delay_after(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(delay_after(FREE_FAILURES), FIRST_DELAY);
        assert_eq!(delay_after(FREE_FAILURES + 1), FIRST_DELAY * 2);
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_wait_capped_per_name_and_a_right_password_never_waits() {
        let auth = auth();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let start = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            assert!(auth.attempt(peer, b"ops", b"guess").await.is_none());
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The 5th, 6th and 7th failures wait 100, 200 and 400 ms.
        for _ in 0..3 {
            assert!(auth.attempt(peer, b"ops", b"guess").await.is_none());
        }
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        // Many failures at once queue up, but no single one waits more than MAX_DELAY.
        let key = auth.throttle.key(peer, b"ops");
        for _ in 0..50 {
            let (_, wait) = auth.throttle.failed(key);
            assert!(wait <= MAX_DELAY, "{wait:?}");
        }
        // The right password is answered at once, and so are other names and addresses.
        let start = Instant::now();
        assert!(auth.attempt(peer, b"ops", b"opspass").await.is_some());
        assert!(auth.attempt(other, b"ops", b"guess").await.is_none());
        assert!(auth.attempt(peer, b"default", b"nope").await.is_none());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn logging_in_as_one_user_does_not_reset_the_count_for_another() {
        let auth = auth();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FREE_FAILURES + 1 {
            auth.attempt(peer, b"ops", b"guess").await;
        }
        assert!(auth.attempt(peer, b"default", b"secret").await.is_some());
        let start = Instant::now();
        assert!(auth.attempt(peer, b"ops", b"guess").await.is_none());
        assert!(start.elapsed() >= FIRST_DELAY * 4, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn hello_options_are_parsed_as_redis_parses_them() {
        let auth = auth();
        let mut login = Login::new(Some(&auth));
        // An option Redis reads as AUTH (cut at the NUL byte) is AUTH for keyward too, and is
        // never forwarded.
        assert_eq!(
            run(
                &auth,
                &mut login,
                &["HELLO", "2", "AUTH\0x", "default", "wrong"]
            )
            .await
            .unwrap_err(),
            "-WRONGPASS invalid username-password pair or user is disabled."
        );
        let passed = run(
            &auth,
            &mut login,
            &["HELLO", "2", "aUtH\0x", "default", "secret"],
        )
        .await
        .unwrap();
        assert_eq!(&passed.raw()[..], b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n");
        // A syntax error is answered before any credential is checked.
        let mut fresh = Login::new(Some(&auth));
        assert_eq!(
            run(
                &auth,
                &mut fresh,
                &["HELLO", "3", "AUTH", "default", "secret", "BOGUS"]
            )
            .await
            .unwrap_err(),
            "-ERR Syntax error in HELLO option 'BOGUS'"
        );
        assert_eq!(fresh, Login::Required);
        // Every AUTH pair must be right.
        assert!(
            run(
                &auth,
                &mut fresh,
                &[
                    "HELLO", "3", "AUTH", "default", "secret", "AUTH", "ops", "bad"
                ]
            )
            .await
            .is_err()
        );
        assert_eq!(fresh, Login::Required);
        // Before the login, PING and RESET are answered without Redis.
        assert_eq!(
            run(&auth, &mut fresh, &["PING", "hi"]).await.unwrap_err(),
            "$2\r\nhi"
        );
        assert_eq!(
            run(&auth, &mut fresh, &["RESET"]).await.unwrap_err(),
            "+RESET"
        );
    }
}
