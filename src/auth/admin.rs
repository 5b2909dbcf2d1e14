//! Management operations behind `connected-registry scope-map …` and `token …`, with ACR's JSON
//! shapes so existing `az acr` scripts translate one-to-one.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::audit::{self, AccessChange, MapRecord, TokenRecord};
use super::model::{Action, Grant, ScopeMap, ALL_ACTIONS};
use super::snapshot::scope_map_from_row;
use super::token::{parse_status, status_str, PasswordSlot, Token, SLOTS};
use super::{password, AuthError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{MetadataStore, RecordSource, ScopeMapRow};

/// RFC 3339 time (UTC, seconds) of Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses `REPO ACTION [ACTION…]` groups into grants.
pub fn grants(groups: &[Vec<String>]) -> Result<Vec<Grant>, AuthError> {
    groups
        .iter()
        .map(|g| {
            let (repo, actions) = g
                .split_first()
                .ok_or_else(|| AuthError::Invalid("--repository needs REPO ACTION…".into()))?;
            if actions.is_empty() {
                return Err(AuthError::Invalid(format!(
                    "no actions given for repository '{repo}'"
                )));
            }
            super::model::RepoPattern::parse(repo)?;
            let mut actions = actions
                .iter()
                .map(|a| a.parse())
                .collect::<Result<Vec<Action>, _>>()?;
            actions.sort();
            actions.dedup();
            Ok(Grant {
                repository: repo.clone(),
                actions,
            })
        })
        .collect()
}

/// ACR's view of a scope map.
pub fn scope_map_json(m: &ScopeMap, created: i64) -> Value {
    let gateways = m.gateways.iter().flat_map(|g| {
        g.actions
            .iter()
            .map(move |a| format!("gateway/{}/{}", g.gateway, a.as_str()))
    });
    let actions: Vec<String> = m
        .grants
        .iter()
        .flat_map(|g| {
            g.actions
                .iter()
                .map(move |a| format!("repositories/{}/{}", g.repository, a))
        })
        .chain(gateways)
        .collect();
    json!({
        "name": m.name,
        "description": m.description,
        "actions": actions,
        "creationDate": rfc3339(created),
        "type": "Microsoft.ContainerRegistry/registries/scopeMaps",
    })
}

fn merge(mut into: Vec<Grant>, add: Vec<Grant>) -> Vec<Grant> {
    for g in add {
        match into.iter_mut().find(|x| x.repository == g.repository) {
            Some(x) => {
                x.actions.extend(g.actions);
                x.actions.sort();
                x.actions.dedup();
            }
            None => into.push(g),
        }
    }
    into
}

fn subtract(into: Vec<Grant>, remove: Vec<Grant>) -> Vec<Grant> {
    into.into_iter()
        .filter_map(|mut x| {
            if let Some(r) = remove.iter().find(|r| r.repository == x.repository) {
                x.actions.retain(|a| !r.actions.contains(a));
            }
            (!x.actions.is_empty()).then_some(x)
        })
        .collect()
}

/// The row storing a scope map made here.
pub fn scope_map_row(m: &ScopeMap, created: i64) -> Result<ScopeMapRow, AuthError> {
    let json =
        |v: Result<String, serde_json::Error>| v.map_err(|e| AuthError::Internal(e.to_string()));
    Ok(ScopeMapRow {
        name: m.name.clone(),
        description: m.description.clone(),
        actions: json(serde_json::to_string(&m.grants))?,
        gateways: json(serde_json::to_string(&m.gateways))?,
        source: RecordSource::Local,
        created,
        updated: created,
    })
}

/// Stores a scope map made here, auditing the change from `old` (the stored row, if any).
fn store_map(
    meta: &dyn MetadataStore,
    m: &ScopeMap,
    created: i64,
    old: Option<&ScopeMapRow>,
) -> Result<Value, AuthError> {
    let row = scope_map_row(m, created)?;
    meta.put_scope_map(&row, old.is_none())?;
    let before = old.map(MapRecord::from_row);
    audit::record_here(&audit::diff_map(
        &m.name,
        before.as_ref(),
        Some(&MapRecord::from_row(&row)),
    ));
    Ok(scope_map_json(m, created))
}

/// `scope-map create`.
pub fn create_scope_map(
    meta: &dyn MetadataStore,
    name: &str,
    groups: &[Vec<String>],
    description: Option<String>,
) -> Result<Value, AuthError> {
    let m = ScopeMap::new(name, description, grants(groups)?)?;
    store_map(meta, &m, now_secs(), None)
}

/// `scope-map delete`.
pub fn delete_scope_map(meta: &dyn MetadataStore, name: &str) -> Result<Value, AuthError> {
    let row = meta.scope_map(name)?;
    meta.delete_scope_map(name)?;
    let before = row.as_ref().map(MapRecord::from_row);
    audit::record_here(&audit::diff_map(name, before.as_ref(), None));
    Ok(Value::Null)
}

/// `scope-map update`.
pub fn update_scope_map(
    meta: &dyn MetadataStore,
    name: &str,
    add: &[Vec<String>],
    remove: &[Vec<String>],
    description: Option<String>,
) -> Result<Value, AuthError> {
    let row = meta
        .scope_map(name)?
        .ok_or_else(|| AuthError::Invalid(format!("scope map '{name}' not found")))?;
    local_only("scope map", name, row.source)?;
    let old = scope_map_from_row(&row)?;
    let updated = subtract(merge(old.grants, grants(add)?), grants(remove)?);
    let m =
        ScopeMap::new(name, description.or(old.description), updated)?.with_gateways(old.gateways);
    store_map(meta, &m, row.created, Some(&row))
}

/// `scope-map show`.
pub fn show_scope_map(meta: &dyn MetadataStore, name: &str) -> Result<Value, AuthError> {
    let row = meta
        .scope_map(name)?
        .ok_or_else(|| AuthError::Invalid(format!("scope map '{name}' not found")))?;
    Ok(scope_map_json(&scope_map_from_row(&row)?, row.created))
}

/// `scope-map list`.
pub fn list_scope_maps(meta: &dyn MetadataStore) -> Result<Value, AuthError> {
    let rows = meta.access_rows()?;
    let out: Result<Vec<Value>, AuthError> = rows
        .scope_maps
        .iter()
        .map(|r| Ok(scope_map_json(&scope_map_from_row(r)?, r.created)))
        .collect();
    Ok(Value::Array(out?))
}

/// ACR's view of a token; `secrets` holds freshly generated passwords to print once.
pub fn token_json(t: &Token, secrets: &[(String, String)]) -> Value {
    let passwords: Vec<Value> = t
        .passwords
        .iter()
        .map(|p| {
            let value = secrets
                .iter()
                .find(|(n, _)| *n == p.name)
                .map(|(_, v)| v.clone());
            json!({
                "name": p.name,
                "value": value,
                "creationTime": rfc3339(p.created),
                "expiry": p.expiry.map(rfc3339),
            })
        })
        .collect();
    json!({
        "name": t.name,
        "status": status_str(t.enabled),
        "scopeMap": t.scope_map,
        "creationDate": rfc3339(t.created),
        "credentials": {"username": t.name, "passwords": passwords, "certificates": []},
        "type": "Microsoft.ContainerRegistry/registries/tokens",
    })
}

fn expiry(days: Option<u32>, now: i64) -> Option<i64> {
    days.map(|d| now + i64::from(d) * 86_400)
}

fn new_slot(name: &str, days: Option<u32>) -> Result<(PasswordSlot, String), AuthError> {
    let secret = password::generate()?;
    let now = now_secs();
    let slot = PasswordSlot {
        name: name.to_owned(),
        hash: password::hash(&secret)?,
        created: now,
        expiry: expiry(days, now),
    };
    Ok((slot, secret))
}

/// Stores a token made or changed here (`old` is its record before, if any) and returns the
/// audit lines the change makes.
fn store_token(
    meta: &dyn MetadataStore,
    t: &Token,
    old: Option<&TokenRecord>,
) -> Result<Vec<AccessChange>, AuthError> {
    meta.put_token(&t.to_row()?, old.is_none())?;
    let now = TokenRecord::of(t, RecordSource::Local);
    Ok(audit::diff_token(&t.name, old, Some(&now)))
}

/// `token create`: both passwords generated and returned once.
pub fn create_token(
    meta: &dyn MetadataStore,
    name: &str,
    scope_map: &str,
    days: Option<u32>,
    status: Option<&str>,
) -> Result<Value, AuthError> {
    let (v, changes) = make_token(meta, name, scope_map, days, status)?;
    audit::record_here(&changes);
    Ok(v)
}

/// Makes a token; returns its view and the audit lines, for the caller to log.
fn make_token(
    meta: &dyn MetadataStore,
    name: &str,
    scope_map: &str,
    days: Option<u32>,
    status: Option<&str>,
) -> Result<(Value, Vec<AccessChange>), AuthError> {
    let enabled = status.map(parse_status).transpose()?.unwrap_or(true);
    let mut t = Token {
        name: name.to_owned(),
        scope_map: scope_map.to_owned(),
        enabled,
        passwords: Vec::new(),
        created: now_secs(),
    };
    let mut secrets = Vec::new();
    for slot in SLOTS {
        let (s, secret) = new_slot(slot, days)?;
        t.set_slot(s);
        secrets.push((slot.to_owned(), secret));
    }
    let changes = store_token(meta, &t, None)?;
    Ok((token_json(&t, &secrets), changes))
}

fn load_token(meta: &dyn MetadataStore, name: &str) -> Result<Token, AuthError> {
    let row = meta
        .token(name)?
        .ok_or_else(|| AuthError::Invalid(format!("token '{name}' not found")))?;
    Token::from_row(&row)
}

/// Records received from the parent are managed at the root: changing them here would be
/// undone by the next configuration, so it is refused with a pointer to where to do it.
pub fn local_only(kind: &str, name: &str, source: RecordSource) -> Result<(), AuthError> {
    match source {
        RecordSource::Local => Ok(()),
        _ => Err(AuthError::Invalid(format!(
            "{kind} '{name}' is defined at the root of the connected-registry tree and comes \
             from the parent; change it there"
        ))),
    }
}

fn load_local_token(meta: &dyn MetadataStore, name: &str) -> Result<Token, AuthError> {
    let row = meta
        .token(name)?
        .ok_or_else(|| AuthError::Invalid(format!("token '{name}' not found")))?;
    local_only("token", name, row.source)?;
    Token::from_row(&row)
}

/// `token update`: scope map and/or status.
pub fn update_token(
    meta: &dyn MetadataStore,
    name: &str,
    scope_map: Option<&str>,
    status: Option<&str>,
) -> Result<Value, AuthError> {
    let mut t = load_local_token(meta, name)?;
    let old = TokenRecord::of(&t, RecordSource::Local);
    if let Some(m) = scope_map {
        t.scope_map = m.to_owned();
    }
    if let Some(s) = status {
        t.enabled = parse_status(s)?;
    }
    audit::record_here(&store_token(meta, &t, Some(&old))?);
    Ok(token_json(&t, &[]))
}

/// `token credential generate`: regenerates one or both passwords; the others keep working.
pub fn generate_credential(
    meta: &dyn MetadataStore,
    name: &str,
    slots: &[&str],
    days: Option<u32>,
) -> Result<Value, AuthError> {
    let mut t = load_local_token(meta, name)?;
    let old = TokenRecord::of(&t, RecordSource::Local);
    let mut secrets = Vec::new();
    for slot in slots {
        let (s, secret) = new_slot(slot, days)?;
        t.set_slot(s);
        secrets.push((slot.to_string(), secret));
    }
    audit::record_here(&store_token(meta, &t, Some(&old))?);
    Ok(token_json(&t, &secrets))
}

/// `token delete`.
pub fn delete_token(meta: &dyn MetadataStore, name: &str) -> Result<Value, AuthError> {
    let row = meta.token(name)?;
    meta.delete_token(name)?;
    let before = row.as_ref().map(TokenRecord::from_row);
    audit::record_here(&audit::diff_token(name, before.as_ref(), None));
    Ok(Value::Null)
}

/// `token show`.
pub fn show_token(meta: &dyn MetadataStore, name: &str) -> Result<Value, AuthError> {
    Ok(token_json(&load_token(meta, name)?, &[]))
}

/// `token list`.
pub fn list_tokens(meta: &dyn MetadataStore) -> Result<Value, AuthError> {
    let rows = meta.access_rows()?;
    let out: Result<Vec<Value>, AuthError> = rows
        .tokens
        .iter()
        .map(|r| Ok(token_json(&Token::from_row(r)?, &[])))
        .collect();
    Ok(Value::Array(out?))
}

/// Creates the `admin` scope map (unless present) and token; the token as `make_token` shows it.
fn create_admin(meta: &dyn MetadataStore) -> Result<Value, AuthError> {
    if meta.scope_map("admin")?.is_none() {
        let all: Vec<String> = std::iter::once("*".to_owned())
            .chain(ALL_ACTIONS.iter().map(|a| a.to_string()))
            .collect();
        // Not audited here: the server that bootstraps audits the records it then reloads.
        let description = "Everything on every repository (created at first start)";
        let m = ScopeMap::new("admin", Some(description.into()), grants(&[all])?)?;
        meta.put_scope_map(&scope_map_row(&m, now_secs())?, true)?;
    }
    Ok(make_token(meta, "admin", "admin", None, None)?.0)
}

/// Creates the `admin` scope map (everything) and token on a fresh root with no tokens (once
/// among replicas starting together), writing password1 once to a 0600 file. Returns the file's
/// path when it did.
pub fn bootstrap_admin(
    meta: &dyn MetadataStore,
    data_dir: &std::path::Path,
) -> Result<Option<std::path::PathBuf>, AuthError> {
    if !meta.access_rows()?.tokens.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join("admin-password");
    let created = match create_admin(meta) {
        Ok(c) => c,
        // Replicas starting together on empty shared metadata: one of them made it first.
        Err(_) if !meta.access_rows()?.tokens.is_empty() => return Ok(None),
        Err(e) => return Err(e),
    };
    let secret = created["credentials"]["passwords"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let _ = std::fs::remove_file(&path);
    super::bearer::write_private(&path, format!("{secret}\n").as_bytes())
        .map_err(|e| AuthError::Internal(format!("{}: {e}", path.display())))?;
    Ok(Some(path))
}
