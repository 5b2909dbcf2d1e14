//! Which tags and platforms a policy selects.

use std::fmt;

use regex::Regex;

use crate::registry::echo;

/// One `platforms` entry: `os/arch` (any variant) or `os/arch/variant` (that variant only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture in Go's spelling, e.g. `amd64`, `arm64`.
    pub arch: String,
    /// CPU variant, e.g. `v7`; `None` matches every variant.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch` or `os/arch/variant` (lowercased; `x86_64` and `aarch64` become `amd64` and
    /// `arm64`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(format!(
                "'{}' is not a platform like linux/amd64 or linux/arm/v7 (os/arch or os/arch/variant)",
                echo(s)
            ));
        }
        Ok(Platform {
            os: parts[0].to_owned(),
            arch: normal_arch(parts[1]).to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }

    /// Whether a manifest for `os`/`arch`/`variant` is selected by this entry (an `arm64` manifest
    /// without a variant counts as `v8`).
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let arch = normal_arch(arch);
        if !self.os.eq_ignore_ascii_case(os) || !self.arch.eq_ignore_ascii_case(arch) {
            return false;
        }
        let Some(want) = &self.variant else {
            return true;
        };
        let default = arch.eq_ignore_ascii_case("arm64").then_some("v8");
        variant
            .or(default)
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    }
}

/// Go's name for an architecture people also spell otherwise.
fn normal_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// Tag selection: a tag is synced when `include` (if any) matches and `exclude` (if any) does not.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    /// Tags must match this (unanchored) regex.
    pub include: Option<Regex>,
    /// Tags must not match this (unanchored) regex.
    pub exclude: Option<Regex>,
}

impl TagFilter {
    /// Whether `tag` passes the filter.
    pub fn selects(&self, tag: &str) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(tag))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(tag))
    }
}

impl PartialEq for TagFilter {
    fn eq(&self, other: &Self) -> bool {
        let text = |r: &Option<Regex>| r.as_ref().map(|r| r.as_str().to_owned());
        text(&self.include) == text(&other.include) && text(&self.exclude) == text(&other.exclude)
    }
}
