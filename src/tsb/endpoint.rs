//! One URL type for the connect path: a TSB node's base URL and a proxy URL are parsed by the
//! `url` crate (WHATWG URL parsing: IPv6 literals, percent-encoding, default ports) into an
//! [`Endpoint`], and nothing on the connect path splits URLs by hand.

use std::fmt;
use std::net::IpAddr;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The user and password of a URL (percent-decoded).
pub(crate) type UserInfo = (String, Option<String>);

/// Where to connect: scheme, host, port and the base path put before each request path.
/// Credentials are not part of it (a proxy's are kept apart, see `proxy.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) scheme: Scheme,
    /// The host as the resolver and TLS take it: a name in lower case (IDNA-mapped by the
    /// `url` crate), or an IP literal without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The base path, no trailing `/` (empty for the root).
    pub(crate) base_path: String,
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL with a host; whitespace, control characters, a
    /// query, a fragment and credentials are refused. The port defaults to the scheme's.
    pub(crate) fn parse(text: &str) -> Result<Endpoint, String> {
        Self::parse_with_userinfo(text, false).map(|(e, _)| e)
    }

    /// As [`Endpoint::parse`], also returning the URL's user and password (percent-decoded) when
    /// `allow_userinfo`.
    pub(crate) fn parse_with_userinfo(
        text: &str,
        allow_userinfo: bool,
    ) -> Result<(Endpoint, Option<UserInfo>), String> {
        // The url crate silently drops tabs and newlines and trims spaces and control
        // characters: refuse them as written instead.
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the URL contains whitespace or control characters".into());
        }
        let url = url::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(format!(
                    "expected an http:// or https:// URL, got scheme \"{}\"",
                    other.chars().take(20).collect::<String>()
                ))
            }
        };
        let host = match url.host() {
            // An http(s) URL's domain is never empty (the url crate refuses an empty host).
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err("the URL has no host".into()),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the URL must not have a query or fragment".into());
        }
        let userinfo = if url.username().is_empty() && url.password().is_none() {
            None
        } else if allow_userinfo {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| "the URL's credentials are not valid UTF-8".to_string())
            };
            Some((
                decode(url.username())?,
                url.password().map(decode).transpose()?,
            ))
        } else {
            return Err("credentials in the URL are not supported here".into());
        };
        let port = url.port().unwrap_or(scheme.default_port());
        let base_path = url.path().trim_end_matches('/').to_string();
        Ok((
            Endpoint {
                scheme,
                host,
                port,
                base_path,
            },
            userinfo,
        ))
    }

    /// The host as written in a URL or a `Host` header: IPv6 in brackets.
    pub(crate) fn host_for_uri(&self) -> String {
        if self.host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `host:port` (IPv6 in brackets): a CONNECT request's target.
    pub(crate) fn host_port(&self) -> String {
        format!("{}:{}", self.host_for_uri(), self.port)
    }

    /// The `Host` header: the host, and the port unless it is the scheme's default
    /// (RFC 9110 §7.2).
    pub(crate) fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host_for_uri()
        } else {
            self.host_port()
        }
    }

    /// The host as an IP address, when it is a literal.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// `scheme://authority/base` (no credentials).
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080/tsb").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.base_path.as_str()),
            (Scheme::Http, "127.0.0.1", 8080, "/tsb")
        );
        assert_eq!(e.authority(), "127.0.0.1:8080");
        let e = Endpoint::parse("https://[::1]").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("::1", 443, "")
        );
        assert_eq!(e.authority(), "[::1]");
        assert_eq!(e.host_port(), "[::1]:443");
        let e = Endpoint::parse("https://[::1]:8443/").unwrap();
        assert_eq!(e.authority(), "[::1]:8443");
        assert_eq!(e.to_string(), "https://[::1]:8443");
        let e = Endpoint::parse("HTTPS://TSB.Example:443/a/b/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("tsb.example", 443));
        assert_eq!(
            (e.authority().as_str(), e.base_path.as_str()),
            ("tsb.example", "/a/b")
        );
        assert_eq!(Endpoint::parse("http://localhost").unwrap().port, 80);
        for bad in [
            "http://h:99999",
            "http://:80",
            "ftp://x",
            "nourl",
            "http://",
            "http://h/?q",
            "http://h/#f",
            "http://u:p@h",
            "http://h\n.example",
            "http://h\t",
            "http://h\u{7f}",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
        // Refused as written, though the url crate would trim them away: a space (not a
        // control character) and a control character that is no whitespace, at either end.
        for bad in [
            "http://h ",
            " http://h",
            "http://h\u{1}",
            "\u{1f}http://h",
            "http://h\u{7f}",
        ] {
            assert_eq!(
                Endpoint::parse(bad).unwrap_err(),
                "the URL contains whitespace or control characters",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn userinfo_is_percent_decoded_and_kept_apart() {
        let (e, u) =
            Endpoint::parse_with_userinfo("http://al%40ce:p%3Ass@proxy:3128", true).unwrap();
        assert_eq!(e.to_string(), "http://proxy:3128");
        assert_eq!(u, Some(("al@ce".into(), Some("p:ss".into()))));
        let (_, u) = Endpoint::parse_with_userinfo("http://bob@proxy:3128", true).unwrap();
        assert_eq!(u, Some(("bob".into(), None)));
        let (_, u) = Endpoint::parse_with_userinfo("http://proxy:3128", true).unwrap();
        assert_eq!(u, None);
    }
}
