//! Control-plane configuration: the TOML file (`onda control-plane --config cp.toml`), every key
//! overridable as `ONDA_<SECTION>_<KEY>`, then validated into what the server runs with.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the panel API (and later the redirector). `ONDA_HTTP_LISTEN`.
    pub listen: String,
    /// Largest JSON body the API accepts, in bytes. `ONDA_HTTP_MAX_BODY_BYTES`.
    pub max_body_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".to_string(),
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/onda.db` (created when missing) or `postgres://user@host/db`.
    /// `ONDA_DATABASE_URL`.
    pub url: String,
    /// Pool size. `ONDA_DATABASE_MAX_CONNECTIONS`.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://onda.db".to_string(),
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The admin bearer token; empty disables admin access. Prefer `ONDA_AUTH_ADMIN_TOKEN` to
    /// writing it in a file.
    pub admin_token: String,
}

/// A configuration checked for what serde cannot check.
#[derive(Debug, Clone)]
pub struct Validated {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub database_url: String,
    pub max_connections: u32,
    pub admin_token: Option<String>,
}

impl ControlPlaneConfig {
    pub fn validate(&self) -> anyhow::Result<Validated> {
        let listen = self.http.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "http.listen = {:?} is not an address such as \"0.0.0.0:8080\"",
                self.http.listen
            )
        })?;
        if !(1024..=64 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            anyhow::bail!(
                "http.max_body_bytes = {} must be between 1024 and 67108864",
                self.http.max_body_bytes
            );
        }
        if self.database.max_connections == 0 || self.database.max_connections > 1000 {
            anyhow::bail!(
                "database.max_connections = {} must be between 1 and 1000",
                self.database.max_connections
            );
        }
        let token = self.auth.admin_token.trim();
        if !token.is_empty() && token.len() < 16 {
            anyhow::bail!(
                "auth.admin_token is shorter than 16 characters; use a long random token"
            );
        }
        Ok(Validated {
            listen,
            max_body_bytes: usize::try_from(self.http.max_body_bytes).unwrap_or(usize::MAX),
            database_url: self.database.url.clone(),
            max_connections: self.database.max_connections,
            admin_token: (!token.is_empty()).then(|| token.to_string()),
        })
    }
}
