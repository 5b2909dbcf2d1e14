//! containerd's registry host configuration (`config_path` style, containerd docs/hosts.md):
//! the `hosts.toml` that sends containerd to the registry over HTTPS trusting its CA, or over
//! plain HTTP, and the CA copied beside it. Pure: nothing here touches the disk.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The file containerd reads in each host directory (`<config_path>/<HOST:PORT>/hosts.toml`).
pub const HOSTS_FILE: &str = "hosts.toml";
/// The copied CA certificate, beside `hosts.toml`.
pub const CA_FILE: &str = "ca.crt";
/// First line of every file trust-distribution writes: only files starting with it are replaced
/// or removed. A comment both in TOML and in PEM (text outside the BEGIN/END lines).
pub const MARKER: &str = "# Written by connected-registry trust-distribution, which keeps it \
                          current and removes it when it stops; do not edit.";

/// Why the registry's host configuration cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostsError {
    /// The registry is not `HOST:PORT`.
    #[error(
        "registry {0:?} is not HOST:PORT (a DNS name, an IPv4 address or a [bracketed] IPv6 \
         address, then a port 1-65535)"
    )]
    NotHostPort(String),
    /// The CA file holds no certificate.
    #[error("holds no PEM certificate")]
    NoCertificate,
    /// containerd's TOML names paths as strings.
    #[error("path {0} is not UTF-8")]
    NonUtf8Path(String),
}

/// A registry as image references name it, and as containerd names its host directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    host: String,
    port: u16,
}

impl RegistryHost {
    /// Parses `HOST:PORT`; the host is a DNS name, an IPv4 address or a bracketed IPv6 address,
    /// so the result is also a safe single directory name (no `/`, no `..`).
    pub fn parse(s: &str) -> Result<Self, HostsError> {
        let bad = || HostsError::NotHostPort(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(bad)?;
        let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => is_dns_name(host),
        };
        if !valid {
            return Err(bad());
        }
        Ok(RegistryHost {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Labels of letters, digits and inner hyphens, dot-separated (an IPv4 address is one too).
fn is_dns_name(h: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !h.is_empty() && h.len() <= 253 && h.split('.').all(label_ok)
}

/// How containerd reaches the registry.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// HTTPS, trusting the CA at this path as containerd on the node sees it.
    Tls {
        /// The copied CA (`<config_path>/<HOST:PORT>/ca.crt`).
        ca: &'a Path,
    },
    /// Plain HTTP: an `http://` server is all containerd needs (no `skip_verify`, which is
    /// about certificates, not the scheme).
    PlainHttp,
}

/// The `hosts.toml` for `registry`: the server and one host entry (pull and resolve only: nodes
/// never push), with the CA for HTTPS; starts with [`MARKER`].
pub fn render(registry: &RegistryHost, access: Access<'_>) -> Result<String, HostsError> {
    let (scheme, ca) = match access {
        Access::Tls { ca } => {
            let ca = ca
                .to_str()
                .ok_or_else(|| HostsError::NonUtf8Path(ca.display().to_string()))?;
            ("https", Some(ca))
        }
        Access::PlainHttp => ("http", None),
    };
    let url = quote(&format!("{scheme}://{registry}"));
    let mut text = format!(
        "{MARKER}\n\
         # containerd uses it when its config_path names the directory above this one.\n\
         server = {url}\n\
         \n\
         [host.{url}]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    if let Some(ca) = ca {
        text.push_str(&format!("  ca = {}\n", quote(ca)));
    }
    Ok(text)
}

/// The copied CA file: [`MARKER`] then the PEM as read; an error unless it holds a certificate.
pub fn ca_file(pem: &[u8]) -> Result<Vec<u8>, HostsError> {
    let has_cert = CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok());
    if !has_cert {
        return Err(HostsError::NoCertificate);
    }
    let mut out = Vec::with_capacity(MARKER.len() + 1 + pem.len() + 1);
    out.extend_from_slice(MARKER.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(pem);
    if !pem.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(out)
}

/// A TOML basic string (quotes, backslashes and control characters escaped).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUTest\n-----END CERTIFICATE-----\n";

    fn reg(s: &str) -> RegistryHost {
        RegistryHost::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn registry_must_be_host_and_port() {
        for ok in [
            "127.0.0.1:5000",
            "registry.local:443",
            "cr-1.example.com:8443",
            "[::1]:5000",
            "localhost:1",
        ] {
            assert_eq!(reg(ok).to_string(), ok);
        }
        for bad in [
            "",
            "registry",
            "registry:",
            ":5000",
            "registry:0",
            "registry:65536",
            "registry:+80",
            "https://registry:443",
            "registry:443/path",
            "../etc:80",
            "..:80",
            "a..b:80",
            "-a:80",
            "::1:5000",
            "[zz]:5000",
            "reg istry:80",
        ] {
            assert_eq!(
                RegistryHost::parse(bad),
                Err(HostsError::NotHostPort(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn tls_hosts_toml_names_the_server_and_the_ca() {
        let ca = Path::new("/etc/containerd/certs.d/127.0.0.1:5000/ca.crt");
        let text =
            render(&reg("127.0.0.1:5000"), Access::Tls { ca }).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.starts_with(&format!("{MARKER}\n")), "{text}");
        let t: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(t["server"].as_str(), Some("https://127.0.0.1:5000"));
        let host = &t["host"]["https://127.0.0.1:5000"];
        let caps: Vec<&str> = host["capabilities"]
            .as_array()
            .unwrap_or_else(|| panic!("{text}"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(caps, ["pull", "resolve"]);
        assert_eq!(host["ca"].as_str(), ca.to_str());
        assert!(!text.contains("skip_verify"), "{text}");
        assert_eq!(t.len(), 2, "only server and host: {text}");
    }

    #[test]
    fn plain_http_hosts_toml_uses_the_http_scheme_only() {
        let text = render(&reg("[::1]:8080"), Access::PlainHttp).unwrap_or_else(|e| panic!("{e}"));
        let t: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(t["server"].as_str(), Some("http://[::1]:8080"));
        let host = t["host"]["http://[::1]:8080"]
            .as_table()
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            host.keys().map(String::as_str).collect::<Vec<_>>(),
            ["capabilities"]
        );
        assert!(!text.contains("skip_verify") && !text.contains("ca ="));
    }

    #[test]
    fn odd_ca_paths_stay_valid_toml() {
        let ca = Path::new("/tmp/we\"ird\\dir/ca.crt");
        let text = render(&reg("r:1"), Access::Tls { ca }).unwrap_or_else(|e| panic!("{e}"));
        let t: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(t["host"]["https://r:1"]["ca"].as_str(), ca.to_str());
    }

    #[test]
    fn ca_file_needs_a_certificate_and_gets_the_marker() {
        assert_eq!(
            ca_file(b"not a certificate"),
            Err(HostsError::NoCertificate)
        );
        assert_eq!(ca_file(b""), Err(HostsError::NoCertificate));
        let out = ca_file(PEM.trim_end().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("{MARKER}\n{PEM}"),
            "marker first, PEM unchanged, newline-terminated"
        );
        // Still one certificate to any PEM reader: the marker is text outside the boundaries.
        assert_eq!(CertificateDer::pem_slice_iter(&out).count(), 1);
    }
}
