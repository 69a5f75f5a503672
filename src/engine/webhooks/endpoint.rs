//! Which caller `webhook_endpoint`s the gateway will deliver to (DESIGN §6).
//!
//! https only; plain http only to loopback and only in dev mode. An address literal must be
//! global unicast (private, loopback, link-local, shared, metadata, documentation,
//! benchmarking and IPv4-in-IPv6 forms are refused), and names that mean a local network
//! (`localhost`, `*.internal`, `*.local`, single labels) are refused. This checks what the URL
//! says: a public name that resolves to a private address is the platform's to stop (see the
//! README's security notes for what each platform's egress does).

use std::net::IpAddr;

use url::{Host, Url};

use crate::engine::base::Error;

const FIELD: &str = "webhook_endpoint";

/// Parses and checks a `webhook_endpoint`. `dev_mode` allows loopback (http or https).
pub fn validate(raw: &str, dev_mode: bool) -> Result<Url, Error> {
    let invalid = |message: &str| Err(Error::invalid(FIELD, message));
    if raw.len() > 2048 {
        return invalid("must be at most 2048 characters");
    }
    let Ok(url) = Url::parse(raw) else {
        return invalid("must be an absolute https URL");
    };
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("must not contain credentials");
    }
    let loopback = match url.host() {
        None => return invalid("must have a host"),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                true
            } else if name.ends_with(".internal") || name.ends_with(".local") || !name.contains('.') {
                return invalid("must be a public host name");
            } else {
                false
            }
        }
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip))?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip))?,
    };
    match (url.scheme(), loopback, dev_mode) {
        (_, true, false) => invalid("must not target a loopback address"),
        ("https", _, _) | ("http", true, true) => Ok(url),
        ("http", false, _) => invalid("must use https"),
        _ => invalid("must be an https URL"),
    }
}

/// `Ok(true)` for loopback (allowed in dev mode), `Ok(false)` for a global unicast address,
/// `Err` for everything else. An allowlist, not a blocklist: every special-purpose range
/// (IANA's registries) is refused, including those that reach IPv4 through IPv6 (IPv4-
/// compatible, NAT64, 6to4, Teredo).
fn check_ip(ip: IpAddr) -> Result<bool, Error> {
    let refuse = || Err(Error::invalid(FIELD, "must be a public (global unicast) address"));
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                return Ok(true);
            }
            let [a, b, c, _] = v4.octets();
            let special = a == 0                                  // 0.0.0.0/8 "this network"
                || a == 10                                        // private
                || (a == 100 && (64..128).contains(&b))           // 100.64.0.0/10 shared (CGNAT)
                || (a == 169 && b == 254)                         // link-local, cloud metadata
                || (a == 172 && (16..32).contains(&b))            // private
                || (a == 192 && b == 0 && (c == 0 || c == 2))     // IETF assignments, documentation
                || (a == 192 && b == 88 && c == 99)               // 6to4 relay anycast
                || (a == 192 && b == 168)                         // private
                || (a == 198 && (b == 18 || b == 19))             // 198.18.0.0/15 benchmarking
                || (a == 198 && b == 51 && c == 100)              // documentation
                || (a == 203 && b == 0 && c == 113)               // documentation
                || a >= 224; // multicast, reserved, broadcast
            if special {
                return refuse();
            }
            Ok(false)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return check_ip(IpAddr::V4(v4));
            }
            if v6.is_loopback() {
                return Ok(true);
            }
            let [s0, s1, ..] = v6.segments();
            let global_unicast = (s0 & 0xe000) == 0x2000; // 2000::/3
            let special = s0 == 0x2002                      // 6to4: an IPv4 address inside
                || (s0 == 0x2001 && s1 < 0x0200)            // 2001::/23 IETF (Teredo, benchmarking, …)
                || (s0 == 0x2001 && s1 == 0x0db8)           // documentation
                || s0 == 0x3fff; // 3fff::/20 documentation
            if !global_unicast || special {
                return refuse();
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_endpoints_pass() {
        for ok in [
            "https://hooks.example.com/baseten",
            "https://8.8.8.8/x",
            "https://[2606:4700::1111]/x",
            "https://example.com:8443/a?b=c",
        ] {
            assert!(validate(ok, false).is_ok(), "{ok}");
        }
    }

    #[test]
    fn host_names_are_ascii_or_punycode() {
        // url's IDNA back end is the ASCII-only stub (Cargo.toml): a Unicode host name is a
        // clear refusal naming the field, its punycode form works.
        assert!(validate("https://xn--bcher-kva.example/hook", false).is_ok());
        let err = validate("https://bücher.example/hook", false).unwrap_err();
        assert!(matches!(&err, Error::InvalidField { field, .. } if field == FIELD), "{err:?}");
    }

    #[test]
    fn loopback_only_in_dev_mode_and_http_only_there() {
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://localhost:9000/hook",
            "https://[::1]/hook",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            assert!(validate(url, false).is_err(), "{url} outside dev mode");
            assert!(validate(url, true).is_ok(), "{url} in dev mode");
        }
        assert!(validate("http://hooks.example.com/x", true).is_err());
    }

    #[test]
    fn private_link_local_metadata_and_odd_urls_are_refused() {
        let refused = [
            "https://10.0.0.1/x",
            "https://172.16.5.4/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[fd00:ec2::254]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://[::]/x",
            "https://metadata.google.internal/x",
            "https://printer.local/x",
            "https://intranet/x",
            "https://user:pw@example.com/x",
            "ftp://example.com/x",
            "not a url",
            "/relative",
            "https://255.255.255.255/x",
            // IPv4 reached through IPv6, and the special-purpose ranges a blocklist forgets.
            "https://[::7f00:1]/x",
            "https://[64:ff9b::a00:5]/x",
            "https://[2002:a9fe:a9fe::]/x",
            "https://[2001:0:4136:e378::1]/x",
            "https://[fec0::1]/x",
            "https://[2001:db8::1]/x",
            "https://198.18.0.1/x",
            "https://198.19.255.1/x",
            "https://192.0.0.8/x",
            "https://192.88.99.1/x",
        ];
        for url in refused {
            for dev in [false, true] {
                let err = validate(url, dev).unwrap_err();
                assert!(matches!(&err, Error::InvalidField { field, .. } if field == FIELD), "{url}: {err:?}");
            }
        }
    }
}
