//! Upload session records, so a session survives a restart (and, on shared metadata, is found
//! by every replica) and abandoned ones can be found.

use crate::registry::RepoName;
use crate::storage::error::Result;
use crate::storage::uploads::SessionCaps;

/// Storing upload sessions.
pub trait UploadSessions {
    /// Records a new upload session for `repo` started by `client`, unless a cap on open
    /// sessions is reached: counted and inserted in one transaction, so concurrent starts
    /// cannot overshoot.
    fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        client: &str,
        caps: &SessionCaps,
    ) -> Result<()>;

    /// The repository an upload session belongs to, if the session exists.
    fn upload_repo(&self, id: &str) -> Result<Option<String>>;

    /// Marks activity on a session so the cleaner leaves it alone.
    fn touch_upload(&self, id: &str) -> Result<()>;

    /// Forgets a session (finished, cancelled or expired).
    fn delete_upload(&self, id: &str) -> Result<()>;

    /// Sessions idle since before `cutoff` (Unix seconds).
    fn idle_uploads(&self, cutoff: i64) -> Result<Vec<String>>;

    /// Every session id, to tell live upload files from orphans at startup.
    fn all_uploads(&self) -> Result<Vec<String>>;
}
