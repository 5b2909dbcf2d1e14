//! Decides who a request comes from and what it may do. Passwords are verified with argon2 once;
//! after that a keyed digest of the credentials is cached until the access records change, so the
//! hot path never re-hashes a password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::audit::{self, Records};
use super::bearer::{Claims, Keys, ACCESS_TTL_SECS, ISSUER, REFRESH_TTL_SECS};
use super::model::{Action, ActionSet, GatewayAction};
use super::scope::{acr_actions, grant, ScopeEntry};
use super::snapshot::Snapshot;
use super::throttle::Throttle;
use super::{password, AuthError};
use crate::config::Access;
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::RecordSource;
use crate::storage::Store;

/// Subject of tokens issued to anonymous clients (anonymous pull).
const ANONYMOUS: &str = "$anonymous";
/// How long a verified password stays cached without the records changing.
const VERIFIED_TTL: Duration = Duration::from_secs(600);
/// Bound on cached credentials.
const VERIFIED_MAX: usize = 1024;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// Authentication is off (`--insecure-no-auth`).
    Unrestricted,
    /// A token, by Basic password or by bearer token.
    Token {
        /// Token name.
        name: String,
        /// Password slot stamp that authenticated.
        stamp: String,
        /// Scopes granted, when authenticated by a bearer token.
        bearer: Option<Vec<ScopeEntry>>,
    },
}

impl Principal {
    /// The same principal without the narrowing of a bearer token: what its scope map allows.
    pub fn unnarrowed(&self) -> Principal {
        match self {
            Principal::Token { name, stamp, .. } => Principal::Token {
                name: name.clone(),
                stamp: stamp.clone(),
                bearer: None,
            },
            other => other.clone(),
        }
    }
}

/// A freshly issued bearer token.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The signed token.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Refresh token, when asked for.
    pub refresh_token: Option<String>,
}

#[derive(Debug, Clone)]
struct Verified {
    name: String,
    stamp: String,
    at: Instant,
}

/// The access-control decision point shared by all workers.
pub struct Authenticator {
    store: Arc<Store>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The records as last loaded, to audit what the next load changed.
    records: Mutex<Option<Records>>,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    cache_secret: [u8; 32],
    keys: Keys,
    /// Hash checked for unknown token names, made on first need (nothing to do without auth).
    dummy_hash: std::sync::OnceLock<String>,
    /// Failed-login pauses.
    pub throttle: Throttle,
    /// Anonymous pull, no-auth and login-server settings.
    pub access: Access,
}

impl Authenticator {
    /// Loads the signing key and the current records.
    pub fn new(store: Arc<Store>, access: Access) -> Result<Self, AuthError> {
        let mut cache_secret = [0u8; 32];
        password::random_bytes(&mut cache_secret)?;
        let keys = Keys::load_or_create(&*store.meta, &store.root.join("auth"))?;
        let a = Authenticator {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            records: Mutex::new(None),
            verified: Mutex::new(HashMap::new()),
            cache_secret,
            keys,
            dummy_hash: std::sync::OnceLock::new(),
            throttle: Throttle::default(),
            access,
            store,
        };
        a.reload()?;
        Ok(a)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn reload(&self) -> Result<(), AuthError> {
        // All rows, relayed ones too, so their changes are audited; only the others are in force.
        let mut rows = self.store.meta.all_access_rows()?;
        self.audit_changes(Records::from_rows(&rows));
        rows.tokens.retain(|r| r.source != RecordSource::Relay);
        rows.scope_maps.retain(|r| r.source != RecordSource::Relay);
        let snap = Snapshot::from_rows(&rows);
        tracing::info!(
            tokens = snap.tokens.len(),
            scope_maps = snap.maps.len(),
            generation = snap.generation,
            "access control records loaded"
        );
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(snap);
        }
        if let Ok(mut v) = self.verified.lock() {
            v.clear();
        }
        Ok(())
    }

    /// Logs one audit line per change since the last load (none at the first).
    fn audit_changes(&self, now: Records) {
        let Ok(mut last) = self.records.lock() else {
            return;
        };
        if let Some(before) = last.as_ref() {
            audit::record(&audit::diff(before, &now));
        }
        *last = Some(now);
    }

    /// Reloads when another process changed tokens or scope maps; returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, AuthError> {
        let generation = self.store.meta.access_generation()?;
        if generation == self.snapshot().generation {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Number of tokens known (for the first-start bootstrap).
    pub fn token_count(&self) -> usize {
        self.snapshot().tokens.len()
    }

    fn cache_key(&self, user: &str, pass: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_secret);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(pass.as_bytes());
        h.finalize().into()
    }

    /// A still-valid slot stamp of an enabled token.
    fn stamp_valid(snap: &Snapshot, name: &str, stamp: &str) -> bool {
        let now = now_secs();
        snap.tokens
            .get(name)
            .filter(|t| t.enabled)
            .is_some_and(|t| {
                t.passwords
                    .iter()
                    .any(|p| p.stamp().as_bytes().ct_eq(stamp.as_bytes()).into() && p.valid_at(now))
            })
    }

    /// Fast path: credentials verified before and unchanged since. Never hashes with argon2.
    pub fn check_cached(&self, user: &str, pass: &str) -> Option<Principal> {
        let key = self.cache_key(user, pass);
        let hit = self.verified.lock().ok()?.get(&key).cloned()?;
        if hit.at.elapsed() > VERIFIED_TTL
            || !Self::stamp_valid(&self.snapshot(), &hit.name, &hit.stamp)
        {
            return None;
        }
        Some(Principal::Token {
            name: hit.name,
            stamp: hit.stamp,
            bearer: None,
        })
    }

    /// Slow path: argon2 verification (run it on a blocking thread). Unknown users cost the same
    /// as known ones, so timing does not reveal which token names exist.
    pub fn check_password(&self, user: &str, pass: &str) -> Result<Principal, AuthError> {
        let snap = self.snapshot();
        let now = now_secs();
        let Some(token) = snap.tokens.get(user) else {
            let dummy = self
                .dummy_hash
                .get_or_init(|| password::hash("not-a-real-password").unwrap_or_default());
            password::verify(pass, dummy);
            return Err(AuthError::Unauthorized(format!(
                "unknown token '{}'",
                crate::registry::echo(user)
            )));
        };
        let matched = token
            .passwords
            .iter()
            .find(|slot| password::verify(pass, &slot.hash))
            .cloned();
        let Some(slot) = matched else {
            return Err(AuthError::Unauthorized(format!(
                "wrong password for token '{user}'"
            )));
        };
        if !slot.valid_at(now) {
            return Err(AuthError::Unauthorized(format!(
                "{} of token '{user}' has expired",
                slot.name
            )));
        }
        if !token.enabled {
            return Err(AuthError::Unauthorized(format!(
                "token '{user}' is disabled"
            )));
        }
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= VERIFIED_MAX {
                v.clear();
            }
            v.insert(
                self.cache_key(user, pass),
                Verified {
                    name: user.to_owned(),
                    stamp: slot.stamp(),
                    at: Instant::now(),
                },
            );
        }
        Ok(Principal::Token {
            name: user.to_owned(),
            stamp: slot.stamp(),
            bearer: None,
        })
    }

    /// Verifies a bearer token for `service` against the current records.
    pub fn check_bearer(&self, jwt: &str, service: &str) -> Result<Principal, AuthError> {
        let c = self.keys.verify(jwt, service, "access")?;
        if c.sub == ANONYMOUS {
            return Ok(Principal::Anonymous);
        }
        if !Self::stamp_valid(&self.snapshot(), &c.sub, &c.pwd) {
            return Err(AuthError::BadToken(format!(
                "token '{}' was revoked, disabled or rotated",
                c.sub
            )));
        }
        Ok(Principal::Token {
            name: c.sub,
            stamp: c.pwd,
            bearer: Some(c.access),
        })
    }

    /// Verifies a refresh token; returns the principal it stands for.
    pub fn check_refresh(&self, jwt: &str, service: &str) -> Result<Principal, AuthError> {
        let c = self.keys.verify(jwt, service, "refresh")?;
        if !Self::stamp_valid(&self.snapshot(), &c.sub, &c.pwd) {
            return Err(AuthError::BadToken(format!(
                "token '{}' was revoked, disabled or rotated",
                c.sub
            )));
        }
        Ok(Principal::Token {
            name: c.sub,
            stamp: c.pwd,
            bearer: None,
        })
    }

    /// Actions `p` may perform on `repo` now (mode restrictions are applied by the caller).
    pub fn allowed(&self, p: &Principal, repo: &str) -> ActionSet {
        let anonymous = if self.access.anonymous_pull {
            ActionSet::NONE.with(Action::ContentRead)
        } else {
            ActionSet::NONE
        };
        match p {
            Principal::Unrestricted => ActionSet::ALL,
            Principal::Anonymous => anonymous,
            Principal::Token { name, bearer, .. } => {
                let snap = self.snapshot();
                let mapped = snap
                    .map_of(name)
                    .map(|m| m.allowed(repo))
                    .unwrap_or_default();
                let limited = match bearer {
                    None => mapped,
                    Some(access) => mapped.intersect(
                        access
                            .iter()
                            .filter(|e| e.kind == "repository" && e.name == repo)
                            .flat_map(|e| e.actions.iter())
                            .fold(ActionSet::NONE, |acc, a| acc.union(acr_actions(a))),
                    ),
                };
                limited.union(anonymous)
            }
        }
    }

    /// Whether `p` may perform `action` on the gateway (control plane) of connected registry
    /// `name`. Only the scope map decides: bearer tokens carry repository scopes only, and the
    /// control plane is reached with the sync token's Basic credentials.
    pub fn gateway_allowed(&self, p: &Principal, name: &str, action: GatewayAction) -> bool {
        match p {
            Principal::Unrestricted => true,
            Principal::Anonymous => false,
            Principal::Token { name: token, .. } => self
                .snapshot()
                .map_of(token)
                .is_some_and(|m| m.gateway_allows(name, action)),
        }
    }

    /// Whether `p` may list the catalog at all (it is then filtered per repository).
    pub fn may_list_catalog(&self, p: &Principal) -> bool {
        match p {
            Principal::Unrestricted => true,
            Principal::Anonymous => false,
            Principal::Token { name, bearer, .. } => {
                let reads = self.snapshot().map_of(name).is_some_and(|m| {
                    m.grants
                        .iter()
                        .any(|g| g.actions.contains(&Action::MetadataRead))
                });
                reads
                    && bearer.as_ref().is_none_or(|a| {
                        a.iter()
                            .any(|e| e.kind == "registry" && e.name == "catalog")
                    })
            }
        }
    }

    /// Issues an access token (and a refresh token when `offline`) for the scopes asked, granting
    /// the intersection with what the scope map allows.
    pub fn issue(
        &self,
        p: &Principal,
        service: &str,
        asked: &[ScopeEntry],
        offline: bool,
    ) -> Result<Issued, AuthError> {
        let (sub, stamp) = match p {
            Principal::Token { name, stamp, .. } => (name.clone(), stamp.clone()),
            _ => (ANONYMOUS.to_owned(), String::new()),
        };
        let access: Vec<ScopeEntry> = asked
            .iter()
            .map(|e| {
                let actions = if e.kind == "registry" {
                    if self.may_list_catalog(&p.unnarrowed()) {
                        vec!["*".to_owned()]
                    } else {
                        vec![]
                    }
                } else {
                    grant(&e.actions, self.allowed(&p.unnarrowed(), &e.name))
                };
                ScopeEntry {
                    kind: e.kind.clone(),
                    name: e.name.clone(),
                    actions,
                }
            })
            .filter(|e| !e.actions.is_empty())
            .collect();
        let now = now_secs();
        let mut jti = [0u8; 16];
        password::random_bytes(&mut jti)?;
        let mut claims = Claims {
            iss: ISSUER.into(),
            sub,
            aud: service.to_owned(),
            exp: now + ACCESS_TTL_SECS,
            nbf: now - 5,
            iat: now,
            jti: hex::encode(jti),
            typ: "access".into(),
            pwd: stamp,
            access,
        };
        let token = self.keys.sign(&claims)?;
        let refresh_token = if offline && matches!(p, Principal::Token { .. }) {
            claims.typ = "refresh".into();
            claims.exp = now + REFRESH_TTL_SECS;
            claims.access = Vec::new();
            Some(self.keys.sign(&claims)?)
        } else {
            None
        };
        Ok(Issued {
            token,
            expires_in: ACCESS_TTL_SECS,
            issued_at: now,
            refresh_token,
        })
    }
}
