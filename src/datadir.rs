//! The data directory's permissions: created private, refused if others may
//! write to it.
//!
//! The WAL holds every value ever written, in clear. Authentication on the
//! port is worth little if any user of the machine can read the WAL, and
//! nothing at all if one can replace it (or the `STATE` file that holds the
//! node's term and vote, or `CLUSTER_ID`). So, as PostgreSQL does with its
//! data directory:
//!
//! - a data directory kvstore creates is mode 0700, and every file it
//!   creates in it mode 0600 ([`file_options`]), whatever the umask;
//! - an existing data directory that group or others may **write** is
//!   refused at start-up ([`Error::InsecurePermissions`], with the `chmod`
//!   that fixes it): they could replace the log or the vote;
//! - one that they may only **read** (made by an older kvstore, or by hand)
//!   is served with a warning: refusing it would stop a running cluster on
//!   upgrade, and the fix is one `chmod`.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of a data directory kvstore creates: its owner only.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Mode of every file kvstore creates in a data directory: its owner only.
pub const DATA_FILE_MODE: u32 = 0o600;

/// Create `data_dir` (mode 0700, with any missing parents) or check the
/// existing one: refused if group or others may write to it, a warning
/// logged if they may read it.
pub fn prepare(data_dir: &Path) -> Result<()> {
    let ctx = |what: &str| format!("{what} data dir {}", data_dir.display());
    match std::fs::metadata(data_dir) {
        Ok(meta) if !meta.is_dir() => Err(Error::io(
            ctx("opening"),
            std::io::Error::other("it exists and is not a directory"),
        )),
        Ok(meta) => check_mode(data_dir, meta.permissions().mode() & 0o777),
        Err(e) if e.kind() == ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(DATA_DIR_MODE)
            .create(data_dir)
            .map_err(|e| Error::io(ctx("creating"), e)),
        Err(e) => Err(Error::io(ctx("reading"), e)),
    }
}

/// Refuse a mode that lets group or others write; warn if they may read.
fn check_mode(data_dir: &Path, mode: u32) -> Result<()> {
    if mode & 0o022 != 0 {
        return Err(Error::InsecurePermissions {
            path: data_dir.to_path_buf(),
            mode,
            why: "other users may write to this data dir, and so replace its WAL or its vote",
            fix: format!("chmod 700 {}", data_dir.display()),
        });
    }
    if mode & 0o044 != 0 {
        log::warn!(
            "[server] data dir {} has mode {mode:04o}: other users may read every value in its \
             WAL; `chmod 700 {}` makes it private",
            data_dir.display(),
            data_dir.display()
        );
    }
    Ok(())
}

/// Create (or empty) the file at `path` for writing, mode 0600.
pub fn create_file(path: &Path) -> Result<std::fs::File> {
    file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

/// Options for a file in a data directory: created with mode 0600.
pub fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(DATA_FILE_MODE);
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_dir_and_its_files_are_private() {
        // Goal: whatever the umask, kvstore's own files are its owner's.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("node1");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), DATA_DIR_MODE);
        let file = dir.join("f");
        file_options().write(true).create(true).truncate(false).open(&file).unwrap();
        assert_eq!(mode(&file), DATA_FILE_MODE);
    }

    #[test]
    fn a_data_dir_others_may_write_is_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("node1");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        let err = prepare(&dir).unwrap_err();
        assert!(matches!(err, Error::InsecurePermissions { mode: 0o777, .. }), "{err}");
        assert!(err.to_string().contains("chmod 700"), "{err}");
        // Readable by others only: served (with a warning).
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
    }
}
