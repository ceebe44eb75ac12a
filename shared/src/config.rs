//! Loads a component's configuration: a TOML file, then `ONDA_<SECTION>_<KEY>` environment
//! overrides, then serde with `deny_unknown_fields` so an unknown key is an error that names it.
//!
//! Written here rather than with a layered-config crate because the rule we need is specific:
//! an environment variable is matched against the keys the component really has (so `ONDA_LOG`
//! or another component's variables are left alone), while a variable that names a known section
//! but an unknown key (`ONDA_HTTP_LISTN`) is reported instead of being silently ignored.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;

/// A loaded configuration value a component cannot use: the key it is under (`http.listen`,
/// `limits.queue_bytes`, `mounts`, …) and a sentence saying what is wrong and what would do.
/// Each section's `validate` returns it, so a caller can tell a bad configuration from an I/O
/// failure and a user reads which key to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: String) -> ConfigError {
        ConfigError {
            key: key.to_string(),
            message,
        }
    }
}

/// `#[serde(with = "parsed")]` for a value written as a string and parsed with `FromStr`
/// (a listen address): serde's own error for a bad address does not quote it, this one does,
/// and the loader adds the key (`"localhost": invalid socket address syntax in `http.listen``).
pub mod parsed {
    use super::*;
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let raw = String::deserialize(deserializer)?;
        raw.parse()
            .map_err(|e| serde::de::Error::custom(format!("{raw:?}: {e}")))
    }
}

/// `#[serde(with = "empty_is_none")]` for an optional value written as a string, where the empty
/// string means "none" (`rtmp.listen = ""`: no RTMP). It serializes `None` as `""` rather than
/// as a missing key or null, so the file, the environment override (`ONDA_RTMP_LISTEN=`) and the
/// JSON on the wire all say the same thing, and the loader still sees a string key to override.
pub mod empty_is_none {
    use super::*;
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.collect_str(v),
            None => serializer.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let raw = String::deserialize(deserializer)?;
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{raw:?}: {e}")))
    }
}

/// Why a configuration could not be loaded; every message names the file, key or variable.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from an optional TOML file and the process environment.
pub fn load<T>(path: Option<&Path>) -> Result<T, LoadError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| LoadError::Read {
            path: p.display().to_string(),
            source,
        })?,
        None => String::new(),
    };
    let origin = path.map_or_else(|| "<none>".to_string(), |p| p.display().to_string());
    load_from(&text, &origin, std::env::vars())
}

/// Loads `T` from TOML text and the given environment (testable without touching the process).
pub fn load_from<T, I>(text: &str, origin: &str, env: I) -> Result<T, LoadError>
where
    T: Serialize + DeserializeOwned + Default,
    I: IntoIterator<Item = (String, String)>,
{
    let mut table: toml::Table = toml::from_str(text).map_err(|e| LoadError::Parse {
        path: origin.to_string(),
        message: e.to_string(),
    })?;
    // The shape of the default value tells which keys exist and what type each has.
    let defaults = serde_json::to_value(T::default())
        .map_err(|e| LoadError::Invalid(format!("cannot describe defaults: {e}")))?;
    let mut known = Vec::new();
    collect_keys(&defaults, &mut Vec::new(), &mut known);

    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("ONDA_"))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let suffix = &var["ONDA_".len()..];
        if let Some((key_path, default)) = known.iter().find(|(p, _)| env_name(p) == suffix) {
            let value = parse_env_value(&var, &raw, default)?;
            set_path(&mut table, key_path, value);
        } else if let Some(near) = typo_of_section(suffix, &known) {
            return Err(LoadError::Env {
                var,
                message: format!("no such section; did you mean ONDA_{near}_…?"),
            });
        } else if let Some(section) = known
            .iter()
            .filter(|(p, _)| p.len() > 1)
            .map(|(p, _)| p[0].to_uppercase())
            .find(|s| suffix.starts_with(&format!("{s}_")))
        {
            let keys: Vec<String> = known
                .iter()
                .filter(|(p, _)| p.len() > 1 && p[0].to_uppercase() == section)
                .map(|(p, _)| format!("ONDA_{}", env_name(p)))
                .collect();
            return Err(LoadError::Env {
                var,
                message: format!(
                    "no such key in section [{}]; known variables: {}",
                    section.to_lowercase(),
                    keys.join(", ")
                ),
            });
        }
    }

    T::deserialize(toml::Value::Table(table)).map_err(|e| LoadError::Parse {
        path: origin.to_string(),
        message: e.to_string(),
    })
}

/// The known section a variable's first word nearly spells (`DATABSE` → `DATABASE`), so a typo
/// is reported instead of silently ignored. Variables of other components or tools
/// (`ONDA_LOG`, `ONDA_DEV_DIR`) are far from every section and pass.
fn typo_of_section(suffix: &str, known: &[(Vec<String>, serde_json::Value)]) -> Option<String> {
    let sections: std::collections::BTreeSet<String> = known
        .iter()
        .filter(|(p, _)| p.len() > 1)
        .map(|(p, _)| p[0].to_uppercase())
        .collect();
    // Sections may hold '_' themselves: compare against the same number of words.
    sections.into_iter().find(|s| {
        let words = s.split('_').count();
        let head: Vec<&str> = suffix.splitn(words + 1, '_').collect();
        if head.len() <= words {
            return false;
        }
        let candidate = head[..words].join("_");
        candidate != *s && candidate.len() >= 3 && edit_distance(&candidate, s) <= 2
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn env_name(path: &[String]) -> String {
    path.join("_").to_uppercase()
}

fn collect_keys(
    value: &serde_json::Value,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, serde_json::Value)>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                collect_keys(v, prefix, out);
                prefix.pop();
            }
        }
        leaf => out.push((prefix.clone(), leaf.clone())),
    }
}

fn parse_env_value(
    var: &str,
    raw: &str,
    default: &serde_json::Value,
) -> Result<toml::Value, LoadError> {
    let err = |what: &str| LoadError::Env {
        var: var.to_string(),
        message: format!("expected {what}, got {raw:?}"),
    };
    Ok(match default {
        serde_json::Value::Bool(_) => match raw {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(err("true or false")),
        },
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| err("an integer"))?)
        }
        serde_json::Value::Number(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| err("a number"))?)
        }
        serde_json::Value::Array(_) => {
            let doc: toml::Table =
                toml::from_str(&format!("v = {raw}")).map_err(|_| err("a TOML array"))?;
            doc.get("v").cloned().ok_or_else(|| err("a TOML array"))?
        }
        _ => toml::Value::String(raw.to_string()),
    })
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else {
            return;
        };
        cur = t;
    }
    cur.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        http: Http,
        database: Db,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Self {
                http: Http {
                    listen: "0.0.0.0:8080".into(),
                    max_body_bytes: 1024,
                },
                database: Db { url: None },
            }
        }
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Http {
        listen: String,
        max_body_bytes: u64,
    }
    impl Default for Http {
        fn default() -> Self {
            Cfg::default().http
        }
    }
    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Db {
        url: Option<String>,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_override() {
        let cfg: Cfg = load_from(
            "[http]\nlisten = \"127.0.0.1:1\"\n",
            "t.toml",
            env(&[
                ("ONDA_HTTP_MAX_BODY_BYTES", "99"),
                ("ONDA_DATABASE_URL", "sqlite://x"),
                ("ONDA_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("loads");
        assert_eq!(cfg.http.listen, "127.0.0.1:1");
        assert_eq!(cfg.http.max_body_bytes, 99);
        assert_eq!(cfg.database.url.as_deref(), Some("sqlite://x"));
    }

    #[test]
    fn unknown_file_key_is_named() {
        let err = load_from::<Cfg, _>("[http]\nlistn = \"x\"\n", "t.toml", env(&[]))
            .expect_err("must fail");
        assert!(err.to_string().contains("listn"), "{err}");
        let err = load_from::<Cfg, _>("[htp]\n", "t.toml", env(&[])).expect_err("must fail");
        assert!(err.to_string().contains("htp"), "{err}");
    }

    #[test]
    fn unknown_env_key_in_known_section_is_named() {
        let err = load_from::<Cfg, _>("", "t.toml", env(&[("ONDA_HTTP_LISTN", "x")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("ONDA_HTTP_LISTN"), "{err}");
        assert!(err.to_string().contains("ONDA_HTTP_LISTEN"), "{err}");
    }

    #[test]
    fn misspelt_section_is_named_and_other_variables_pass() {
        let err = load_from::<Cfg, _>("", "t.toml", env(&[("ONDA_DATABSE_URL", "x")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("ONDA_DATABSE_URL"), "{err}");
        assert!(err.to_string().contains("ONDA_DATABASE_"), "{err}");
        load_from::<Cfg, _>(
            "",
            "t.toml",
            env(&[
                ("ONDA_LOG", "debug"),
                ("ONDA_DEV_DIR", "x"),
                ("ONDA_TEST_POSTGRES_URL", "y"),
            ]),
        )
        .expect("variables of other tools are not errors");
    }

    #[test]
    fn env_type_errors_are_named() {
        let err = load_from::<Cfg, _>("", "t.toml", env(&[("ONDA_HTTP_MAX_BODY_BYTES", "lots")]))
            .expect_err("must fail");
        assert!(
            err.to_string().contains("ONDA_HTTP_MAX_BODY_BYTES"),
            "{err}"
        );
    }
}
