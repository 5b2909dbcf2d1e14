//! Management of the tree at the root, behind `connected-registry connected-registry …`: the
//! operations, rules and JSON of `az acr connected-registry`, on the data directory.

use std::time::Duration;

use serde_json::{json, Value};

use super::definition::{
    parse_mode, sync_scope_map_name, sync_token_name, Definition, GcProperties, SyncProperties,
    DEFAULT_LOG_LEVEL,
};
use super::family::{Family, Member};
use super::report::effective_state;
use super::HierarchyError;
use crate::auth::admin::{generate_credential, scope_map_row};
use crate::auth::model::ScopeMap;
use crate::auth::token::Token;
use crate::config::Mode;
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{HierarchyChange, MetadataStore, RecordSource, RegistryRow};

/// `create`'s arguments.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `--name`.
    pub name: String,
    /// `--parent`.
    pub parent: Option<String>,
    /// `--mode`.
    pub mode: String,
    /// `--repository`.
    pub repositories: Vec<String>,
    /// The sync flags.
    pub sync: SyncFlags,
    /// `--client-tokens`.
    pub client_tokens: Vec<String>,
    /// `--notifications`.
    pub notifications: Vec<String>,
}

/// The sync and logging flags `create` and `update` share.
#[derive(Debug, Clone, Default)]
pub struct SyncFlags {
    /// `--sync-schedule`.
    pub schedule: Option<String>,
    /// `--sync-window`.
    pub window: Option<String>,
    /// `--sync-message-ttl`.
    pub message_ttl: Option<String>,
    /// `--sync-interval`.
    pub interval: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--gc-enabled`.
    pub gc_enabled: Option<bool>,
    /// `--gc-schedule`.
    pub gc_schedule: Option<String>,
}

/// `update`'s arguments.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The sync flags.
    pub sync: SyncFlags,
    /// `--add-client-tokens`.
    pub add_client_tokens: Vec<String>,
    /// `--remove-client-tokens`.
    pub remove_client_tokens: Vec<String>,
    /// `--add-notifications`.
    pub add_notifications: Vec<String>,
    /// `--remove-notifications`.
    pub remove_notifications: Vec<String>,
    /// `--add-repository`.
    pub add_repositories: Vec<String>,
    /// `--remove-repository`.
    pub remove_repositories: Vec<String>,
}

fn not_found(name: &str) -> HierarchyError {
    HierarchyError::NotFound(format!(
        "The connected registry '{}' could not be found.",
        crate::registry::echo(name)
    ))
}

fn apply_gc(g: &mut GcProperties, f: &SyncFlags) {
    if let Some(v) = f.gc_enabled {
        g.enabled = v;
    }
    if let Some(v) = &f.gc_schedule {
        g.schedule = v.clone();
    }
}

fn apply_sync(s: &mut SyncProperties, log_level: &mut String, f: &SyncFlags) {
    if let Some(v) = &f.schedule {
        s.schedule = v.clone();
    }
    if let Some(v) = &f.window {
        s.sync_window = Some(v.clone()).filter(|w| !w.is_empty());
    }
    if let Some(v) = &f.message_ttl {
        s.message_ttl = v.clone();
    }
    if let Some(v) = &f.interval {
        s.interval = Some(v.clone()).filter(|w| !w.is_empty());
    }
    if let Some(v) = &f.log_level {
        *log_level = v.clone();
    }
}

/// Adds the items of `add` missing from `list`, then drops those in `remove`; an item in both
/// is ACR's "Update ambiguity".
fn edit_list(
    list: &mut Vec<String>,
    add: &[String],
    remove: &[String],
    what: &str,
    flags: &str,
) -> Result<(), HierarchyError> {
    let mut both: Vec<&String> = add.iter().filter(|a| remove.contains(a)).collect();
    if !both.is_empty() {
        both.sort();
        both.dedup();
        return Err(HierarchyError::Invalid(format!(
            "Update ambiguity. Duplicate {what} were provided with {flags} arguments.\n{both:?}"
        )));
    }
    for a in add {
        if !list.contains(a) {
            list.push(a.clone());
        }
    }
    list.retain(|x| !remove.contains(x));
    Ok(())
}

fn check_client_tokens(meta: &dyn MetadataStore, tokens: &[String]) -> Result<(), HierarchyError> {
    for t in tokens {
        let known = meta
            .token(t)?
            .is_some_and(|row| row.source == RecordSource::Local);
        if !known {
            return Err(HierarchyError::Invalid(format!(
                "The client token '{}' could not be found: create it first with \
                 `connected-registry token create`.",
                crate::registry::echo(t)
            )));
        }
    }
    Ok(())
}

/// Applies `f` to copies of `defs` and puts back those it changed.
fn edit_each(family: &mut Family, defs: Vec<Definition>, f: impl Fn(&mut Definition)) {
    for d in defs {
        let mut edited = d.clone();
        f(&mut edited);
        if edited != d {
            family.put(edited);
        }
    }
}

fn definitions(members: Vec<&Member>) -> Vec<Definition> {
    members.into_iter().map(|m| m.definition.clone()).collect()
}

/// Adds `repos` to every ancestor of `name` that lacks them (ACR: repositories are added to the
/// registry and its ancestors, so a child's repositories stay a subset of its parent's).
fn extend_ancestors(family: &mut Family, name: &str, repos: &[String]) {
    let ancestors = definitions(family.ancestors(name));
    edit_each(family, ancestors, |a| {
        for r in repos {
            if !a.has_repository(r) {
                a.repositories.push(r.clone());
            }
        }
    });
}

/// `list` without duplicates, first occurrence kept.
fn dedup(list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for x in list {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// `create`: the definition, its sync scope map and token (no password until `get-settings`),
/// and its ancestors' permissions.
pub fn create(meta: &dyn MetadataStore, spec: &Spec) -> Result<Value, HierarchyError> {
    super::definition::validate_name(&spec.name)?;
    let stored = Family::load(meta)?;
    let mut family = stored.clone();
    if family.get(&spec.name).is_some() {
        return Err(HierarchyError::Conflict(format!(
            "The connected registry '{}' already exists.",
            spec.name
        )));
    }
    let mode = parse_mode(&spec.mode)?;
    if let Some(p) = &spec.parent {
        let parent = family.get(p).ok_or_else(|| {
            HierarchyError::NotFound(format!(
                "The parent connected registry '{}' could not be found.",
                crate::registry::echo(p)
            ))
        })?;
        let pmode = parent.definition.mode();
        if pmode == Mode::ReadOnly && mode != Mode::ReadOnly {
            return Err(HierarchyError::Invalid(format!(
                "Can't create the registry '{}' with mode '{}' when the connected registry parent \
                 '{}' mode is '{}'. For more information on connected registries please visit \
                 https://aka.ms/acr/connected-registry.",
                spec.name,
                mode.as_str().to_ascii_lowercase(),
                parent.definition.name,
                pmode.as_str()
            )));
        }
    }
    check_client_tokens(meta, &spec.client_tokens)?;
    let mut d = Definition {
        name: spec.name.clone(),
        parent: spec
            .parent
            .as_ref()
            .and_then(|p| family.get(p))
            .map(|m| m.definition.name.clone()),
        mode: mode.as_str().to_owned(),
        repositories: dedup(&spec.repositories),
        sync: SyncProperties::default(),
        log_level: DEFAULT_LOG_LEVEL.to_owned(),
        client_tokens: dedup(&spec.client_tokens),
        notifications: dedup(&spec.notifications),
        garbage_collection: GcProperties::default(),
        deactivations: 0,
    };
    apply_sync(&mut d.sync, &mut d.log_level, &spec.sync);
    apply_gc(&mut d.garbage_collection, &spec.sync);
    d.validate()?;
    let repos = d.repositories.clone();
    family.put(d);
    extend_ancestors(&mut family, &spec.name, &repos);
    let token = Token {
        name: sync_token_name(&spec.name),
        scope_map: sync_scope_map_name(&spec.name),
        enabled: true,
        passwords: Vec::new(),
        created: now_secs(),
    };
    let mut extra = HierarchyChange::default();
    if meta.token(&token.name)?.is_none() {
        extra.tokens.push(token.to_row()?);
    }
    commit(meta, &stored, &family, extra)?;
    show(meta, &spec.name, super::report::DEFAULT_OFFLINE_AFTER)
}

/// `update`: sync properties, log level, client tokens, notifications and repositories.
pub fn update(meta: &dyn MetadataStore, name: &str, c: &Changes) -> Result<Value, HierarchyError> {
    let stored = Family::load(meta)?;
    let mut family = stored.clone();
    let mut d = family
        .get(name)
        .ok_or_else(|| not_found(name))?
        .definition
        .clone();
    check_client_tokens(meta, &c.add_client_tokens)?;
    apply_sync(&mut d.sync, &mut d.log_level, &c.sync);
    apply_gc(&mut d.garbage_collection, &c.sync);
    edit_list(
        &mut d.client_tokens,
        &c.add_client_tokens,
        &c.remove_client_tokens,
        "client token ids",
        "--add-client-tokens and --remove-client-tokens",
    )?;
    edit_list(
        &mut d.notifications,
        &c.add_notifications,
        &c.remove_notifications,
        "notifications list",
        "--add-notifications and --remove-notifications",
    )?;
    let name = d.name.clone();
    family.put(d);
    edit_repositories(
        &mut family,
        &name,
        &c.add_repositories,
        &c.remove_repositories,
    )?;
    let d = family
        .get(&name)
        .map(|m| m.definition.clone())
        .ok_or_else(|| not_found(&name))?;
    d.validate()?;
    commit(meta, &stored, &family, HierarchyChange::default())?;
    show(meta, &name, super::report::DEFAULT_OFFLINE_AFTER)
}

/// Adds repositories to `name` and its ancestors, removes them from `name` and its
/// descendants (ACR's `repo` / `permissions update`).
fn edit_repositories(
    family: &mut Family,
    name: &str,
    add: &[String],
    remove: &[String],
) -> Result<(), HierarchyError> {
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let mut d = family
        .get(name)
        .ok_or_else(|| not_found(name))?
        .definition
        .clone();
    edit_list(
        &mut d.repositories,
        add,
        remove,
        "repository names",
        "--add and --remove",
    )?;
    family.put(d);
    extend_ancestors(family, name, add);
    let below = definitions(family.descendants(name));
    edit_each(family, below, |b| {
        b.repositories.retain(|r| !remove.contains(r))
    });
    Ok(())
}

/// `repo --add/--remove`.
pub fn repo(
    meta: &dyn MetadataStore,
    name: &str,
    add: &[String],
    remove: &[String],
) -> Result<Value, HierarchyError> {
    if add.is_empty() && remove.is_empty() {
        return Err(HierarchyError::Invalid(
            "No repository permissions to update.".into(),
        ));
    }
    let stored = Family::load(meta)?;
    let mut family = stored.clone();
    let name = family
        .get(name)
        .ok_or_else(|| not_found(name))?
        .definition
        .name
        .clone();
    edit_repositories(&mut family, &name, add, remove)?;
    for m in family.all() {
        m.definition.validate()?;
    }
    commit(meta, &stored, &family, HierarchyChange::default())?;
    show(meta, &name, super::report::DEFAULT_OFFLINE_AFTER)
}

/// `delete [--cleanup]`: a registry with children must lose them first. Returns the warning to
/// print when the sync token and scope map were kept.
pub fn delete(
    meta: &dyn MetadataStore,
    name: &str,
    cleanup: bool,
) -> Result<Option<String>, HierarchyError> {
    let stored = Family::load(meta)?;
    let mut family = stored.clone();
    let m = family.get(name).ok_or_else(|| not_found(name))?;
    let name = m.definition.name.clone();
    let kids: Vec<String> = family
        .children(&name)
        .iter()
        .map(|k| k.definition.name.clone())
        .collect();
    if !kids.is_empty() {
        return Err(HierarchyError::Conflict(format!(
            "The connected registry '{name}' has children ({}): delete them first.",
            kids.join(", ")
        )));
    }
    family.remove(&name);
    let mut extra = HierarchyChange::default();
    let (token, map) = (sync_token_name(&name), sync_scope_map_name(&name));
    if cleanup {
        extra.delete_tokens.push(token.clone());
        extra.delete_scope_maps.push(map.clone());
    }
    commit(meta, &stored, &family, extra)?;
    Ok((!cleanup).then(|| {
        format!(
            "Connected registry successfully deleted. Please cleanup your sync tokens and scope \
             maps. Run the following commands for cleanup:\n\tconnected-registry token delete -n \
             {token} --yes\n\tconnected-registry scope-map delete -n {map} --yes"
        )
    }))
}

/// `deactivate`: forgets the active instance, here and (through the configuration) at the
/// registry's parent, so another instance may activate.
pub fn deactivate(meta: &dyn MetadataStore, name: &str) -> Result<Value, HierarchyError> {
    let stored = Family::load(meta)?;
    let mut family = stored.clone();
    let mut d = family
        .get(name)
        .ok_or_else(|| not_found(name))?
        .definition
        .clone();
    d.deactivations += 1;
    let name = d.name.clone();
    family.put(d);
    commit(meta, &stored, &family, HierarchyChange::default())?;
    meta.set_activation(&name, "{}", true)?;
    show(meta, &name, super::report::DEFAULT_OFFLINE_AFTER)
}

/// `get-settings`: the connection string, with a new password when `generate` names a slot.
pub fn get_settings(
    meta: &dyn MetadataStore,
    name: &str,
    generate: Option<u8>,
    protocol: &str,
    endpoint: Option<&str>,
    own_login_server: Option<&str>,
) -> Result<String, HierarchyError> {
    let family = Family::load(meta)?;
    let m = family.get(name).ok_or_else(|| not_found(name))?;
    let protocol = protocol.to_ascii_lowercase();
    if protocol != "http" && protocol != "https" {
        return Err(HierarchyError::Invalid(
            "argument error: --parent-protocol must be http or https.".into(),
        ));
    }
    let parent_login = match &m.definition.parent {
        Some(p) => family
            .get(p)
            .and_then(|pm| pm.report.as_ref())
            .and_then(|r| r.login_server.clone()),
        None => own_login_server.map(str::to_owned),
    };
    let endpoint = endpoint
        .map(str::to_owned)
        .or(parent_login)
        .ok_or_else(|| {
            HierarchyError::Invalid(format!(
            "the endpoint where '{}' reaches its parent is not known yet: pass --parent-endpoint \
             HOST:PORT (behind the IoT Edge API proxy, $IOTEDGE_PARENTHOSTNAME:8000)",
            m.definition.name
        ))
        })?;
    let token = sync_token_name(&m.definition.name);
    let password = match generate {
        Some(n @ (1 | 2)) => {
            let slot = format!("password{n}");
            let v = generate_credential(meta, &token, &[slot.as_str()], None)?;
            v["credentials"]["passwords"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == slot.as_str()))
                .and_then(|p| p["value"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| HierarchyError::Internal("no password was generated".into()))?
        }
        Some(_) => {
            return Err(HierarchyError::Invalid(
                "argument error: --generate-password must be 1 or 2.".into(),
            ))
        }
        None => "<use --generate-password to generate a new password>".to_owned(),
    };
    Ok(format!(
        "ConnectedRegistryName={};SyncTokenName={token};SyncTokenPassword={password};\
         ParentGatewayEndpoint={endpoint};ParentEndpointProtocol={protocol}",
        m.definition.name
    ))
}

/// Stores the difference between `stored` (as loaded) and `family` (as edited): changed
/// definitions, deleted ones, and every sync scope map brought in line with the tree, in one
/// transaction with `change`.
fn commit(
    meta: &dyn MetadataStore,
    stored: &Family,
    family: &Family,
    mut change: HierarchyChange,
) -> Result<(), HierarchyError> {
    let maps = meta.all_access_rows()?.scope_maps;
    for m in family.all() {
        let same = stored
            .get(&m.definition.name)
            .is_some_and(|s| s.definition == m.definition);
        if !same {
            change.registries.push(RegistryRow {
                name: m.definition.name.clone(),
                definition: serde_json::to_string(&m.definition)
                    .map_err(|e| HierarchyError::Internal(e.to_string()))?,
                source: RecordSource::Local,
                activation: "{}".into(),
                status: None,
                heard: None,
                created: m.created,
            });
        }
        let Some((grants, gateways)) = family.sync_grants(&m.definition.name) else {
            continue;
        };
        let map_name = sync_scope_map_name(&m.definition.name);
        let map = ScopeMap::new(
            &map_name,
            Some(format!(
                "Created by connected registry sync token: {}",
                m.definition.name
            )),
            grants,
        )?
        .with_gateways(gateways);
        let existing = maps.iter().find(|r| r.name == map_name);
        let current = existing.and_then(|r| crate::auth::scope_map_from_row(r).ok());
        if current.as_ref() != Some(&map) {
            let created = existing.map_or_else(now_secs, |r| r.created);
            change.scope_maps.push(scope_map_row(&map, created)?);
        }
    }
    change.delete_registries.extend(
        stored
            .all()
            .filter(|m| family.get(&m.definition.name).is_none())
            .map(|m| m.definition.name.clone()),
    );
    meta.apply_hierarchy(&change)?;
    Ok(())
}

/// ACR's JSON view of one registry, with the connection state the root sees now.
pub fn resource(m: &Member, offline_after: Duration, now: i64) -> Value {
    let d = &m.definition;
    let r = m.report.as_ref();
    let state = effective_state(r, m.heard, now, offline_after);
    json!({
        "name": d.name,
        "type": "Microsoft.ContainerRegistry/registries/connectedRegistries",
        "mode": d.mode,
        "repositories": d.repositories,
        "parent": {
            "id": d.parent,
            "syncProperties": {
                "tokenId": sync_token_name(&d.name),
                "schedule": d.sync.schedule,
                "syncWindow": d.sync.sync_window,
                "messageTtl": d.sync.message_ttl,
                "interval": d.sync.interval,
                "lastSyncTime": r.and_then(|r| r.last_sync_time.clone()),
            },
        },
        "clientTokenIds": d.client_tokens,
        "notificationsList": d.notifications,
        "logging": {"logLevel": d.log_level, "auditLogStatus": "Disabled"},
        "garbageCollection": d.garbage_collection,
        "activation": {"status": if m.activation.instance.is_some() { "Active" } else { "Inactive" }},
        "connectionState": state,
        "lastActivityTime": m.heard.map(crate::auth::admin::rfc3339),
        "loginServer": {"host": r.and_then(|r| r.login_server.clone())},
        "version": r.map(|r| r.version.clone()),
        "statusDetails": r.map(|r| r.status_details.clone()).unwrap_or_default(),
        "storage": r.map(|r| r.storage.clone()),
        "outbox": r.map(|r| r.outbox.clone()),
        "provisioningState": "Succeeded",
    })
}

/// `show`.
pub fn show(
    meta: &dyn MetadataStore,
    name: &str,
    offline_after: Duration,
) -> Result<Value, HierarchyError> {
    let family = Family::load(meta)?;
    let m = family.get(name).ok_or_else(|| not_found(name))?;
    Ok(resource(m, offline_after, now_secs()))
}

/// `list`, in tree order (parents before their children).
pub fn list(
    meta: &dyn MetadataStore,
    offline_after: Duration,
) -> Result<Vec<Value>, HierarchyError> {
    let family = Family::load(meta)?;
    let now = now_secs();
    Ok(family
        .tree_order()
        .into_iter()
        .map(|m| resource(m, offline_after, now))
        .collect())
}

/// The columns of `list -o table` and what each shows, as `az` prints them.
const LIST_COLUMNS: [(&str, &[&str]); 6] = [
    ("NAME", &["name"]),
    ("MODE", &["mode"]),
    ("CONNECTION STATE", &["connectionState"]),
    ("PARENT", &["parent", "id"]),
    ("LOGIN SERVER", &["loginServer", "host"]),
    (
        "LAST SYNC (UTC)",
        &["parent", "syncProperties", "lastSyncTime"],
    ),
];

/// `-o table`: a header, dashes as wide as each column, then one line per registry; a missing
/// value is a single space, as `az` prints it.
pub fn table(rows: &[Value]) -> String {
    let cell = |row: &Value, path: &[&str]| {
        let v = path.iter().fold(row, |v, k| &v[*k]);
        match v {
            Value::String(s) => s.clone(),
            Value::Null => " ".to_owned(),
            other => other.to_string(),
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| LIST_COLUMNS.iter().map(|(_, p)| cell(r, p)).collect())
        .collect();
    let widths: Vec<usize> = LIST_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain(std::iter::once(h.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![
        line(LIST_COLUMNS.iter().map(|(h, _)| h.to_string()).collect()),
        line(widths.iter().map(|w| "-".repeat(*w)).collect()),
    ];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}
