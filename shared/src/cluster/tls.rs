//! QUIC endpoints of the control channel. The control plane presents a certificate for the fixed
//! name [`SERVER_NAME`] signed by the cluster CA (so nodes need not know which replica or address
//! they reach); nodes present certificates the CA issued at join. A joining node has no CA
//! certificate yet: it trusts whatever chain ends in the CA whose SHA-256 its join token pins.

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The DNS name every control-plane certificate carries.
pub const SERVER_NAME: &str = "onda-control-plane";

pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate of a PEM bundle.
pub fn certs_from_pem(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate PEM: {e}"))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in PEM");
    Ok(certs)
}

pub fn key_from_pem(pem: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| anyhow::anyhow!("bad key PEM: {e}"))
}

/// The control channel's transport: a connection that carries nothing for `idle_timeout` is
/// over (the peers agree on the smaller of their two: the control plane's), and a side sends a
/// keep-alive after a sixth of its own timeout without sending anything. The control plane's
/// pings (and the node's acknowledgements of them) keep the line busy every sixth of the
/// agreed timeout: a network hiccup of up to about two thirds of it loses a few pings, not the
/// connection.
fn transport(idle_timeout: Duration) -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(idle_timeout.try_into()?));
    t.keep_alive_interval(Some(idle_timeout / 6));
    Ok(Arc::new(t))
}

/// The control plane's endpoint configuration: its chain (leaf, CA) and key, and client
/// certificates checked against the CA when presented. Clients without a certificate are let in
/// because joining nodes have none yet; the server only accepts a join from them.
pub fn server_config(
    ca_der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    idle_timeout: Duration,
) -> anyhow::Result<quinn::ServerConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![super::proto::ALPN.to_vec()];
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(transport(idle_timeout)?);
    Ok(cfg)
}

/// A joined node: trusts only the cluster CA and presents its own certificate.
pub fn client_config_mtls(
    ca_der: CertificateDer<'static>,
    cert: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    idle_timeout: Duration,
) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(cert, key)?;
    tls.alpn_protocols = vec![super::proto::ALPN.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(transport(idle_timeout)?);
    Ok(cfg)
}

/// A joining node: trusts a chain whose last certificate is the CA pinned by the token. When the
/// pin does not match, `mismatch` receives a sentence naming both fingerprints, because the TLS
/// error the handshake returns cannot carry it.
pub fn client_config_pinned(
    ca_sha256: &str,
    mismatch: Arc<Mutex<Option<String>>>,
    idle_timeout: Duration,
) -> anyhow::Result<quinn::ClientConfig> {
    let verifier = Arc::new(PinnedCa {
        pin: ca_sha256.to_ascii_lowercase(),
        mismatch,
        provider: provider(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![super::proto::ALPN.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(transport(idle_timeout)?);
    Ok(cfg)
}

#[derive(Debug)]
struct PinnedCa {
    pin: String,
    mismatch: Arc<Mutex<Option<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.last() else {
            self.note("the control plane sent no CA certificate to check the pin against".into());
            return Err(rustls::Error::General("no CA certificate in chain".into()));
        };
        let seen = sha256_hex(ca);
        if seen != self.pin {
            self.note(format!(
                "the control plane's CA fingerprint is {seen}, but the join token pins {}; \
                 the token is for another cluster or someone is in the middle",
                self.pin
            ));
            return Err(rustls::Error::General("CA fingerprint mismatch".into()));
        }
        // The pin vouches for the CA; the usual checks (signature, name, validity) still apply.
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl PinnedCa {
    fn note(&self, why: String) {
        if let Ok(mut slot) = self.mismatch.lock() {
            *slot = Some(why);
        }
    }
}

/// The node certificate a peer presented on a QUIC connection, as its SHA-256; `None` for a
/// connection without a client certificate (a joining node).
pub fn peer_cert_sha256(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| sha256_hex(c))
}
