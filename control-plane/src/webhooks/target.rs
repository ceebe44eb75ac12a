//! Where a webhook may point: an `http` or `https` URL whose host is not on the control plane's
//! own networks (loopback, private, link-local, unique-local, …) unless the configuration
//! allows them. Names are checked when an endpoint is registered and again on every
//! connection, by the resolver the delivery client uses: a name that resolves to a public
//! address at registration and to a private one later (DNS rebinding) is refused then.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// True for addresses a tenant must not make the control plane call: loopback, private
/// (RFC 1918), shared (RFC 6598), link-local, unspecified, broadcast and multicast IPv4;
/// loopback, unspecified, unique-local, link-local and multicast IPv6, and IPv4 addresses
/// mapped into IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || (a == 100 && (64..128).contains(&b))
        || a == 0
}

/// Checks a URL's form: http or https, a host, no credentials, not too long. The host is not
/// looked at yet (see [`check`]).
pub fn parse(raw: &str) -> Result<Url, String> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(format!("url is longer than {MAX_URL_CHARS} characters."));
    }
    let url = Url::parse(raw).map_err(|e| format!("url {raw:?} is not a URL: {e}."))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url {raw:?}: only http and https URLs are accepted, not {}.",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err(format!("url {raw:?} names no host."));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url {raw:?} carries credentials; check the signature instead."
        ));
    }
    Ok(url)
}

/// [`parse`], then the host: an IP literal must not be private, and a name must resolve, to
/// public addresses only, unless `allow_private`.
pub async fn check(raw: &str, allow_private: bool) -> Result<Url, String> {
    let url = parse(raw)?;
    if allow_private {
        return Ok(url);
    }
    let refused = |ip: IpAddr| {
        format!(
            "url {raw:?}: {ip} is a loopback, private or link-local address; webhooks go to \
             public addresses."
        )
    };
    match url.host() {
        Some(Host::Ipv4(ip)) if is_private(IpAddr::V4(ip)) => Err(refused(IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) if is_private(IpAddr::V6(ip)) => Err(refused(IpAddr::V6(ip))),
        Some(Host::Domain(name)) => {
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| format!("url {raw:?}: {name} does not resolve ({e})."))?
                .collect();
            match addrs.iter().find(|a| is_private(a.ip())) {
                Some(a) => Err(refused(a.ip())),
                None if addrs.is_empty() => Err(format!("url {raw:?}: {name} has no address.")),
                None => Ok(url),
            }
        }
        _ => Ok(url),
    }
}

/// The delivery client's resolver: the system's, with private addresses refused unless
/// allowed, so a connection never reaches one whatever the name resolved to at registration.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// An IP literal host the policy refuses (literals do not go through the resolver).
pub fn refused_literal(url: &Url, allow_private: bool) -> Option<IpAddr> {
    let ip = match url.host()? {
        Host::Ipv4(ip) => IpAddr::V4(ip),
        Host::Ipv6(ip) => IpAddr::V6(ip),
        Host::Domain(_) => return None,
    };
    (!allow_private && is_private(ip)).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_refused_and_public_ones_are_not() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect(ip)), "{ip} is private");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().expect(ip)), "{ip} is public");
        }
    }

    #[test]
    fn only_http_and_https_urls_without_credentials() {
        assert!(parse("https://hooks.example.com/onda").is_ok());
        assert!(parse("http://hooks.example.com:8080/x?y=1").is_ok());
        for bad in [
            "ftp://hooks.example.com/",
            "file:///etc/passwd",
            "hooks.example.com/onda",
            "https://user:pw@hooks.example.com/",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(parse(&long).is_err());
    }

    #[tokio::test]
    async fn literals_and_local_names_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9000/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/",
        ] {
            let err = check(url, false).await.expect_err(url);
            assert!(err.contains("private") || err.contains("resolve"), "{err}");
            assert!(check(url, true).await.is_ok(), "{url} allowed");
        }
        assert!(check("http://8.8.8.8/hook", false).await.is_ok());
        let url = Url::parse("http://10.0.0.1/").expect("url");
        assert!(refused_literal(&url, false).is_some());
        assert!(refused_literal(&url, true).is_none());
    }
}
