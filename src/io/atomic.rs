//! Atomic file writes: the bytes go to a temporary file in the target's folder, are flushed to
//! disk (fsync) and renamed over the target, so a reader sees the old file or the new one, never
//! a part; on any failure the temporary file is removed and the old file is left as it was.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io(format!("cannot {what} {}: {e}", path.display()))
}

/// The temporary sibling of `path`: hidden, unique per process and call.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Io(format!("cannot write {}: the path names no file", path.display())))?;
    let unique = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let temp = format!(".{}.tmp-{}-{unique}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(temp))
}

/// Write `bytes` to `path` atomically (temp file + fsync + rename, then fsync of the folder).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_path(path)?;
    let written = (|| {
        let mut file = File::create(&temp).map_err(|e| io_err(path, "create a temporary file beside", e))?;
        file.write_all(bytes).map_err(|e| io_err(path, "write", e))?;
        file.sync_all().map_err(|e| io_err(path, "flush to disk", e))?;
        drop(file);
        fs::rename(&temp, path).map_err(|e| io_err(path, "replace", e))
    })();
    if written.is_err() {
        // The temporary file is ours; the error that matters is the one above.
        let _ = fs::remove_file(&temp);
        return written;
    }
    // The rename itself is durable once the folder's entry is flushed (not possible everywhere,
    // e.g. on Windows: the data is already safe, so a failure here is not an error).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Read a whole file; the error names the path.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::ModelLoad(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("polyvtd-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("a.json");
        write(&target, b"old").unwrap();
        write(&target, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let missing = dir.join("no-such-folder").join("b.json");
        assert!(matches!(write(&missing, b"x"), Err(Error::Io(m)) if m.contains("b.json")));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
