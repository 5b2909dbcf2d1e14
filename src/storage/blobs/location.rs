//! Where a registry keeps its blobs, as `--blob-store` names it: the data directory (the
//! default), or an object store container shared by replicas.

use super::{azure, BlobBackend, LocalBlobs};
use crate::storage::error::Result;

/// A blob store setting, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BlobLocation {
    /// Files under the data directory's `blobs/`.
    #[default]
    DataDir,
    /// An Azure Blob Storage container (`az://<container>`), with the account from `AZURE_*`.
    Azure {
        /// The container's name.
        container: String,
    },
}

impl std::str::FromStr for BlobLocation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "data-dir" {
            return Ok(BlobLocation::DataDir);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!(
                "{s:?} is not a blob store: az://<container>, or data-dir (the default)"
            ));
        };
        match scheme {
            "az" | "azure" => {
                let container = rest.trim_end_matches('/');
                check_container(container)?;
                Ok(BlobLocation::Azure {
                    container: container.to_owned(),
                })
            }
            "s3" => Err("s3:// blob stores are not supported yet: use az://<container>".into()),
            other => Err(format!(
                "unknown blob store scheme {other}://: az://<container>, or data-dir"
            )),
        }
    }
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobLocation::DataDir => f.write_str("data-dir"),
            BlobLocation::Azure { container } => write!(f, "az://{container}"),
        }
    }
}

/// Azure's rule for container names: 3–63 lowercase letters, digits and single hyphens, starting
/// and ending with a letter or digit.
fn check_container(name: &str) -> std::result::Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an Azure container name (3-63 lowercase letters, digits and single hyphens)"
        ))
    }
}

impl BlobLocation {
    /// Opens the backend, creating what is missing (the directory, or the container).
    pub fn open(&self, data_dir: &std::path::Path) -> Result<Box<dyn BlobBackend>> {
        Ok(match self {
            BlobLocation::DataDir => Box::new(LocalBlobs::open(data_dir)?),
            BlobLocation::Azure { container } => Box::new(azure::open(container)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_or_say_what_is_accepted() {
        let parse = |s: &str| s.parse::<BlobLocation>();
        assert_eq!(parse(""), Ok(BlobLocation::DataDir));
        assert_eq!(parse("data-dir"), Ok(BlobLocation::DataDir));
        let az = BlobLocation::Azure {
            container: "registry-1".into(),
        };
        assert_eq!(parse("az://registry-1"), Ok(az.clone()));
        assert_eq!(parse("azure://registry-1/"), Ok(az.clone()));
        assert_eq!(az.to_string(), "az://registry-1");
        for bad in [
            "az://Registry",
            "az://ab",
            "az://a--b",
            "az://-ab",
            "/var/blobs",
            "gs://x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("s3://bucket").is_err_and(|e| e.contains("not supported yet")));
    }
}
