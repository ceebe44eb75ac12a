//! The cluster CA: created at the first start of the first control plane (`ca.crt`, and `ca.key`
//! readable only by its owner), loaded on every later start. It signs node certificates at join
//! and each replica's server certificate at start. Replicas must share it: the first to start
//! records its fingerprint in the database and a replica with another CA refuses to start.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;

pub struct ClusterCa {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    pub sha256: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterCa({})", self.sha256)
    }
}

const VALID_DAYS: i64 = 3650;

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl ClusterCa {
    /// Loads `dir/ca.crt` and `dir/ca.key`, creating both when neither exists.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<ClusterCa> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the CA directory {}", dir.display()))?;
        let crt = dir.join("ca.crt");
        let key = dir.join("ca.key");
        if !key.exists() && !crt.exists() {
            let pair = KeyPair::generate().context("cannot generate the CA key")?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Onda cluster CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, VALID_DAYS);
            let cert = params.self_signed(&pair).context("cannot sign the CA")?;
            write_private(&key, &pair.serialize_pem())?;
            std::fs::write(&crt, cert.pem())
                .with_context(|| format!("cannot write {}", crt.display()))?;
            tracing::info!("created the cluster CA in {}", dir.display());
        }
        check_private(&key)?;
        let cert_pem = std::fs::read_to_string(&crt)
            .with_context(|| format!("cannot read {}", crt.display()))?;
        let key_pem = std::fs::read_to_string(&key)
            .with_context(|| format!("cannot read {}", key.display()))?;
        let pair = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a private key", key.display()))?;
        let cert_der = onda_shared::cluster::tls::certs_from_pem(&cert_pem)?
            .into_iter()
            .next()
            .context("ca.crt holds no certificate")?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, pair)
            .with_context(|| format!("{} and {} do not match", crt.display(), key.display()))?;
        Ok(ClusterCa {
            sha256: onda_shared::cluster::tls::sha256_hex(&cert_der),
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// Signs a node's certificate request. Only the public key is taken from the request; the
    /// names are ours (the node id), so a node cannot claim another identity.
    pub fn sign_node(&self, csr_pem: &str, node_id: &str) -> anyhow::Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the certificate request is not a valid PKCS#10 PEM")?;
        let mut params = CertificateParams::new(vec![node_id.to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, VALID_DAYS);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .context("cannot sign the node certificate")?;
        Ok(cert.pem())
    }

    /// A fresh server certificate for this replica, for the fixed control-plane name.
    pub fn server_identity(
        &self,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let pair = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::DnsName(
            onda_shared::cluster::tls::SERVER_NAME.try_into()?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, 365);
        let cert = params.signed_by(&pair, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key))
    }
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// A CA key others can read is a CA anyone on the machine can use: refuse to run with it.
fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} is readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_a_private_key_and_signs_requests() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let again = ClusterCa::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.sha256, again.sha256);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let node_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["whatever".to_string()])
            .unwrap()
            .serialize_request(&node_key)
            .unwrap();
        let pem = ca.sign_node(&csr.pem().unwrap(), "node_abc").unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"));
        assert!(ca.sign_node("garbage", "node_abc").is_err());
        ca.server_identity().unwrap();
    }

    #[test]
    fn refuses_a_world_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::load_or_create(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                dir.path().join("ca.key"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            let err = ClusterCa::load_or_create(dir.path()).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }
}
