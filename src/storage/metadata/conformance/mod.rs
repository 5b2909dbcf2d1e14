//! One suite every metadata implementation must pass, written against `&dyn MetadataStore`
//! alone (trait methods, never SQL). SQLite is the reference: each check states what SQLite
//! does, and runs on SQLite in a temporary directory, on PostgreSQL in a database of the test
//! server's (C locale), and on PostgreSQL in a database with a linguistic default collation
//! (where only explicitly bytewise comparisons page and sort as SQLite does).
//!
//! Each check is a function of one concern's file taking an empty store; the `suite!` list
//! below makes one test per check and backend, `conformance::<backend>::<concern>::<check>`, so
//! a failure names both. PostgreSQL tests share one throwaway server, a fresh database each.

mod access;
mod collection;
mod content;
mod events;
mod hierarchy;
mod listings;
mod secrets;
mod state;
mod uploads;

use std::sync::Arc;

use serde_json::{json, Value};

use super::postgres::PgMetadata;
use super::{Event, EventAction, ManifestRecord, MetadataStore, Origin, SqliteMetadata};
use crate::registry::media_types::{OCI_INDEX, OCI_MANIFEST};
use crate::registry::{manifest, Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;
use crate::testing;

/// A check of the suite: it gets a fresh, empty store.
type Check = fn(&dyn MetadataStore);

/// Makes one `#[test]` per check and backend: `backends` maps each module to make to the
/// function that runs a check on a fresh store (named after the test).
macro_rules! suite {
    (backends: [$($backend:ident => $runner:ident),* $(,)?], checks: $checks:tt) => {
        $(suite!(@backend $backend $runner $checks);)*
    };
    (@backend $backend:ident $runner:ident { $($concern:ident: [$($check:ident),* $(,)?];)* }) => {
        #[doc = concat!("The suite run by `", stringify!($runner), "`.")]
        mod $backend {
            $(mod $concern {
                $(#[test]
                fn $check() {
                    use crate::storage::metadata::conformance as suite;
                    let db = concat!(stringify!($concern), "_", stringify!($check));
                    suite::$runner(db, suite::$concern::$check);
                })*
            })*
        }
    };
}

suite! {
    backends: [sqlite => on_sqlite, postgres => on_postgres, postgres_icu => on_postgres_icu],
    checks: {
        content: [
            links_placed_and_present, links_from_another_repository,
            repos_linking_is_sorted_and_capped, manifests_read_back_byte_exact,
            a_manifest_needs_its_blobs, manifest_events, tags_and_manifests_are_deleted,
            set_tag_moves_and_logs, set_tag_if_checks_the_expected, repositories_are_deleted_whole,
        ];
        listings: [
            catalog_pages_bytewise, tags_page_bytewise, tag_digests_and_tag_pages,
            referrers_by_subject, repo_summary_counts, content_counts_and_bytes,
        ];
        events: [
            events_follow_in_order, client_events_and_outbox_size, outbox_bytes_of_client_pushes,
            changed_repositories_after, client_changes_after,
        ];
        uploads: [
            sessions_are_recorded, idle_sessions_follow_touches, caps_refuse_new_sessions,
        ];
        state: [
            values_are_set_and_removed, prefixed_families, counters_bump,
        ];
        secrets: [
            the_first_secret_wins,
        ];
        access: [
            scope_maps_are_created_and_replaced, tokens_need_their_scope_map,
            access_rows_leave_relays_out,
        ];
        hierarchy: [
            apply_hierarchy_changes_both, registries_compare_case_insensitively,
            activation_and_announce, registry_status_keeps_the_fresher_report,
            change_counters_move_together,
        ];
        collection: [
            expire_untagged_manifests, expire_untagged_keeps_the_outbox, lapse_unreferenced_links,
            sweep_blobs_no_one_keeps, holds_keep_blobs_until_they_end, blobs_unkept_by_a_pass,
            passes_go_on_past_a_batch, kept_batches_do_not_hide_deletable_manifests,
        ];
    }
}

/// Runs `check` on a fresh SQLite store in a temporary directory.
fn on_sqlite(_test: &str, check: Check) {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let meta = ok(SqliteMetadata::open(tmp.path()));
    check(&meta);
}

/// The PostgreSQL server the tests running at the moment share.
fn server() -> Arc<testing::SharedPostgres> {
    testing::Postgres::shared()
}

/// Runs `check` on a fresh PostgreSQL database named `db` on the shared server (created as
/// `testing::Postgres` makes them: C locale, where text sorts bytewise anyway).
fn on_postgres(db: &str, check: Check) {
    let server = server();
    let url = server.create_database(db);
    // Declared after the server, so dropped (its connections closed) before it stops.
    let meta = ok(PgMetadata::open(&url));
    check(&meta);
}

/// Runs `check` on a fresh PostgreSQL database whose default collation is linguistic (ICU
/// `en-US`, as a production database's usually is): there, only comparisons and orderings
/// written bytewise (`COLLATE "C"`) give SQLite's pages and orders.
fn on_postgres_icu(db: &str, check: Check) {
    let server = server();
    let db = format!("icu_{db}");
    let admin = server.url();
    let mut client = ::postgres::Client::connect(&admin, ::postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
    client
        .batch_execute(&format!(
            "CREATE DATABASE {db} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu \
             ICU_LOCALE 'en-US' LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {e:?}"));
    drop(client);
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    let meta = ok(PgMetadata::open(&format!("{base}/{db}")));
    check(&meta);
}

/// The value of a call that must succeed; panics at the caller's line otherwise.
#[track_caller]
fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// A repository name.
fn name(s: &str) -> RepoName {
    RepoName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A tag.
fn tag(s: &str) -> Tag {
    Tag::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Tags.
fn tags(names: &[&str]) -> Vec<Tag> {
    names.iter().map(|t| tag(t)).collect()
}

/// A blob's digest and size (the bytes themselves live in a blob backend, not here).
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
}

/// The blob holding `bytes`.
fn blob(bytes: &[u8]) -> Blob {
    Blob {
        digest: Digest::sha256_of(bytes),
        size: bytes.len() as u64,
    }
}

/// Links `b` into `repo` as a finished upload does.
fn link(m: &dyn MetadataStore, repo: &str, b: &Blob) {
    ok(m.link_placed(&name(repo), &b.digest, b.size));
}

/// A manifest as a client pushes it: digest, what the parser kept, and the exact bytes.
#[derive(Debug, Clone)]
struct Manifest {
    digest: Digest,
    parsed: ParsedManifest,
    body: Vec<u8>,
}

impl Manifest {
    /// The body's size, as events and records report it.
    fn size(&self) -> u64 {
        self.body.len() as u64
    }

    /// Its descriptor, to list it in an index or name it as a subject.
    fn descriptor(&self) -> Value {
        descriptor(&self.parsed.media_type, &self.digest, self.size())
    }
}

/// A descriptor as manifests carry it.
fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest.as_str(), "size": size})
}

/// Parses `doc` as a client would push it: pretty-printed with a trailing newline, so a store
/// that re-serialised the body would not give the same bytes back.
fn manifest_of(doc: Value, media_type: &str) -> Manifest {
    let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_else(|e| panic!("{e}"));
    body.extend_from_slice(b"\n");
    let parsed = manifest::parse(&body, Some(media_type)).unwrap_or_else(|e| panic!("{e}"));
    Manifest {
        digest: Digest::sha256_of(&body),
        parsed,
        body,
    }
}

/// An OCI image manifest of `config` and `layers`, with the fields of `extra` added (subject,
/// artifactType, annotations, or anything that makes it distinct).
fn image(config: &Blob, layers: &[&Blob], extra: Value) -> Manifest {
    let config_type = "application/vnd.oci.image.config.v1+json";
    let layer_type = "application/vnd.oci.image.layer.v1.tar";
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, &config.digest, config.size),
        "layers": layers
            .iter()
            .map(|l| descriptor(layer_type, &l.digest, l.size))
            .collect::<Vec<_>>(),
    });
    merge(&mut doc, extra);
    manifest_of(doc, OCI_MANIFEST)
}

/// An OCI index listing `children`, with the fields of `extra` added.
fn index(children: &[&Manifest], extra: Value) -> Manifest {
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|c| c.descriptor()).collect::<Vec<_>>(),
    });
    merge(&mut doc, extra);
    manifest_of(doc, OCI_INDEX)
}

/// Adds the fields of `extra` (an object, or null for none) to `doc`.
fn merge(doc: &mut Value, extra: Value) {
    if let (Some(d), Value::Object(e)) = (doc.as_object_mut(), extra) {
        d.extend(e);
    }
}

/// Stores `man` in `repo` with `tag_names`, as `origin`.
fn put(m: &dyn MetadataStore, origin: Origin, repo: &str, man: &Manifest, tag_names: &[&str]) {
    let r = m.put_manifest_as(
        origin,
        &name(repo),
        &man.digest,
        &man.parsed,
        &man.body,
        &tags(tag_names),
    );
    ok(r);
}

/// The config and layer of the image `push` makes from `seed`.
fn seed_blobs(seed: &str) -> (Blob, Blob) {
    (
        blob(format!("config of {seed}").as_bytes()),
        blob(format!("layer of {seed}").as_bytes()),
    )
}

/// Links the config and layer made from `seed` into `repo` and stores an image of them with
/// `tag_names`, as `origin`; the manifest.
fn push(
    m: &dyn MetadataStore,
    origin: Origin,
    repo: &str,
    seed: &str,
    tag_names: &[&str],
) -> Manifest {
    let (config, layer) = seed_blobs(seed);
    link(m, repo, &config);
    link(m, repo, &layer);
    let man = image(&config, &[&layer], Value::Null);
    put(m, origin, repo, &man, tag_names);
    man
}

/// Every event in the log.
fn all_events(m: &dyn MetadataStore) -> Vec<Event> {
    events_since(m, 0)
}

/// The events after sequence number `seq`.
fn events_since(m: &dyn MetadataStore, seq: i64) -> Vec<Event> {
    ok(m.events_after(seq, 10_000))
}

/// An event without its sequence number and time: what a change must log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    repo: String,
    action: String,
    tag: Option<String>,
    digest: String,
    previous: Option<String>,
    media_type: Option<String>,
    size: Option<i64>,
    origin: String,
}

impl Change {
    /// What storing `man` logs.
    fn manifest_put(origin: Origin, repo: &str, man: &Manifest) -> Self {
        Change {
            media_type: Some(man.parsed.media_type.clone()),
            size: Some(man.body.len() as i64),
            ..Change::bare(origin, repo, EventAction::ManifestPut, None, &man.digest)
        }
    }

    /// What pointing `tag` at `man` logs (`previous`: where it pointed before).
    fn tag_set(
        origin: Origin,
        repo: &str,
        tag: &str,
        man: &Manifest,
        previous: Option<&Digest>,
    ) -> Self {
        Change {
            previous: previous.map(|p| p.to_string()),
            ..Change::manifest_put(origin, repo, man)
        }
        .with(EventAction::TagSet, Some(tag))
    }

    /// What deleting `tag` (pointing at `digest`) logs.
    fn tag_delete(origin: Origin, repo: &str, tag: &str, digest: &Digest) -> Self {
        Change::bare(origin, repo, EventAction::TagDelete, Some(tag), digest)
    }

    /// What deleting the manifest `digest` logs.
    fn manifest_delete(origin: Origin, repo: &str, digest: &Digest) -> Self {
        Change::bare(origin, repo, EventAction::ManifestDelete, None, digest)
    }

    /// An event with no previous digest, media type or size.
    fn bare(
        origin: Origin,
        repo: &str,
        action: EventAction,
        tag: Option<&str>,
        digest: &Digest,
    ) -> Self {
        Change {
            repo: repo.to_owned(),
            action: action.as_str().to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.to_string(),
            previous: None,
            media_type: None,
            size: None,
            origin: origin.as_str().to_owned(),
        }
    }

    /// The same with another action and tag.
    fn with(self, action: EventAction, tag: Option<&str>) -> Self {
        Change {
            action: action.as_str().to_owned(),
            tag: tag.map(str::to_owned),
            ..self
        }
    }
}

/// The changes `events` logged, in order; checks their times fall in `[since, now]` and their
/// sequence numbers increase.
#[track_caller]
fn changes(events: &[Event], since: i64) -> Vec<Change> {
    let now = now_secs();
    for e in events {
        assert!((since..=now).contains(&e.time), "time {} of {e:?}", e.time);
    }
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers increase: {events:?}"
    );
    events
        .iter()
        .map(|e| Change {
            repo: e.repo.clone(),
            action: e.action.as_str().to_owned(),
            tag: e.tag.clone(),
            digest: e.digest.clone(),
            previous: e.previous.clone(),
            media_type: e.media_type.clone(),
            size: e.size,
            origin: e.origin.as_str().to_owned(),
        })
        .collect()
}

/// The changes logged after `seq`, checked as `changes` does.
#[track_caller]
fn changes_since(m: &dyn MetadataStore, seq: i64, since: i64) -> Vec<Change> {
    changes(&events_since(m, seq), since)
}

/// Strings, owned.
fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The manifest `repo` serves for tag `t`.
fn by_tag(m: &dyn MetadataStore, repo: &str, t: &str, with_body: bool) -> Option<ManifestRecord> {
    ok(m.manifest(&name(repo), &Reference::Tag(tag(t)), with_body))
}

/// The manifest `repo` serves for digest `d`.
fn by_digest(
    m: &dyn MetadataStore,
    repo: &str,
    d: &Digest,
    with_body: bool,
) -> Option<ManifestRecord> {
    ok(m.manifest(&name(repo), &Reference::Digest(d.clone()), with_body))
}

/// Waits for the first second after `t` (Unix seconds) and returns the time, so what is stamped
/// from now on is later than anything stamped by `t`.
fn next_second(t: i64) -> i64 {
    while now_secs() <= t {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    now_secs()
}

/// The newest event's sequence number.
fn newest(m: &dyn MetadataStore) -> i64 {
    ok(m.newest_event_seq())
}
