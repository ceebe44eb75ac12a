//! Source logins (`PUT`/`SOURCE` of a mount's `source` user and of live DJs): each login is
//! checked against a secret, and what an unauthenticated client can make the node spend is
//! bounded. Argon2 (~19 MiB and tens of milliseconds per check) runs at most `password_checks`
//! at once (default: one per core, at most four), an attempt beyond that is refused at once
//! instead of queued; a success is remembered for the same user, password and hash so a
//! reconnecting DJ pays for Argon2 once, and a remembered success is let in before any lockout.
//! After `login_failures` failed logins from one address (IPv6: one /64) further attempts are
//! refused until `login_lockout_ms` after the last failure; after as many for one user, that
//! user's unseen credentials get no Argon2 check until then, but the mount's source password
//! (a constant-time compare) is still let in, so nobody can keep a station off the air by
//! failing on purpose. Every map is bounded, and an active lockout is never forgotten to make
//! room: when only lockouts are left, a new address or user is refused (429) instead.

use crate::config::LimitsConfig;
use crate::mount::Credentials;
use prometheus::IntCounter;
use sha2::Digest as _;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses (and user names) whose failures are tracked at once: past that, expired records
/// go first, then the oldest that is not an active lockout.
const TRACKED: usize = 10_000;
/// Successful checks remembered at once, and for how long.
const REMEMBERED: usize = 1_024;
const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);

/// What a login is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Secret<'a> {
    /// A mount's source password (compared in constant time; empty refuses).
    Plain(&'a str),
    /// A DJ's Argon2 hash (PHC string).
    Argon2(&'a str),
    /// No such user: refused, and counted as a failure.
    Unknown,
}

/// The outcome of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
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

    /// Whether `key` has (or can be given) a record: when the map is full, expired records are
    /// forgotten, then the oldest one that is not an active lockout. False when every record
    /// is an active lockout: forgetting one would let whoever fills the map (spraying names or
    /// addresses) lift a target's lockout.
    fn room(&mut self, key: &K, max: u64, lockout: Duration, now: Instant) -> bool {
        if self.map.len() < TRACKED || self.map.contains_key(key) {
            return true;
        }
        self.map.retain(|_, f| now < f.last + lockout);
        if self.map.len() < TRACKED {
            return true;
        }
        let oldest = self
            .map
            .iter()
            .filter(|(_, f)| f.count < max)
            .min_by_key(|(_, f)| f.last)
            .map(|(k, _)| k.clone());
        oldest.is_some_and(|k| self.map.remove(&k).is_some())
    }

    fn fail(&mut self, key: &K, max: u64, lockout: Duration, now: Instant) {
        if !self.room(key, max, lockout, now) {
            return;
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

/// The address failures are counted for: an IPv4 address (also written IPv4-mapped), or an
/// IPv6 /64 (one host usually holds a whole /64 and can rotate through it).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The default number of Argon2 checks at once: one per core, at most four (each holds a
/// ~19 MiB buffer, kept for reuse).
fn default_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

struct State {
    by_ip: Tracker<IpAddr>,
    by_user: Tracker<String>,
    /// sha256(user, password, hash) of successful Argon2 checks, until when they hold.
    verified: HashMap<[u8; 32], Instant>,
}

pub(crate) struct Logins {
    checks: Arc<tokio::sync::Semaphore>,
    /// Argon2's working memory, one buffer per check slot at most, reused.
    memory: Arc<Mutex<Vec<Vec<argon2::Block>>>>,
    state: Mutex<State>,
    verifications: IntCounter,
    /// Random per process: digests of credentials (remembered successes, on-air sources) mean
    /// nothing outside it.
    salt: [u8; 32],
}

impl Logins {
    /// `checks` Argon2 verifications at once (0: one per CPU core, at most four); each one run
    /// is counted in `verifications`.
    pub(crate) fn new(checks: u64, verifications: IntCounter) -> Logins {
        let checks = match usize::try_from(checks) {
            Ok(0) | Err(_) => default_checks(),
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
            salt: rand::random(),
        }
    }

    /// A salted SHA-256 of `parts` (each length-prefixed).
    fn hash(&self, parts: &[&str]) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// The digest of `user`'s `password` a source session keeps, so its title updates
    /// (`/admin/metadata` with the same credentials) need no password check again.
    pub(crate) fn digest(&self, user: &str, password: &str) -> Credentials {
        Credentials::new(self.hash(&["source-session", user, password]))
    }

    /// Checks `user`'s `password` from `ip` against `secret`. `user` names the account
    /// wherever it lives (such as `dj@/live`), for the per-user lockout. In order: a remembered
    /// Argon2 success is let in at once; a locked-out address is refused (429); the mount's
    /// source password is compared, and if right let in even when the user is locked out;
    /// otherwise a locked-out user is refused before any Argon2 work.
    pub(crate) async fn check(
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
        let remembered = match secret {
            Secret::Argon2(hash) => Some(self.hash(&["argon2", user, password, hash])),
            _ => None,
        };
        if let Some(id) = remembered
            && crate::sync::lock(&self.state)
                .verified
                .get(&id)
                .is_some_and(|until| now < *until)
        {
            return Login::Accepted;
        }
        let (addr, user_key) = (address_key(ip), user.to_string());
        let plain_ok = match secret {
            Secret::Plain(p) => {
                !p.is_empty() && crate::constant_time_eq(password.as_bytes(), p.as_bytes())
            }
            _ => false,
        };
        if max > 0 {
            let mut st = crate::sync::lock(&self.state);
            if let Some(wait) = st.by_ip.locked(&addr, max, lockout, now) {
                return Login::LockedOut(wait);
            }
            if !st.by_ip.room(&addr, max, lockout, now) {
                return Login::LockedOut(lockout);
            }
            if !plain_ok {
                if let Some(wait) = st.by_user.locked(&user_key, max, lockout, now) {
                    // Still a failure of this address: a locked-out user is no free guess.
                    st.by_ip.fail(&addr, max, lockout, now);
                    return Login::LockedOut(wait);
                }
                if !st.by_user.room(&user_key, max, lockout, now) {
                    return Login::LockedOut(lockout);
                }
            }
        }
        let ok = match (secret, remembered) {
            (Secret::Argon2(hash), Some(id)) => match self.argon2(id, password, hash).await {
                Some(ok) => ok,
                None => return Login::Busy,
            },
            _ => plain_ok,
        };
        let mut st = crate::sync::lock(&self.state);
        if ok {
            st.by_user.clear(&user_key);
            Login::Accepted
        } else {
            if max > 0 {
                let now = Instant::now();
                st.by_ip.fail(&addr, max, lockout, now);
                st.by_user.fail(&user_key, max, lockout, now);
            }
            Login::Refused
        }
    }

    /// An Argon2 check, remembered under `id` when it succeeds; None when every check slot is
    /// taken.
    async fn argon2(&self, id: [u8; 32], password: &str, hash: &str) -> Option<bool> {
        let permit = self.checks.clone().try_acquire_owned().ok()?;
        self.verifications.inc();
        let (hash, password) = (hash.to_string(), password.to_string());
        let pool = self.memory.clone();
        // The permit goes with the check: it is held until Argon2 is done even if the client
        // has gone (its memory is in use until then).
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = crate::sync::lock(&pool).pop().unwrap_or_default();
            let ok = verify_password_in(&mut memory, &hash, &password);
            crate::sync::lock(&pool).push(memory);
            ok
        })
        .await
        .unwrap_or(false);
        if ok {
            let now = Instant::now();
            let mut st = crate::sync::lock(&self.state);
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
#[cfg(test)]
pub(crate) fn verify_password(hash: &str, password: &str) -> bool {
    verify_password_in(&mut Vec::new(), hash, password)
}

/// [`verify_password`] with Argon2's working memory in `memory`, grown as needed and kept by
/// the caller: a node reuses one buffer per check slot instead of asking the allocator for
/// ~19 MiB per login (which glibc keeps in per-thread arenas afterwards).
pub(crate) fn verify_password_in(
    memory: &mut Vec<argon2::Block>,
    hash: &str,
    password: &str,
) -> bool {
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
        let c = counter();
        let logins = Logins::new(1, c.clone());
        let l = limits(3, 300);
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        for _ in 0..3 {
            let got = logins
                .check(&l, a, "dj@/x", "bad-password", Secret::Argon2(HASH))
                .await;
            assert_eq!(got, Login::Refused);
        }
        assert_eq!(c.get(), 3);
        // The address is locked out, even with the right password.
        let got = logins
            .check(&l, a, "source@/y", "good", Secret::Plain("good"))
            .await;
        assert!(matches!(got, Login::LockedOut(_)), "{got:?}");
        // So is the user's Argon2 check from elsewhere, without running Argon2.
        let got = logins
            .check(&l, b, "dj@/x", "friday-night", Secret::Argon2(HASH))
            .await;
        assert!(matches!(got, Login::LockedOut(_)), "{got:?}");
        assert_eq!(c.get(), 3);
        // Another user from another address is not.
        let got = logins
            .check(&l, b, "source@/y", "good", Secret::Plain("good"))
            .await;
        assert_eq!(got, Login::Accepted);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let got = logins
            .check(&l, a, "dj@/x", "friday-night", Secret::Argon2(HASH))
            .await;
        assert_eq!(got, Login::Accepted);
    }

    /// Failing on purpose for `source@/x` or a DJ cannot keep them off the air: the right
    /// source password and a remembered DJ success get in while the user is locked out, and a
    /// wrong password then still counts against its address.
    #[tokio::test]
    async fn a_user_lockout_lets_the_source_password_and_remembered_djs_in() {
        let c = counter();
        let logins = Logins::new(1, c.clone());
        let l = limits(3, 60_000);
        let (dj, attacker): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 66].into());
        let ok = logins
            .check(&l, dj, "dj@/x", "friday-night", Secret::Argon2(HASH))
            .await;
        assert_eq!(ok, Login::Accepted);
        // From two addresses (each is locked out after its own three failures).
        for (user, from) in [("source@/x", attacker), ("dj@/x", [192, 0, 2, 67].into())] {
            for _ in 0..3 {
                let got = logins
                    .check(&l, from, user, "bad", Secret::Plain("good"))
                    .await;
                assert_eq!(got, Login::Refused);
            }
        }
        let got = logins
            .check(&l, dj, "source@/x", "bad", Secret::Plain("good"))
            .await;
        assert!(matches!(got, Login::LockedOut(_)), "{got:?}");
        let got = logins
            .check(&l, dj, "source@/x", "good", Secret::Plain("good"))
            .await;
        assert_eq!(got, Login::Accepted);
        let got = logins
            .check(&l, dj, "dj@/x", "friday-night", Secret::Argon2(HASH))
            .await;
        assert_eq!(got, Login::Accepted);
        assert_eq!(c.get(), 1, "the remembered DJ ran no Argon2 again");
        // The attacker's address is locked out, the right password included.
        let got = logins
            .check(&l, attacker, "source@/x", "good", Secret::Plain("good"))
            .await;
        assert!(matches!(got, Login::LockedOut(_)), "{got:?}");
    }

    #[test]
    fn ipv6_failures_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(address_key(mapped), IpAddr::from([192, 0, 2, 1]));
        let mut t = Tracker::new();
        let (lockout, now) = (Duration::from_secs(60), Instant::now());
        for i in 0..3u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 1, 2, i, i, i, i]);
            t.fail(&address_key(ip), 3, lockout, now);
        }
        assert!(t.locked(&address_key(a), 3, lockout, now).is_some());
        assert!(t.locked(&address_key(other), 3, lockout, now).is_none());
    }

    #[test]
    fn failure_records_stay_bounded() {
        let mut t = Tracker::new();
        let now = Instant::now();
        for i in 0..(TRACKED as u32 + 500) {
            t.fail(
                &IpAddr::from(i.to_be_bytes()),
                5,
                Duration::from_secs(60),
                now,
            );
        }
        assert_eq!(t.map.len(), TRACKED);
    }

    /// Spraying new names or addresses never forgets an active lockout; when the records are
    /// all lockouts, a new key gets no room (its login is refused) rather than one forgotten.
    #[test]
    fn active_lockouts_are_never_evicted() {
        let mut t = Tracker::new();
        let (lockout, now) = (Duration::from_secs(60), Instant::now());
        let target = "dj@/live".to_string();
        for _ in 0..3 {
            t.fail(&target, 3, lockout, now);
        }
        for i in 0..(2 * TRACKED) {
            t.fail(&format!("nobody{i}@/live"), 3, lockout, now);
        }
        assert_eq!(t.map.len(), TRACKED);
        assert!(t.locked(&target, 3, lockout, now).is_some());
        // Every record a lockout (max 1): no room for a new key, and nothing forgotten.
        let mut t = Tracker::new();
        for i in 0..TRACKED {
            t.fail(&i, 1, lockout, now);
        }
        assert!(!t.room(&TRACKED, 1, lockout, now));
        t.fail(&TRACKED, 1, lockout, now);
        assert!(!t.map.contains_key(&TRACKED));
        assert!((0..TRACKED).all(|i| t.locked(&i, 1, lockout, now).is_some()));
        // Once they expire, there is room again.
        assert!(t.room(&TRACKED, 1, lockout, now + lockout));
    }

    #[test]
    fn at_most_four_checks_by_default() {
        assert!((1..=4).contains(&default_checks()));
    }

    #[test]
    fn a_digest_matches_only_the_same_credentials() {
        let logins = Logins::new(1, counter());
        let d = logins.digest("dj", "friday-night");
        assert!(d.matches(&logins.digest("dj", "friday-night")));
        assert!(!d.matches(&logins.digest("dj", "friday-nigh")));
        assert!(!d.matches(&logins.digest("dj2", "friday-night")));
        // Another process (another salt) derives another digest.
        assert!(!d.matches(&Logins::new(1, counter()).digest("dj", "friday-night")));
    }
}
