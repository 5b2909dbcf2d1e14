//! The IoT Edge API proxy as the real module configures nginx (reference: iotedge-protocols.md
//! §3): TLS 1.2 on port 8000 with a server certificate from the gateway's CA, client certificates
//! asked for but never required, only `/v2…` and `/acr…` forwarded to the registry with the URI
//! unchanged, `X-Forwarded-Host` = the client's `Host` as sent, `X-Forwarded-Proto` = the scheme,
//! `Host` = the upstream's name (`connected-registry:8080`), HTTP/1.1 with nginx's default
//! `Connection: close`, request bodies buffered by nginx (up to 1000G), 160k × 32 response
//! buffers, a 3600 s read timeout; every other path falls to nginx's static handling (404).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::netns;
use super::pki::{self, Ca};
use super::require;

/// The upstream name the real proxy sends as `Host` (the registry module's name and port).
pub const ROUTE_ADDRESS: &str = "connected-registry:8080";
/// The port the API proxy listens on (`NGINX_DEFAULT_PORT`'s default).
pub const PORT: u16 = 8000;

/// nginx running as the API proxy in front of one registry; stopped when dropped.
pub struct ApiProxy {
    child: Option<Child>,
    /// `ip:8000`, as clients put it in image references.
    pub addr: String,
    /// The CA that signed the proxy's certificate (the gateway's root CA).
    pub ca: PathBuf,
    /// Whether `/etc/docker/certs.d/<addr>` was written for Docker and must be removed.
    docker_trust: Option<PathBuf>,
    /// The network namespace nginx runs in (`None`: the test's own).
    ns: Option<String>,
    dir: TempDir,
}

/// The nginx configuration: the API proxy template's routing for a connected registry.
fn config(dir: &Path, addr: &str, upstream: &str) -> String {
    let d = dir.display();
    // Both prefixes are routed alike.
    let route = format!(
        r#"
            proxy_http_version 1.1;
            proxy_pass http://{upstream};
            proxy_set_header Host {ROUTE_ADDRESS};
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            client_max_body_size 1000G;
        "#
    );
    format!(
        r#"daemon off;
master_process off;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{}}
http {{
    proxy_buffers 32 160k;
    proxy_buffer_size 160k;
    proxy_read_timeout 3600;
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    root {d}/static;
    server {{
        listen {addr} ssl default_server;
        chunked_transfer_encoding on;
        ssl_protocols TLSv1.2;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/private_key_server.pem;
        ssl_client_certificate {d}/trustedCA.crt;
        ssl_verify_depth 7;
        ssl_verify_client optional_no_ca;
        location /v2 {{{route}}}
        location /acr {{{route}}}
    }}
}}
"#
    )
}

impl ApiProxy {
    /// Starts nginx on `ip:8000` forwarding to `upstream` (`127.0.0.1:<port>` of a registry;
    /// the real proxy resolves `connected-registry` to the same kind of address).
    pub fn start(ip: &str, upstream: &str) -> Self {
        Self::start_in(None, ip, upstream)
    }

    /// Like `start`, with nginx inside network namespace `ns` (`Net::ns(i)`; `None`: the test's
    /// own): `ip` is then one of that namespace's addresses and `upstream` is resolved there
    /// (`127.0.0.1` being the namespace's loopback).
    pub fn start_in(ns: Option<&str>, ip: &str, upstream: &str) -> Self {
        let nginx = require("nginx");
        let dir = tempfile::Builder::new()
            .prefix("apiproxy")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let p = dir.path();
        let addr = format!("{ip}:{PORT}");
        let ca = Ca::new("gateway root CA");
        let (cert, key) = ca.server_for(&[ip, "gateway.local", "IoTEdgeAPIProxy"]);
        pki::write(p, "server.crt", &cert);
        pki::write(p, "private_key_server.pem", &key);
        let ca_path = ca.write(p, "trustedCA.crt");
        std::fs::create_dir_all(p.join("static")).unwrap_or_else(|e| panic!("{e}"));
        pki::write(p, "nginx.conf", &config(p, &addr, upstream));
        let child = netns::in_ns(ns, nginx)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .arg("-p")
            .arg(p)
            .arg("-e")
            .arg(p.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nginx: {e}"));
        let mut proxy = ApiProxy {
            child: Some(child),
            addr,
            ca: ca_path,
            docker_trust: None,
            ns: ns.map(str::to_owned),
            dir,
        };
        proxy.wait_ready(Duration::from_secs(20));
        proxy
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let client = self.client();
        let url = format!("{}/v2/", self.url());
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nginx exited ({st}):\n{}", self.error_log());
            }
            // Any HTTP answer will do (the upstream may not be up yet: 502). The test's own
            // namespace cannot reach into another, so there curl runs inside it.
            let answered = match self.ns.as_deref() {
                None => client.get(&url).send().is_ok(),
                Some(ns) => {
                    let cacert = [OsStr::new("--cacert"), self.ca.as_os_str()];
                    netns::curl_status(Some(ns), &url, &cacert).is_some()
                }
            };
            if answered {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx not ready in {limit:?}:\n{}", self.error_log());
    }

    /// `https://ip:8000`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The network namespace nginx runs in (`None`: the test's own).
    pub fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    /// An HTTP client that trusts the gateway's CA only (usable from the test's own namespace,
    /// so for a proxy in a namespace only if it is layer 1, adjacent to the host).
    pub fn client(&self) -> reqwest::blocking::Client {
        let pem = std::fs::read(&self.ca).unwrap_or_else(|e| panic!("{e}"));
        let ca = reqwest::Certificate::from_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
        reqwest::blocking::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// nginx's access log (one line per request it served).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// nginx's error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Makes Docker trust the gateway's CA for this address, as a device that installed the
    /// root CA does (`/etc/docker/certs.d/<host:port>/ca.crt`, read by every daemon on the
    /// machine, so it is removed again when the proxy stops). A dockerd in a network namespace
    /// reads the same file: `netns::in_ns` changes the network namespace only.
    pub fn trust_for_docker(&mut self) {
        let d = PathBuf::from("/etc/docker/certs.d").join(&self.addr);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        std::fs::copy(&self.ca, d.join("ca.crt")).unwrap_or_else(|e| panic!("{e}"));
        self.docker_trust = Some(d);
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = self.docker_trust.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
