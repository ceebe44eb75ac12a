//! Relayed TURN bytes per tenant, read from coturn's own log. Debian's coturn is built without
//! its Prometheus exporter, so its log is the only source: coturn logs to its stdout
//! (`log-file=stdout`, flushed per line), the agent reads it, writes it on to `turnserver.log`
//! and adds each session's usage lines to a [`Tally`] by tenant, which the usage meter takes into the spool at every
//! checkpoint, like the edge's listener usage.
//!
//! What coturn 4.6.1 logs (seen by running it with `verbose` and `turnutils_uclient`; without
//! `verbose` it logs no usage at all):
//!
//! ```text
//! 6: : session 001000000000000001: usage: realm=<onda>, username=<1796498894:ten_abc.user_1>, rp=13, rb=5956, sp=13, sb=5720
//! 6: : session 001000000000000001: peer usage: realm=<onda>, username=<1796498894:ten_abc.user_1>, rp=5, rb=5000, sp=5, sb=5000
//! 6: : session 001000000000000001: closed (2nd stage), user <1796498894:ten_abc.user_1> realm <onda> origin <>, ...
//! ```
//!
//! The figures are per interval, not cumulative: coturn logs a session's usage whenever its
//! packets (client and peer side, both ways) reach a multiple of 4096, and once more when the
//! session closes, and starts counting from zero after each line (a 6,000-message run logged
//! lines of about 1,025 packets each, never growing). There is no time-based interval and no
//! option to set one. So every line adds, and a session's total is the sum of its lines.
//!
//! Relayed bytes of a line are `rb + sb` of its `usage:` line: what the relay received from and
//! sent to the tenant's end user over the allocation (relayed data and the TURN messages that
//! carry it). The `peer usage:` line is the same data on the relay's other side and is not
//! added, so each relayed byte counts once per allocation.
//!
//! Usernames are the TURN REST API's `expiry:TENANT.USER` (`control-plane/src/turn`); usage of
//! any other username is counted in a metric and not reported. A usage line that does not parse
//! is counted in a metric and logged (the first one only), never an error of the agent.
//!
//! What a crash loses: what coturn logged since the last checkpoint, and what its sessions had
//! not logged yet when it was killed (coturn dies with the agent's shutdown or crash).

use onda_shared::cluster::proto::TurnUsage;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

/// The longest tenant id taken from a username (ids are `ten_` and 16 characters).
const MAX_TENANT_LEN: usize = 64;

/// The longest log line read; coturn's usage lines are far shorter, and a longer line is read
/// in pieces (none of which is a usage line) rather than buffered whole.
const MAX_LINE: u64 = 16 * 1024;

/// What one line of coturn's log is to the meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Not a session's usage line (everything else coturn logs, `peer usage:` included).
    Other,
    /// A session's usage of a tenant's user: its relayed bytes.
    Usage { tenant_id: String, bytes: u64 },
    /// A session's usage under a username that names no tenant (not a TURN REST API username
    /// of the control plane's): its relayed bytes, which no tenant is billed for.
    Unattributed { username: String, bytes: u64 },
    /// Looks like a usage line but is not one coturn writes: why.
    Unparsed(String),
}

/// Reads one line of coturn's log.
pub fn parse(line: &str) -> Line {
    // `: peer usage: ` does not contain `: usage: `.
    let Some((head, rest)) = line.split_once(": usage: ") else {
        return Line::Other;
    };
    if !head.contains("session ") {
        return Line::Other;
    }
    match fields(rest.trim_end()) {
        Ok((username, bytes)) => match tenant(username) {
            Some(tenant_id) => Line::Usage {
                tenant_id: tenant_id.to_string(),
                bytes,
            },
            None => Line::Unattributed {
                username: username.to_string(),
                bytes,
            },
        },
        Err(why) => Line::Unparsed(why),
    }
}

/// `realm=<R>, username=<U>, rp=N, rb=N, sp=N, sb=N` → (U, rb + sb).
fn fields(rest: &str) -> Result<(&str, u64), String> {
    let after_user = rest
        .split_once("username=<")
        .map(|(_, u)| u)
        .ok_or("no username=<…>")?;
    // The counters follow the username's closing `>`; a username holding `>, rp=` is not one
    // coturn admits from our control plane, and its counters are still the last ones.
    let (username, counters) = after_user
        .rsplit_once(">, ")
        .ok_or("the username is not closed by >")?;
    let mut got: BTreeMap<&str, u64> = BTreeMap::new();
    for part in counters.split(", ") {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not key=value"))?;
        let value: u64 = value
            .parse()
            .map_err(|_| format!("{key}={value:?} is not a count"))?;
        got.insert(key, value);
    }
    let count = |k: &str| got.get(k).copied().ok_or_else(|| format!("no {k}="));
    let (rb, sb) = (count("rb")?, count("sb")?);
    count("rp")?;
    count("sp")?;
    Ok((username, rb.saturating_add(sb)))
}

/// The tenant of a TURN REST API username `expiry:TENANT.USER`, if it is one.
fn tenant(username: &str) -> Option<&str> {
    let (expiry, user) = username.split_once(':')?;
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (tenant, user) = user.split_once('.')?;
    let ok = !tenant.is_empty()
        && !user.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(tenant)
}

/// Relayed bytes by tenant since the last take, shared by coturn's log reader (which adds) and
/// the usage meter (which takes).
#[derive(Clone, Default)]
pub struct Tally {
    bytes: Arc<Mutex<BTreeMap<String, u64>>>,
    /// A line that did not parse was logged already.
    warned: Arc<AtomicBool>,
}

impl Tally {
    /// Adds `bytes` to `tenant_id`.
    pub fn add(&self, tenant_id: &str, bytes: u64) {
        let mut m = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let v = m.entry(tenant_id.to_string()).or_default();
        *v = v.saturating_add(bytes);
    }

    /// What was added since the last take (tenants with bytes only), by tenant id.
    pub fn take(&self) -> Vec<TurnUsage> {
        let taken = std::mem::take(&mut *self.bytes.lock().unwrap_or_else(PoisonError::into_inner));
        taken
            .into_iter()
            .filter(|(_, b)| *b > 0)
            .map(|(tenant_id, relayed_bytes)| TurnUsage {
                tenant_id,
                relayed_bytes,
            })
            .collect()
    }

    /// Adds one log line, counting it in `lines` by what it was.
    pub fn line(&self, line: &str, lines: &prometheus::IntCounterVec) {
        let result = match parse(line) {
            Line::Other => return,
            Line::Usage { tenant_id, bytes } => {
                self.add(&tenant_id, bytes);
                "counted"
            }
            Line::Unattributed { username, bytes } => {
                tracing::debug!("TURN usage of {bytes} bytes by {username:?}, of no tenant");
                "unattributed"
            }
            Line::Unparsed(why) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "a coturn usage line does not parse ({why}), so its bytes are not \
                         metered; further ones are only counted \
                         (onda_agent_turn_usage_lines_total{{result=\"unparsed\"}}): {line:.300}"
                    );
                }
                "unparsed"
            }
        };
        lines.with_label_values(&[result]).inc();
    }
}

/// Reads coturn's output until it ends, adding its usage lines to `tally` and handing every
/// line to `each` (the log file). Reads on when a line is not UTF-8 or is too long, so coturn
/// never blocks on a full pipe.
pub async fn read(
    out: impl AsyncRead + Unpin,
    tally: Tally,
    lines: prometheus::IntCounterVec,
    mut each: impl FnMut(&[u8]),
) {
    use tokio::io::AsyncReadExt as _;
    let mut reader = BufReader::new(out);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                tally.line(&String::from_utf8_lossy(&buf), &lines);
                each(&buf);
            }
            Err(e) => {
                tracing::warn!("cannot read coturn's output: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const USAGE: &str = "6: : session 001000000000000001: usage: realm=<onda>, \
        username=<1796498894:ten_abc.user_1>, rp=13, rb=5956, sp=13, sb=5720\n";

    fn usage(tenant: &str, bytes: u64) -> Line {
        Line::Usage {
            tenant_id: tenant.into(),
            bytes,
        }
    }

    #[test]
    fn usage_lines_give_the_tenant_and_received_plus_sent_bytes() {
        assert_eq!(parse(USAGE), usage("ten_abc", 5956 + 5720));
        // Without the time prefix, or with coturn's ISO timestamps, and a user id with dots
        // and colons (the tenant ends at the first dot).
        assert_eq!(
            parse(
                "2026-12-05T18:30:00.000Z: session 000000000000000002: usage: realm=<x>, \
                 username=<1:ten_Z9-y.a.b:c>, rp=0, rb=0, sp=1, sb=100"
            ),
            usage("ten_Z9-y", 100)
        );
        // Large counts.
        let big = USAGE.replace("rb=5956", &format!("rb={}", u64::MAX));
        assert_eq!(parse(&big), usage("ten_abc", u64::MAX));
    }

    #[test]
    fn other_lines_and_the_peer_side_are_not_usage() {
        for line in [
            "",
            "\n",
            "0: : Config file found: /tmp/t.conf",
            "6: : session 001000000000000001: peer usage: realm=<onda>, \
             username=<1796498894:ten_abc.user_1>, rp=5, rb=5000, sp=5, sb=5000",
            "6: : session 001000000000000001: closed (2nd stage), user \
             <1796498894:ten_abc.user_1> realm <onda> origin <>, local 127.0.0.1:3478, \
             remote 127.0.0.1:45161, reason: allocation timeout",
            "6: : usage: realm=<onda>, username=<1:ten_a.u>, rp=1, rb=1, sp=1, sb=1",
        ] {
            assert_eq!(parse(line), Line::Other, "{line}");
        }
    }

    #[test]
    fn odd_usage_lines_are_unparsed_with_a_reason() {
        for (line, why) in [
            (USAGE.replace("rb=5956", "rb=lots"), "rb="),
            (USAGE.replace("rb=5956", "rb=-1"), "rb="),
            (USAGE.replace(", sb=5720", ""), "no sb="),
            (USAGE.replace("username=<", "user=<"), "username"),
            (USAGE.replace(">, rp=", " rp="), "not closed"),
            (USAGE.replace(", rp=13", ", rp13"), "key=value"),
            ("7: : session 1: usage: garbage".to_string(), "username"),
        ] {
            match parse(&line) {
                Line::Unparsed(got) => assert!(got.contains(why), "{line}: {got}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn usernames_of_no_tenant_are_unattributed() {
        for username in [
            "alice",             // a long-term user, not the REST API's
            "1796498894:alice",  // no tenant
            "1796498894:.user",  // empty tenant
            "1796498894:ten_a.", // empty user
            "soon:ten_a.user",   // no expiry
            ":ten_a.user",       // no expiry
            "1:ten a.user",      // not an id
            "",
        ] {
            let line = USAGE.replace("1796498894:ten_abc.user_1", username);
            assert_eq!(
                parse(&line),
                Line::Unattributed {
                    username: username.to_string(),
                    bytes: 11_676
                },
                "{username}"
            );
        }
        let long = format!("1:{}.u", "t".repeat(MAX_TENANT_LEN + 1));
        assert!(matches!(
            parse(&USAGE.replace("1796498894:ten_abc.user_1", &long)),
            Line::Unattributed { .. }
        ));
    }

    #[tokio::test]
    async fn the_reader_adds_up_by_tenant_and_counts_each_kind_of_line() {
        let lines =
            prometheus::IntCounterVec::new(prometheus::Opts::new("lines", "lines"), &["result"])
                .unwrap();
        let tally = Tally::default();
        let other = USAGE.replace("ten_abc", "ten_xyz");
        let log = [
            format!("0: : starting\n{USAGE}{USAGE}{other}6: : session 1: usage: nonsense\n")
                .as_bytes(),
            USAGE
                .replace("1796498894:ten_abc.user_1", "alice")
                .as_bytes(),
            b"\xff\xfe not utf-8\n",
            // The last line without its newline (coturn ended mid-line) still counts.
            USAGE.trim_end().as_bytes(),
        ]
        .concat();
        let mut copied = Vec::new();
        read(log.as_slice(), tally.clone(), lines.clone(), |l| {
            copied.extend_from_slice(l)
        })
        .await;
        assert_eq!(copied, log, "every line goes to the log file as it came");
        assert_eq!(
            tally.take(),
            vec![
                TurnUsage {
                    tenant_id: "ten_abc".into(),
                    relayed_bytes: 3 * 11_676
                },
                TurnUsage {
                    tenant_id: "ten_xyz".into(),
                    relayed_bytes: 11_676
                },
            ]
        );
        assert!(tally.take().is_empty(), "taken once");
        let n = |r: &str| lines.with_label_values(&[r]).get();
        assert_eq!((n("counted"), n("unattributed"), n("unparsed")), (4, 1, 1));
    }
}
