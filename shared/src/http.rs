//! The one way an Onda crate makes an HTTP client. reqwest speaks TLS through rustls with the
//! process's crypto provider (`rustls-no-provider`: ring, the provider quinn, rcgen and sqlx
//! already use, so there is one TLS stack in the binary); building a client before a provider
//! is installed would panic inside reqwest. These functions install ring first, so a library,
//! a test or a benchmark never has to remember to. Clippy's `disallowed-methods` (clippy.toml)
//! keeps `reqwest::Client::new`/`builder` from coming back.

use std::sync::Once;

/// Installs ring as the process's rustls provider, unless one is installed already.
pub fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first; any one will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder with the TLS provider in place.
#[allow(clippy::disallowed_methods)]
pub fn client_builder() -> reqwest::ClientBuilder {
    install_tls_provider();
    reqwest::Client::builder()
}

/// A client with reqwest's defaults (system roots, no timeout).
///
/// # Panics
/// If the system's TLS roots cannot be read, as `reqwest::Client::new` does.
pub fn client() -> reqwest::Client {
    match client_builder().build() {
        Ok(client) => client,
        Err(e) => panic!("an HTTP client with the defaults: {e}"),
    }
}

/// `GET url` with a client of the defaults, as `reqwest::get` does.
pub async fn get<U: reqwest::IntoUrl>(url: U) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}
