//! One MQTT connection to edgeHub (rumqttc over rustls): CONNECT with a fresh SAS token,
//! subscribe before the first GET, follow the desired properties, report, and end when the
//! token is due for renewal (MQTT has no in-band re-authentication: a new connection carries
//! the new token).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::{Map, Value};

use super::desired::{topic_param, Desired, Step};
use super::{reported, TwinHost};
use crate::config::iot_edge::ModuleEnv;
use crate::edge::sas::{self, Signer};
use crate::storage::fsutil::now_secs;

/// Responses to GET and reported patches.
const RESPONSES: &str = "$iothub/twin/res/#";
/// Desired-property patches.
const DESIRED_PATCHES: &str = "$iothub/twin/PATCH/properties/desired/#";
const DESIRED_PREFIX: &str = "$iothub/twin/PATCH/properties/desired/";
const RESPONSE_PREFIX: &str = "$iothub/twin/res/";
/// The api-version in the username (edgeHub checks presence only; the SDKs' current value).
const API_VERSION: &str = "2020-09-30";
/// MQTT keep-alive: edgeHub drops a silent client after 1.5 times this.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// edgeHub's largest inbound message.
const MAX_PACKET: usize = 256 * 1024;
/// How long CONNECT may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// An unanswered request is sent again after this (edgeHub does not redeliver responses).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How soon an unversioned (offline) twin is asked for again.
const OFFLINE_TWIN_RETRY: Duration = Duration::from_secs(30);

/// How a session ended without an error.
pub enum End {
    /// The token is due: connect again with a new one.
    Renew,
}

/// What one session needs.
pub struct Session<'a> {
    /// The module's identity and edgeHub's address.
    pub env: &'a ModuleEnv,
    /// Signs the token.
    pub signer: &'a Signer,
    /// Trusts edgeHub's certificate.
    pub tls: Arc<rustls::ClientConfig>,
    /// The registry side.
    pub host: &'a Arc<dyn TwinHost>,
    /// Token lifetime; the connection is renewed after 80 % of it.
    pub token_ttl: Duration,
    /// Least time between two reported patches.
    pub report_every: Duration,
}

/// A request waiting for its answer.
struct Pending {
    rid: String,
    sent: Instant,
}

/// The state of one connection.
struct Conn {
    client: AsyncClient,
    next_rid: u64,
    get: Option<Pending>,
    get_again_at: Option<Instant>,
    report: Option<(Pending, Map<String, Value>)>,
    last_reported: Option<Map<String, Value>>,
    last_report_at: Option<Instant>,
}

impl Session<'_> {
    /// Runs one connection until the token is due (`Ok`) or it fails (`Err`, why).
    pub async fn run(&self, desired: &mut Desired) -> Result<End, String> {
        let started = Instant::now();
        let expiry = now_secs().max(0) as u64 + self.token_ttl.as_secs().max(1);
        let sr = sas::audience(&self.env.hub_host, &self.env.device_id, &self.env.module_id);
        let token = sas::token(self.signer, &sr, expiry)
            .await
            .map_err(|e| format!("cannot sign the edgeHub token: {e}"))?;
        let (client, mut events) = AsyncClient::new(self.options(token), 32);
        connect(&mut events).await?;
        tracing::info!(
            edgehub = %format!("{}:{}", self.env.gateway_host, self.env.mqtt_port),
            token_expires = expiry,
            "module twin: connected to edgeHub"
        );
        self.host.link_up();
        client
            .subscribe(RESPONSES, QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
        client
            .subscribe(DESIRED_PATCHES, QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            client,
            next_rid: 0,
            get: None,
            get_again_at: None,
            report: None,
            last_reported: None,
            last_report_at: None,
        };
        let renew_at = started + self.token_ttl.mul_f64(0.8);
        let mut subacks = 0;
        // Each tick may build a report (status and outbox queries): once a second is plenty.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        // Responses reach only subscriptions older than the request.
                        if subacks == 2 {
                            conn.send_get()?;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        self.on_publish(&mut conn, desired, &p.topic, &p.payload)?;
                    }
                    Ok(Event::Incoming(Packet::Disconnect)) => {
                        return Err("edgeHub closed the connection".into());
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("edgeHub connection: {e}")),
                },
                _ = tick.tick() => {
                    if Instant::now() >= renew_at {
                        let _ = conn.client.try_disconnect();
                        return Ok(End::Renew);
                    }
                    if subacks >= 2 {
                        conn.housekeeping()?;
                        self.maybe_report(&mut conn)?;
                    }
                }
            }
        }
    }

    fn options(&self, token: String) -> MqttOptions {
        let env = self.env;
        let client_id = format!("{}/{}", env.device_id, env.module_id);
        let username = format!(
            "{}/{}/{}/?api-version={API_VERSION}&DeviceClientType={}",
            env.hub_host,
            env.device_id,
            env.module_id,
            percent_encoding::utf8_percent_encode(
                concat!("connected-registry/", env!("CARGO_PKG_VERSION")),
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        let mut o = MqttOptions::new(client_id, env.gateway_host.clone(), env.mqtt_port);
        o.set_credentials(username, token);
        o.set_keep_alive(KEEP_ALIVE);
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            self.tls.clone(),
        )));
        o
    }

    fn on_publish(
        &self,
        conn: &mut Conn,
        desired: &mut Desired,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), String> {
        if topic.starts_with(DESIRED_PREFIX) {
            let version = topic_param(topic, "$version").and_then(|v| v.parse().ok());
            match desired.on_patch(version, payload) {
                Ok(Step::Changed) => self.apply(desired),
                Ok(Step::Same) => {}
                Ok(Step::Refetch) => {
                    tracing::info!(
                        patch_version = ?version,
                        known_version = ?desired.version,
                        "module twin: a desired patch was missed; fetching the whole twin"
                    );
                    conn.send_get()?;
                }
                Err(e) => tracing::warn!(error = %e, "module twin: desired patch ignored"),
            }
            return Ok(());
        }
        let Some(rest) = topic.strip_prefix(RESPONSE_PREFIX) else {
            return Ok(());
        };
        let status: u16 = rest
            .split('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rid = topic_param(topic, "$rid").unwrap_or_default();
        if conn.get.as_ref().is_some_and(|g| g.rid == rid) {
            conn.get = None;
            self.on_twin(conn, desired, status, payload);
        } else if conn.report.as_ref().is_some_and(|(r, _)| r.rid == rid) {
            let Some((_, sent)) = conn.report.take() else {
                return Ok(());
            };
            match status {
                200..=299 => {
                    conn.last_reported = Some(sent);
                    self.host.reported_rejected(None);
                }
                429 => tracing::info!("module twin: reported properties throttled; later"),
                _ => {
                    // Kept as sent so the same patch is not re-sent in a loop; the next change
                    // sends again.
                    tracing::warn!(
                        status,
                        "module twin: edgeHub refused the reported properties"
                    );
                    self.host.reported_rejected(Some(status));
                    conn.last_reported = Some(sent);
                }
            }
        }
        Ok(())
    }

    fn on_twin(&self, conn: &mut Conn, desired: &mut Desired, status: u16, payload: &[u8]) {
        if status != 200 {
            tracing::warn!(
                status,
                "module twin: edgeHub did not give the twin; asking again"
            );
            conn.get_again_at = Some(Instant::now() + OFFLINE_TWIN_RETRY);
            return;
        }
        match desired.on_twin(payload) {
            Ok(Step::Changed) => self.apply(desired),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "module twin: the twin is unusable"),
        }
        if desired.version.is_none() {
            // An offline edgeHub with nothing stored: keep the last known properties and ask
            // again, it may reach IoT Hub meanwhile.
            tracing::info!("module twin: edgeHub has no twin yet (offline); keeping the last known desired properties");
            conn.get_again_at = Some(Instant::now() + OFFLINE_TWIN_RETRY);
        }
    }

    fn apply(&self, desired: &Desired) {
        let Some(version) = desired.version else {
            return;
        };
        match self.host.apply_desired(version, &desired.doc) {
            Ok(()) => tracing::info!(version, "module twin: desired properties applied"),
            Err(e) => tracing::error!(
                version,
                error = %e,
                "module twin: desired properties invalid; the configuration in force stays"
            ),
        }
    }

    fn maybe_report(&self, conn: &mut Conn) -> Result<(), String> {
        if conn.report.is_some() {
            return Ok(());
        }
        if conn
            .last_report_at
            .is_some_and(|t| t.elapsed() < self.report_every)
        {
            return Ok(());
        }
        let now = reported::fit(self.host.reported());
        let patch = reported::patch(conn.last_reported.as_ref(), &now);
        if patch.is_empty() {
            return Ok(());
        }
        let rid = conn.rid();
        let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
        let body = serde_json::to_vec(&patch).map_err(|e| e.to_string())?;
        conn.client
            .try_publish(topic, QoS::AtMostOnce, false, body)
            .map_err(|e| e.to_string())?;
        conn.report = Some((
            Pending {
                rid,
                sent: Instant::now(),
            },
            now,
        ));
        conn.last_report_at = Some(Instant::now());
        Ok(())
    }
}

impl Conn {
    fn rid(&mut self) -> String {
        self.next_rid += 1;
        self.next_rid.to_string()
    }

    fn send_get(&mut self) -> Result<(), String> {
        let rid = self.rid();
        self.client
            .try_publish(
                format!("$iothub/twin/GET/?$rid={rid}"),
                QoS::AtMostOnce,
                false,
                Vec::new(),
            )
            .map_err(|e| e.to_string())?;
        self.get = Some(Pending {
            rid,
            sent: Instant::now(),
        });
        self.get_again_at = None;
        Ok(())
    }

    /// Requests whose answer was lost are sent again; an offline twin is asked for again.
    fn housekeeping(&mut self) -> Result<(), String> {
        let lost = |p: &Pending| p.sent.elapsed() > ANSWER_TIMEOUT;
        if self.get.as_ref().is_some_and(lost)
            || self.get_again_at.is_some_and(|t| Instant::now() >= t)
        {
            self.send_get()?;
        }
        if self.report.as_ref().is_some_and(|(p, _)| lost(p)) {
            self.report = None;
        }
        Ok(())
    }
}

/// Polls until CONNACK; a refusal names edgeHub's reason.
async fn connect(events: &mut rumqttc::EventLoop) -> Result<(), String> {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    return Err(refused(code));
                }
                Err(e) => return Err(format!("cannot connect to edgeHub: {e}")),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, wait)
        .await
        .map_err(|_| "edgeHub did not answer CONNECT".to_owned())?
}

fn refused(code: ConnectReturnCode) -> String {
    match code {
        ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword => {
            "edgeHub refused the module's token (CONNACK 5: not authorized)".into()
        }
        ConnectReturnCode::ServiceUnavailable => {
            "edgeHub refused the connection (CONNACK 3: server unavailable, e.g. a username it cannot parse)".into()
        }
        other => format!("edgeHub refused the connection ({other:?})"),
    }
}
