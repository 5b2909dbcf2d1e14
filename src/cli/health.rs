//! `connected-registry health`: the container health check. A `FROM scratch` image has no curl,
//! so Docker's `HEALTHCHECK` runs the binary itself: exit 0 when `/acr/v1/_health` says healthy.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::fail;

/// Flags of `health`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Health endpoint to ask [default: http://127.0.0.1:<port of CONNECTED_REGISTRY_LISTEN,
    /// else 8080>/acr/v1/_health, or https on the TLS port when plain HTTP is off].
    #[arg(long)]
    url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

/// Asks the registry whether it is healthy; prints its answer.
pub fn run(args: HealthArgs) -> ExitCode {
    let (url, own_tls) = match args.url {
        Some(u) => (u, false),
        None => default_url(&|k| std::env::var(k).ok()),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(probe(&url, Duration::from_secs(args.timeout), own_tls)) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{url}: {e}")),
    }
}

/// GETs the endpoint; the body when it answers 200 with `"status":"Healthy"`.
async fn probe(url: &str, timeout: Duration, own_tls: bool) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        // Our own listener on the loopback address: its certificate names the gateway, not
        // 127.0.0.1, and only liveness is asked.
        .danger_accept_invalid_certs(own_tls)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    let healthy =
        serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["status"] == "Healthy");
    if status.is_success() && healthy {
        Ok(body)
    } else {
        Err(format!("not healthy ({status}): {}", body.trim()))
    }
}

/// The endpoint of this container's own registry, from the variables `serve` reads; true when
/// it is the HTTPS listener.
fn default_url(env: &dyn Fn(&str) -> Option<String>) -> (String, bool) {
    let plain_off = env("CONNECTED_REGISTRY_TLS_CERT").is_some()
        && !env("CONNECTED_REGISTRY_HTTP_ENABLED").is_some_and(|v| v == "true" || v == "1");
    let (var, fallback, scheme) = if plain_off {
        ("CONNECTED_REGISTRY_TLS_LISTEN", 8443, "https")
    } else {
        ("CONNECTED_REGISTRY_LISTEN", 8080, "http")
    };
    let addr = env(var).and_then(|a| a.parse::<SocketAddr>().ok());
    let host = match addr.map(|a| a.ip()) {
        Some(ip) if !ip.is_unspecified() && ip.is_ipv6() => format!("[{ip}]"),
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = addr.map_or(fallback, |a| a.port());
    (
        format!("{scheme}://{host}:{port}/acr/v1/_health"),
        plain_off,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_with(vars: &[(&str, &str)]) -> (String, bool) {
        default_url(&|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn follows_the_listen_settings() {
        let plain = "http://127.0.0.1:8080/acr/v1/_health";
        assert_eq!(url_with(&[]), (plain.into(), false));
        let any = url_with(&[("CONNECTED_REGISTRY_LISTEN", "0.0.0.0:5000")]);
        assert_eq!(any.0, "http://127.0.0.1:5000/acr/v1/_health");
        let one = url_with(&[("CONNECTED_REGISTRY_LISTEN", "127.0.0.9:81")]);
        assert_eq!(one.0, "http://127.0.0.9:81/acr/v1/_health");
        let v6 = url_with(&[("CONNECTED_REGISTRY_LISTEN", "[::1]:81")]);
        assert_eq!(v6.0, "http://[::1]:81/acr/v1/_health");
        let tls = url_with(&[("CONNECTED_REGISTRY_TLS_CERT", "/c/tls.crt")]);
        assert_eq!(tls, ("https://127.0.0.1:8443/acr/v1/_health".into(), true));
        let both = url_with(&[
            ("CONNECTED_REGISTRY_TLS_CERT", "/c/tls.crt"),
            ("CONNECTED_REGISTRY_HTTP_ENABLED", "true"),
        ]);
        assert_eq!(both, (plain.into(), false));
    }
}
