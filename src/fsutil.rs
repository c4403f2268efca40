//! Small files written atomically and durably.
//!
//! The cluster id and the node state (term, vote, role) must never be seen
//! half-written, and must survive a power cut once the write returns. The
//! classic recipe: write a temporary file, fsync it, rename it over the real
//! name (atomic on POSIX file systems), then fsync the directory so the
//! rename itself is on disk.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Replace `dir/name` with `bytes`, durably.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut file = crate::datadir::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(ctx("creating"), e))?;
    file.write_all(bytes).map_err(|e| Error::io(ctx("writing"), e))?;
    file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(ctx("renaming"), e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(ctx("syncing the directory of"), e))
}
