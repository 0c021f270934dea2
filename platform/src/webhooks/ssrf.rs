//! SSRF guard for every URL the sidecar calls on someone's behalf (webhooks, integrations,
//! notification adapters): http(s) only, no credentials in the URL, and every address the host
//! resolves to must be public — checked when the URL is registered and again by the resolver at
//! each request (so DNS rebinding cannot slip a private address in). Redirects are not followed.

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Whether an address is on the public internet (not loopback, private, link-local — which
/// includes cloud metadata at 169.254.169.254 —, CGNAT, multicast, documentation or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b)
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL we call.
    #[error("{0}")]
    Invalid(String),
    /// It points at a non-public address.
    #[error("{0} resolves to a non-public address ({1}); refused (SSRF protection)")]
    NotPublic(String, IpAddr),
    /// DNS failed.
    #[error("{0} does not resolve")]
    Unresolvable(String),
}

/// Parses and checks a target URL (syntax, scheme, credentials) — and, unless
/// `allow_private`, that every address it resolves to is public.
pub async fn check_url(url: &str, allow_private: bool) -> Result<Url, UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::Invalid(format!(
            "URL longer than {MAX_URL_LEN} characters"
        )));
    }
    let parsed = Url::parse(url).map_err(|e| UrlError::Invalid(format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Invalid("only http and https URLs".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Invalid(
            "credentials in the URL are not allowed".into(),
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| UrlError::Invalid("the URL has no host".into()))?
        .trim_matches(['[', ']'])
        .to_string();
    if allow_private {
        return Ok(parsed);
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| UrlError::Unresolvable(host.clone()))?
        .collect();
    if addrs.is_empty() {
        return Err(UrlError::Unresolvable(host));
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(UrlError::NotPublic(host, bad.ip()));
    }
    Ok(parsed)
}

/// A DNS resolver for reqwest that refuses names resolving to non-public addresses.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(Box::new(UrlError::NotPublic(host, bad.ip()))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client for outbound calls: no redirects, the timeout given, and (unless
/// `allow_private`) the public-only resolver.
pub fn outbound_client(
    timeout: std::time::Duration,
    allow_private: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dartmouth-platform/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    builder.build()
}

/// Checks the host of a URL about to be called when it is an IP literal (the resolver never
/// sees those).
pub fn check_literal_host(url: &Url, allow_private: bool) -> Result<(), UrlError> {
    if allow_private {
        return Ok(());
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(UrlError::NotPublic(ip.to_string(), ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn refuses_bad_and_private_urls() {
        for (url, what) in [
            ("ftp://example.com/x", "only http"),
            ("http://user:pw@example.com/", "credentials"),
            ("not a url", "not a URL"),
            ("http://127.0.0.1:9/hook", "non-public"),
            ("http://[::1]/hook", "non-public"),
            ("http://169.254.169.254/latest/meta-data", "non-public"),
            ("http://localhost/hook", "non-public"),
        ] {
            let err = check_url(url, false).await.unwrap_err().to_string();
            assert!(err.contains(what), "{url}: {err}");
        }
        assert!(check_url("http://127.0.0.1:9/hook", true).await.is_ok());
    }
}
