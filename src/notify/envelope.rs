//! Event log entries as distribution's notification events, in its envelope
//! (`{"events":[…]}`, the fields of distribution's `notifications/event.go`).

use serde::Serialize;

use super::Action;
use crate::storage::metadata::{Event, EventAction};

/// Distribution 2's envelope media type, the default.
pub const EVENTS_V1: &str = "application/vnd.docker.distribution.events.v1+json";
/// The envelope media type distribution 3 sends (same fields).
pub const EVENTS_V2: &str = "application/vnd.docker.distribution.events.v2+json";

/// Who generates the events: every event's `source`, and the base of `target.url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// This data directory's instance id (stable across restarts).
    pub instance_id: String,
    /// The login server clients reach this registry by, when configured.
    pub addr: Option<String>,
}

/// One notification event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// Instance id and log sequence number: the same for every endpoint and every redelivery.
    pub id: String,
    /// When the change happened (RFC 3339).
    pub timestamp: String,
    /// `push` or `delete`.
    pub action: Action,
    /// What changed.
    pub target: Target,
    /// Who generated it.
    pub source: SourceRecord,
    /// The log sequence number, for the cursor.
    #[serde(skip)]
    pub seq: i64,
}

/// The target of an event, as distribution names its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The manifest's media type, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifest's size in bytes, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// The manifest's digest.
    pub digest: String,
    /// Same as `size` (distribution keeps it for older receivers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<i64>,
    /// The repository.
    pub repository: String,
    /// The manifest's URL at this registry, when its login server is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The tag, for tag changes and pushes by tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The `source` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRecord {
    /// The login server, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The instance id.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// The envelope one POST carries.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// The events, oldest first.
    pub events: &'a [Notice],
}

/// The notification action of a log action.
fn action(log_action: EventAction) -> Action {
    match log_action {
        EventAction::ManifestPut | EventAction::TagSet => Action::Push,
        EventAction::ManifestDelete | EventAction::TagDelete => Action::Delete,
    }
}

/// Notices for log events, oldest first. A manifest put followed by a tag set of the same
/// manifest (one push by tag, logged in one transaction) becomes one push event with the tag,
/// as distribution sends it.
pub fn notices(events: &[Event], source: &Source) -> Vec<Notice> {
    events
        .iter()
        .enumerate()
        .filter(|(i, e)| !folded_into_next(e, events.get(i + 1)))
        .filter_map(|(_, e)| notice(e, source))
        .collect()
}

fn folded_into_next(e: &Event, next: Option<&Event>) -> bool {
    e.action == EventAction::ManifestPut
        && next.is_some_and(|n| {
            n.action == EventAction::TagSet
                && n.seq == e.seq + 1
                && n.repo == e.repo
                && n.digest == e.digest
                && n.origin == e.origin
        })
}

fn notice(e: &Event, source: &Source) -> Option<Notice> {
    let action = action(e.action);
    let url = source
        .addr
        .as_ref()
        .filter(|_| !e.digest.is_empty())
        .map(|a| format!("https://{a}/v2/{}/manifests/{}", e.repo, e.digest));
    Some(Notice {
        id: format!("{}-{}", source.instance_id, e.seq),
        timestamp: crate::auth::admin::rfc3339(e.time),
        action,
        target: Target {
            media_type: e.media_type.clone(),
            size: e.size,
            digest: e.digest.clone(),
            length: e.size,
            repository: e.repo.clone(),
            url,
            tag: e.tag.clone(),
        },
        source: SourceRecord {
            addr: source.addr.clone(),
            instance_id: source.instance_id.clone(),
        },
        seq: e.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::metadata::Origin;
    use serde_json::json;

    const D: &str = "sha256:aa";
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    fn ev(seq: i64, action: EventAction, tag: Option<&str>, known: bool) -> Event {
        Event {
            seq,
            time: 1_767_225_600,
            repo: "team/app".into(),
            action,
            tag: tag.map(str::to_owned),
            digest: D.into(),
            previous: None,
            media_type: known.then(|| OCI.to_owned()),
            size: known.then_some(525),
            origin: Origin::Client,
        }
    }

    fn source() -> Source {
        Source {
            instance_id: "inst".into(),
            addr: Some("gw.example:8443".into()),
        }
    }

    fn json_of(events: &[Event]) -> serde_json::Value {
        let n = notices(events, &source());
        serde_json::to_value(Envelope { events: &n }).unwrap()
    }

    #[test]
    fn a_push_by_tag_is_one_push_event_with_the_tag() {
        let v = json_of(&[
            ev(7, EventAction::ManifestPut, None, true),
            ev(8, EventAction::TagSet, Some("v1"), true),
        ]);
        assert_eq!(
            v,
            json!({"events": [{
                "id": "inst-8",
                "timestamp": "2026-01-01T00:00:00Z",
                "action": "push",
                "target": {
                    "mediaType": OCI, "size": 525, "digest": D, "length": 525,
                    "repository": "team/app",
                    "url": format!("https://gw.example:8443/v2/team/app/manifests/{D}"),
                    "tag": "v1"
                },
                "source": {"addr": "gw.example:8443", "instanceID": "inst"}
            }]})
        );
    }

    #[test]
    fn a_push_by_digest_has_no_tag() {
        let v = json_of(&[ev(3, EventAction::ManifestPut, None, true)]);
        let e = &v["events"][0];
        assert_eq!(e["id"], "inst-3");
        assert_eq!(e["action"], "push");
        assert_eq!(e["target"]["digest"], D);
        assert_eq!(e["target"]["mediaType"], OCI);
        assert!(e["target"].get("tag").is_none());
    }

    #[test]
    fn deletes_of_a_tag_and_of_a_manifest() {
        let v = json_of(&[
            ev(4, EventAction::TagDelete, Some("v1"), false),
            ev(5, EventAction::ManifestDelete, None, false),
        ]);
        let (tag, manifest) = (&v["events"][0], &v["events"][1]);
        assert_eq!(tag["action"], "delete");
        assert_eq!(tag["target"]["tag"], "v1");
        assert_eq!(tag["target"]["repository"], "team/app");
        assert!(tag["target"].get("mediaType").is_none());
        assert!(tag["target"].get("size").is_none());
        assert_eq!(manifest["action"], "delete");
        assert_eq!(manifest["target"]["digest"], D);
        assert!(manifest["target"].get("tag").is_none());
        assert_eq!(manifest["id"], "inst-5");
    }

    #[test]
    fn a_tag_move_is_a_push() {
        let n = notices(
            &[ev(1, EventAction::TagSet, Some("latest"), true)],
            &Source::default(),
        );
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].action, Action::Push);
        assert_eq!(n[0].target.url, None, "no login server, no URL");
        // A put not followed by its own tag set stays a push of its own.
        let mut other = ev(2, EventAction::TagSet, Some("v2"), true);
        other.digest = "sha256:bb".into();
        assert_eq!(
            notices(
                &[ev(1, EventAction::ManifestPut, None, true), other],
                &source()
            )
            .len(),
            2
        );
    }
}
