//! Source logins (`PUT`/`SOURCE` of a mount's `source` user and of live DJs): each login is
//! checked against a secret, and what an unauthenticated client can make the node spend is
//! bounded. Argon2 (~19 MiB and tens of milliseconds per check) runs at most `password_checks`
//! at once, an attempt beyond that is refused at once instead of queued; a success is
//! remembered for the same user, password and hash so a reconnecting DJ pays for Argon2 once;
//! and after `login_failures` failed logins from one address or for one user, further attempts
//! are refused until `login_lockout_ms` after the last failure. Every map is bounded.

use crate::config::LimitsConfig;
use prometheus::IntCounter;
use sha2::Digest as _;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses (and user names) whose failures are tracked at once; the oldest go first.
const TRACKED: usize = 10_000;
/// Successful checks remembered at once, and for how long.
const REMEMBERED: usize = 1_024;
const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);

/// What a login is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Secret<'a> {
    /// A mount's source password (compared in constant time; empty refuses).
    Plain(&'a str),
    /// A DJ's Argon2 hash (PHC string).
    Argon2(&'a str),
    /// No such user: refused, and counted as a failure.
    Unknown,
}

/// The outcome of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Accepted,
    Refused,
    /// Every password check is in use: try again in a moment.
    Busy,
    /// Too many failures from this address or for this user: wait this long.
    LockedOut(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u64,
    last: Instant,
}

/// Failure records by key, capped at [`TRACKED`].
struct Tracker<K> {
    map: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Clone> Tracker<K> {
    fn new() -> Self {
        Tracker {
            map: HashMap::new(),
        }
    }

    fn locked(&self, key: &K, max: u64, lockout: Duration, now: Instant) -> Option<Duration> {
        let f = self.map.get(key)?;
        let until = f.last + lockout;
        (f.count >= max && now < until).then(|| until - now)
    }

    fn fail(&mut self, key: &K, lockout: Duration, now: Instant) {
        if !self.map.contains_key(key) && self.map.len() >= TRACKED {
            // Forgotten first: what expired, then the oldest (an attacker rotating addresses
            // or names cannot grow this map).
            self.map.retain(|_, f| now < f.last + lockout);
            if self.map.len() >= TRACKED
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let f = self.map.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now >= f.last + lockout {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
    }

    fn clear(&mut self, key: &K) {
        self.map.remove(key);
    }
}

struct State {
    by_ip: Tracker<IpAddr>,
    by_user: Tracker<String>,
    /// sha256(user, password, hash) of successful Argon2 checks, until when they hold.
    verified: HashMap<[u8; 32], Instant>,
}

pub struct Logins {
    checks: Arc<tokio::sync::Semaphore>,
    /// Argon2's working memory, one buffer per check slot at most, reused.
    memory: Arc<Mutex<Vec<Vec<argon2::Block>>>>,
    state: Mutex<State>,
    verifications: IntCounter,
}

impl Logins {
    /// `checks` Argon2 verifications at once (0: one per CPU core); each one run is counted in
    /// `verifications`.
    pub fn new(checks: u64, verifications: IntCounter) -> Logins {
        let checks = match usize::try_from(checks) {
            Ok(0) | Err(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Ok(n) => n,
        };
        Logins {
            checks: Arc::new(tokio::sync::Semaphore::new(checks)),
            memory: Arc::new(Mutex::new(Vec::new())),
            state: Mutex::new(State {
                by_ip: Tracker::new(),
                by_user: Tracker::new(),
                verified: HashMap::new(),
            }),
            verifications,
        }
    }

    /// Checks `user`'s `password` from `ip` against `secret`. `user` names the account
    /// wherever it lives (such as `dj@/live`), for the per-user lockout.
    pub async fn check(
        &self,
        limits: &LimitsConfig,
        ip: IpAddr,
        user: &str,
        password: &str,
        secret: Secret<'_>,
    ) -> Login {
        let lockout = Duration::from_millis(limits.login_lockout_ms);
        let max = limits.login_failures;
        let now = Instant::now();
        if max > 0 {
            let st = crate::mount::lock(&self.state);
            let user_key = user.to_string();
            let wait = st
                .by_ip
                .locked(&ip, max, lockout, now)
                .max(st.by_user.locked(&user_key, max, lockout, now));
            if let Some(wait) = wait {
                return Login::LockedOut(wait);
            }
        }
        let ok = match secret {
            Secret::Plain(p) => {
                !p.is_empty() && crate::constant_time_eq(password.as_bytes(), p.as_bytes())
            }
            Secret::Unknown => false,
            Secret::Argon2(hash) => match self.argon2(user, password, hash).await {
                Some(ok) => ok,
                None => return Login::Busy,
            },
        };
        let mut st = crate::mount::lock(&self.state);
        let user_key = user.to_string();
        if ok {
            st.by_user.clear(&user_key);
            Login::Accepted
        } else {
            if max > 0 {
                let now = Instant::now();
                st.by_ip.fail(&ip, lockout, now);
                st.by_user.fail(&user_key, lockout, now);
            }
            Login::Refused
        }
    }

    /// An Argon2 check, remembered when it succeeds; None when every check slot is taken.
    async fn argon2(&self, user: &str, password: &str, hash: &str) -> Option<bool> {
        let mut h = sha2::Sha256::new();
        for part in [user, password, hash] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let id: [u8; 32] = h.finalize().into();
        let now = Instant::now();
        if crate::mount::lock(&self.state)
            .verified
            .get(&id)
            .is_some_and(|until| now < *until)
        {
            return Some(true);
        }
        let permit = self.checks.clone().try_acquire_owned().ok()?;
        self.verifications.inc();
        let (hash, password) = (hash.to_string(), password.to_string());
        let pool = self.memory.clone();
        // The permit goes with the check: it is held until Argon2 is done even if the client
        // has gone (its memory is in use until then).
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = crate::mount::lock(&pool).pop().unwrap_or_default();
            let ok = verify_password_in(&mut memory, &hash, &password);
            crate::mount::lock(&pool).push(memory);
            ok
        })
        .await
        .unwrap_or(false);
        if ok {
            let now = Instant::now();
            let mut st = crate::mount::lock(&self.state);
            if st.verified.len() >= REMEMBERED {
                st.verified.retain(|_, until| now < *until);
                if st.verified.len() >= REMEMBERED
                    && let Some(first) =
                        st.verified.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k)
                {
                    st.verified.remove(&first);
                }
            }
            st.verified.insert(id, now + REMEMBER_FOR);
        }
        Some(ok)
    }
}

/// Most Argon2 memory a hash may ask for, in KiB (the control plane's hashes use 19 MiB).
const MAX_M_COST: u32 = 64 * 1024;

/// Checks a password against an Argon2 PHC string; a malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    verify_password_in(&mut Vec::new(), hash, password)
}

/// [`verify_password`] with Argon2's working memory in `memory`, grown as needed and kept by
/// the caller: a node reuses one buffer per check slot instead of asking the allocator for
/// ~19 MiB per login (which glibc keeps in per-thread arenas afterwards).
pub fn verify_password_in(memory: &mut Vec<argon2::Block>, hash: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordHash;
    use argon2::{Algorithm, Argon2, Params, Version};
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(expected), Some(salt)) = (
        Algorithm::try_from(h.algorithm),
        Params::try_from(&h),
        h.hash,
        h.salt,
    ) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    if params.m_cost() > MAX_M_COST {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_ok()
        && crate::constant_time_eq(&out, expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by the control plane's `secrets::hash_password("friday-night")`.
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$MSVh1jgze0H4aNrq4EEOnA$7cBSps/jHr3dPVhHEXiVsttFxSt0AHy74yL3RIGoqQc";

    #[test]
    fn argon2_hashes_verify() {
        assert!(verify_password(HASH, "friday-night"));
        assert!(!verify_password(HASH, "saturday-night"));
        assert!(!verify_password("not a hash", "friday-night"));
        // The same check in reused memory, and a hash asking for more memory than allowed.
        let mut memory = Vec::new();
        assert!(verify_password_in(&mut memory, HASH, "friday-night"));
        assert!(!verify_password_in(&mut memory, HASH, "friday-nigh"));
        assert!(verify_password_in(&mut memory, HASH, "friday-night"));
        let greedy = HASH.replace("m=19456", "m=1048576");
        assert!(!verify_password_in(&mut memory, &greedy, "friday-night"));
    }

    fn counter() -> IntCounter {
        IntCounter::new("v", "v").expect("valid metric name")
    }

    fn limits(failures: u64, lockout_ms: u64) -> LimitsConfig {
        LimitsConfig {
            login_failures: failures,
            login_lockout_ms: lockout_ms,
            ..LimitsConfig::default()
        }
    }

    #[tokio::test]
    async fn a_success_is_remembered_and_argon2_runs_once() {
        let c = counter();
        let logins = Logins::new(1, c.clone());
        let l = limits(5, 60_000);
        let ip: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..3 {
            let got = logins
                .check(&l, ip, "dj@/live", "friday-night", Secret::Argon2(HASH))
                .await;
            assert_eq!(got, Login::Accepted);
        }
        assert_eq!(c.get(), 1);
        // Another password is checked (and fails).
        let got = logins
            .check(&l, ip, "dj@/live", "friday-nigh", Secret::Argon2(HASH))
            .await;
        assert_eq!(got, Login::Refused);
        assert_eq!(c.get(), 2);
    }

    #[tokio::test]
    async fn attempts_beyond_the_check_slots_are_refused_at_once() {
        let logins = Arc::new(Logins::new(1, counter()));
        let l = limits(0, 1);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (logins, l) = (logins.clone(), l.clone());
                tokio::spawn(async move {
                    logins
                        .check(&l, ip, "dj@/live", "wrong-password", Secret::Argon2(HASH))
                        .await
                })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            if t.await.expect("task") == Login::Busy {
                busy += 1;
            }
        }
        assert!(busy >= 1, "one check slot for eight attempts at once");
    }

    #[tokio::test]
    async fn failures_lock_out_an_address_and_a_user_until_the_lockout_passes() {
        let logins = Logins::new(1, counter());
        let l = limits(3, 300);
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        for _ in 0..3 {
            let got = logins
                .check(&l, a, "source@/x", "bad", Secret::Plain("good"))
                .await;
            assert_eq!(got, Login::Refused);
        }
        // The address is locked out, even with the right password, and so is the user.
        let got = logins
            .check(&l, a, "source@/y", "good", Secret::Plain("good"))
            .await;
        assert!(matches!(got, Login::LockedOut(_)), "{got:?}");
        let got = logins
            .check(&l, b, "source@/x", "good", Secret::Plain("good"))
            .await;
        assert!(matches!(got, Login::LockedOut(_)), "{got:?}");
        // Another user from another address is not.
        let got = logins
            .check(&l, b, "source@/y", "good", Secret::Plain("good"))
            .await;
        assert_eq!(got, Login::Accepted);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let got = logins
            .check(&l, a, "source@/x", "good", Secret::Plain("good"))
            .await;
        assert_eq!(got, Login::Accepted);
    }

    #[test]
    fn failure_records_stay_bounded() {
        let mut t = Tracker::new();
        let now = Instant::now();
        for i in 0..(TRACKED as u32 + 500) {
            t.fail(&IpAddr::from(i.to_be_bytes()), Duration::from_secs(60), now);
        }
        assert_eq!(t.map.len(), TRACKED);
    }
}
