//! The rules of live streams' chats, apart from any transport: who may join a stream's chat
//! (the one membership check, `memberships::entitled`, and the creator's bans), who moderates
//! (the creator and the moderators they named), and whether a message may be said now
//! ([`admit`], a pure function of what the handler read: the text, the writer's role and
//! restriction, the creator's settings, the writer's last message). The gateway's handlers
//! (`realtime::stream_chat`) read, call these, then write.

use crate::db::stream_chat::Restriction;
use crate::db::{self, Conn};
use crate::memberships::{self, Access};
use onda_shared::api::{ChatSettings, LiveStream};

/// The longest chat message, in characters.
pub const MAX_CHARS: usize = 500;
/// Messages a viewer who joins gets.
pub const RECENT: u32 = 50;
/// The longest timeout: two weeks, in seconds.
pub const MAX_TIMEOUT_SECS: u32 = 14 * 24 * 3600;
/// The longest slow mode, in seconds.
pub const MAX_SLOW_MODE_SECS: u32 = 3600;
/// Blocked words per creator, and the longest one, in characters.
pub const MAX_BLOCKED_WORDS: usize = 200;
pub const MAX_BLOCKED_WORD_CHARS: usize = 50;

/// What a user is in a stream's chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Moderator,
    Creator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Moderator => "moderator",
            Role::Creator => "creator",
        }
    }

    pub fn moderates(self) -> bool {
        self != Role::Viewer
    }
}

/// Why something in a chat is refused: a stable code and a sentence (the gateway's error ack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl Refused {
    pub fn new(code: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    fn later(code: &'static str, message: impl Into<String>, ms: i64) -> Refused {
        Refused {
            retry_after_ms: Some(u64::try_from(ms.max(1)).unwrap_or(1)),
            ..Refused::new(code, message)
        }
    }
}

/// The stream's creator, whose moderation the chat follows; a stream without one has no chat.
pub fn creator_of(stream: &LiveStream) -> Result<&str, Refused> {
    stream.creator_id.as_deref().ok_or_else(|| {
        Refused::new(
            "not_found",
            format!(
                "Stream {:?} has no creator (creator_id), so it has no chat.",
                stream.id
            ),
        )
    })
}

/// The user's role in the creator's chats.
pub async fn role(
    conn: &mut Conn,
    tenant_id: &str,
    creator_id: &str,
    user_id: &str,
) -> Result<Role, sqlx::Error> {
    if user_id == creator_id {
        return Ok(Role::Creator);
    }
    Ok(
        if db::stream_chat::is_moderator(conn, tenant_id, creator_id, user_id).await? {
            Role::Moderator
        } else {
            Role::Viewer
        },
    )
}

/// Whether `user_id` may join the stream's chat: a moderator or the creator always, anyone
/// else when entitled to watch and not banned. Answers the role.
pub async fn may_join(
    conn: &mut Conn,
    (tenant_id, currency): (&str, &str),
    stream: &LiveStream,
    user_id: &str,
    now_ms: i64,
) -> Result<Result<Role, Refused>, sqlx::Error> {
    let creator = match creator_of(stream) {
        Ok(c) => c,
        Err(r) => return Ok(Err(r)),
    };
    let role = role(conn, tenant_id, creator, user_id).await?;
    if role.moderates() {
        return Ok(Ok(role));
    }
    if let Some(Restriction::Banned) =
        db::stream_chat::restriction(conn, tenant_id, creator, user_id, now_ms).await?
    {
        return Ok(Err(Refused::new(
            "banned",
            "You are banned from this creator's chats.",
        )));
    }
    match memberships::entitled(conn, tenant_id, user_id, (None, Some(stream)), now_ms).await? {
        Access::Granted(_) => Ok(Ok(role)),
        Access::Denied(offer) => Ok(Err(Refused::new(
            "forbidden",
            offer.sentence("This stream (and its chat)", currency),
        ))),
    }
}

/// A chat text: 1 to [`MAX_CHARS`] characters, not blank, no control characters.
pub fn check_text(content: &str) -> Result<&str, Refused> {
    let n = content.chars().count();
    if content.trim().is_empty() {
        return Err(Refused::new("invalid_payload", "content is empty."));
    }
    if n > MAX_CHARS {
        return Err(Refused::new(
            "invalid_payload",
            format!("content has {n} characters; a chat message has at most {MAX_CHARS}."),
        ));
    }
    if content.chars().any(char::is_control) {
        return Err(Refused::new(
            "invalid_payload",
            "content must not contain control characters (a chat message is one line).",
        ));
    }
    Ok(content)
}

/// The first blocked word `content` holds as a whole word, case-insensitively.
pub fn blocked_word<'a>(content: &str, words: &'a [String]) -> Option<&'a str> {
    let said: Vec<String> = content
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words
        .iter()
        .find(|w| {
            let w = w.to_lowercase();
            // A blocked phrase of several words is matched as a phrase.
            if w.contains(' ') {
                said.join(" ").contains(&w)
            } else {
                said.contains(&w)
            }
        })
        .map(String::as_str)
}

/// Blocked words as stored: trimmed, lower case, unique, each 1 to
/// [`MAX_BLOCKED_WORD_CHARS`] characters, at most [`MAX_BLOCKED_WORDS`].
pub fn normalize_words(words: Vec<String>) -> Result<Vec<String>, Refused> {
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for w in words {
        let w = w.trim().to_lowercase();
        let n = w.chars().count();
        if n == 0 || n > MAX_BLOCKED_WORD_CHARS || w.chars().any(char::is_control) {
            return Err(Refused::new(
                "invalid_payload",
                format!(
                    "blockedWords: each is 1 to {MAX_BLOCKED_WORD_CHARS} characters without \
                     control characters ({w:?} is not)."
                ),
            ));
        }
        if !out.contains(&w) {
            out.push(w);
        }
    }
    if out.len() > MAX_BLOCKED_WORDS {
        return Err(Refused::new(
            "invalid_payload",
            format!("blockedWords: at most {MAX_BLOCKED_WORDS} words."),
        ));
    }
    Ok(out)
}

/// What [`admit`] decides from.
#[derive(Debug, Clone)]
pub struct Said<'a> {
    pub content: &'a str,
    pub role: Role,
    pub restriction: Option<Restriction>,
    pub settings: &'a ChatSettings,
    /// When the writer last said something in the creator's chats.
    pub last_said_ms: Option<i64>,
    /// Whether the writer subscribes to the creator now (read only when it matters).
    pub subscriber: bool,
    pub now_ms: i64,
}

/// Whether a message may be said now. The creator and moderators are held back by nothing but
/// the text's own rules and blocked words do not apply to them either (they set them).
pub fn admit(s: &Said<'_>) -> Result<(), Refused> {
    check_text(s.content)?;
    if s.role.moderates() {
        return Ok(());
    }
    match s.restriction {
        Some(Restriction::Banned) => {
            return Err(Refused::new(
                "banned",
                "You are banned from this creator's chats.",
            ));
        }
        Some(Restriction::TimedOut { until_ms }) => {
            let secs = (until_ms - s.now_ms + 999) / 1000;
            return Err(Refused::later(
                "timed_out",
                format!("You are timed out of this chat for {secs} more seconds."),
                until_ms - s.now_ms,
            ));
        }
        None => {}
    }
    if s.settings.subscribers_only && !s.subscriber {
        return Err(Refused::new(
            "subscribers_only",
            "This chat is for the creator's subscribers only right now.",
        ));
    }
    let slow_ms = i64::from(s.settings.slow_mode_secs) * 1000;
    if slow_ms > 0
        && let Some(last) = s.last_said_ms
        && s.now_ms - last < slow_ms
    {
        return Err(Refused::later(
            "slow_mode",
            format!(
                "Slow mode is on: one message every {} seconds.",
                s.settings.slow_mode_secs
            ),
            last + slow_ms - s.now_ms,
        ));
    }
    if let Some(word) = blocked_word(s.content, &s.settings.blocked_words) {
        return Err(Refused::new(
            "blocked_word",
            format!("This chat does not allow the word {word:?}; nothing was sent."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said<'a>(content: &'a str, settings: &'a ChatSettings) -> Said<'a> {
        Said {
            content,
            role: Role::Viewer,
            restriction: None,
            settings,
            last_said_ms: None,
            subscriber: false,
            now_ms: 100_000,
        }
    }

    #[test]
    fn a_viewer_is_held_by_every_rule_in_order() {
        let plain = ChatSettings::default();
        assert_eq!(admit(&said("hello 👋", &plain)), Ok(()));
        assert_eq!(
            admit(&said("   ", &plain)).expect_err("refused").code,
            "invalid_payload"
        );
        let long = "a".repeat(MAX_CHARS + 1);
        assert_eq!(
            admit(&said(&long, &plain)).expect_err("refused").code,
            "invalid_payload"
        );
        assert_eq!(admit(&said(&"é".repeat(MAX_CHARS), &plain)), Ok(()));
        assert_eq!(
            admit(&said("a\nb", &plain)).expect_err("refused").code,
            "invalid_payload"
        );

        let banned = Said {
            restriction: Some(Restriction::Banned),
            ..said("hi", &plain)
        };
        assert_eq!(admit(&banned).expect_err("refused").code, "banned");
        let timed_out = Said {
            restriction: Some(Restriction::TimedOut { until_ms: 130_500 }),
            ..said("hi", &plain)
        };
        let r = admit(&timed_out).expect_err("refused");
        assert_eq!((r.code, r.retry_after_ms), ("timed_out", Some(30_500)));
        assert!(r.message.contains("31 more seconds"), "{}", r.message);

        let subs = ChatSettings {
            subscribers_only: true,
            ..ChatSettings::default()
        };
        assert_eq!(
            admit(&said("hi", &subs)).expect_err("refused").code,
            "subscribers_only"
        );
        let subscriber = Said {
            subscriber: true,
            ..said("hi", &subs)
        };
        assert_eq!(admit(&subscriber), Ok(()));

        let slow = ChatSettings {
            slow_mode_secs: 10,
            ..ChatSettings::default()
        };
        let early = Said {
            last_said_ms: Some(95_000),
            ..said("hi", &slow)
        };
        let r = admit(&early).expect_err("refused");
        assert_eq!((r.code, r.retry_after_ms), ("slow_mode", Some(5_000)));
        let later = Said {
            last_said_ms: Some(90_000),
            ..said("hi", &slow)
        };
        assert_eq!(admit(&later), Ok(()));
    }

    #[test]
    fn moderators_and_the_creator_pass_everything_but_the_texts_rules() {
        let strict = ChatSettings {
            slow_mode_secs: 60,
            subscribers_only: true,
            blocked_words: vec!["spoiler".into()],
        };
        for role in [Role::Moderator, Role::Creator] {
            let s = Said {
                role,
                restriction: Some(Restriction::TimedOut { until_ms: 200_000 }),
                last_said_ms: Some(99_999),
                ..said("a spoiler!", &strict)
            };
            assert_eq!(admit(&s), Ok(()));
            let empty = Said {
                role,
                ..said("", &strict)
            };
            assert_eq!(admit(&empty).expect_err("refused").code, "invalid_payload");
        }
    }

    #[test]
    fn blocked_words_match_whole_words_and_phrases_in_any_case() {
        let words = normalize_words(vec![
            " Spoiler ".into(),
            "bad phrase".into(),
            "spoiler".into(),
        ])
        .expect("valid");
        assert_eq!(words, vec!["spoiler".to_string(), "bad phrase".to_string()]);
        assert_eq!(blocked_word("no SPOILER here", &words), Some("spoiler"));
        assert_eq!(blocked_word("spoilers are fine", &words), None);
        assert_eq!(
            blocked_word("a Bad  phrase, really", &words),
            Some("bad phrase")
        );
        assert_eq!(blocked_word("badphrase", &words), None);
        assert!(normalize_words(vec![String::new()]).is_err());
        assert!(normalize_words(vec!["x".repeat(MAX_BLOCKED_WORD_CHARS + 1)]).is_err());
        let many = (0..=MAX_BLOCKED_WORDS).map(|i| format!("w{i}")).collect();
        assert!(normalize_words(many).is_err());
    }
}
