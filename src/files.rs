//! Private files and folders. What mailwarden keeps is secrets or mail (the
//! store and its backups, the server key, the admin token, the TLS key,
//! outbox messages), so it creates files 0600 and folders 0700 whatever the
//! umask, and `serve` checks its data folder at start (docs/security.md,
//! "Files on disk").

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Files: read and write for the owner only.
pub const FILE_MODE: u32 = 0o600;
/// Folders: the owner only.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700. A folder that is
/// already there keeps its mode: `check_data_dir` reports it.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    // The umask can only take bits away; set exactly 0700.
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Creates `path` new, mode 0600, open for reading and writing. Fails if
/// it exists.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates or truncates `path` for writing, mode 0600 (an existing file is
/// set to 0600 too).
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Opens the redb file at `path`, creating it 0600 when missing. An
/// existing file keeps its mode.
pub fn open_or_create_private(path: &Path) -> io::Result<File> {
    match create_new_private(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().read(true).write(true).open(path)
        }
        other => other,
    }
}

/// Creates (or replaces) a file only its owner can read: written to a
/// temporary name, fsync'd, renamed.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file =
        create_private(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A file or folder that others could read or enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOpen {
    pub path: PathBuf,
    /// The permission bits found, e.g. 0o755.
    pub mode: u32,
    /// The mode it was set to, or why that failed.
    pub fixed: Result<u32, String>,
}

/// `serve`'s start: every folder under `data_dir` (itself included) should
/// be 0700 and every file 0600. Anything that gives group or others a bit
/// is logged (`files.too_open`, one warning per path) and has those bits
/// removed; the owner's bits stay. Symbolic links are not followed. A
/// missing `data_dir` is created 0700.
pub fn check_data_dir(data_dir: &Path) -> io::Result<Vec<TooOpen>> {
    if !data_dir.exists() {
        create_private_dir(data_dir)?;
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    let mut folders = vec![data_dir.to_path_buf()];
    // The data folder itself may be a link; what is inside is looked at as is.
    let root = std::fs::metadata(data_dir)?;
    check_one(data_dir, &root, &mut found);
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                check_one(&path, &meta, &mut found);
                folders.push(path);
            } else if meta.is_file() {
                check_one(&path, &meta, &mut found);
            }
        }
    }
    for item in &found {
        let mode = format!("{:04o}", item.mode);
        match &item.fixed {
            Ok(now) => tracing::warn!(
                event = "files.too_open",
                path = %item.path.display(),
                mode,
                "readable by other users: set to {now:04o}"
            ),
            Err(e) => tracing::warn!(
                event = "files.too_open",
                path = %item.path.display(),
                mode,
                error = %e,
                "readable by other users, and it could not be changed: chmod it yourself"
            ),
        }
    }
    Ok(found)
}

fn check_one(path: &Path, meta: &std::fs::Metadata, found: &mut Vec<TooOpen>) {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return;
    }
    let tightened = mode & !0o077;
    let fixed = std::fs::set_permissions(path, Permissions::from_mode(tightened))
        .map(|()| tightened)
        .map_err(|e| e.to_string());
    found.push(TooOpen {
        path: path.to_path_buf(),
        mode,
        fixed,
    });
}

/// A new empty folder under the system's temporary folder, named
/// `<prefix>-<random>` (scratch stores of `policy simulate` and `replay`).
pub fn scratch_dir(prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    let mut n = [0u8; 8];
    getrandom::fill(&mut n).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", u64::from_le_bytes(n)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Bytes free for unprivileged use on the file system holding `path`, or
/// `None` when it cannot be asked.
pub fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a buffer of the
    // right type; statvfs writes it fully when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn created_files_and_folders_are_private_whatever_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let file = nested.join("f");
        create_new_private(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(create_new_private(&file).is_err());
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        create_private(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        write_private(&nested.join("w"), b"x").unwrap();
        assert_eq!(mode(&nested.join("w")), 0o600);
    }

    #[test]
    fn the_start_check_reports_and_tightens_what_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("outbox")).unwrap();
        std::fs::write(data.join("store"), b"").unwrap();
        std::fs::write(data.join("outbox/1.eml"), b"").unwrap();
        std::fs::write(data.join("key"), b"").unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(data.join("outbox"), Permissions::from_mode(0o750)).unwrap();
        std::fs::set_permissions(data.join("store"), Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(data.join("outbox/1.eml"), Permissions::from_mode(0o604)).unwrap();
        std::fs::set_permissions(data.join("key"), Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::symlink("/etc", data.join("link")).unwrap();

        let mut found = check_data_dir(&data).unwrap();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        let seen: Vec<(String, u32, Result<u32, String>)> = found
            .into_iter()
            .map(|f| {
                let rel = f.path.strip_prefix(dir.path()).unwrap();
                (rel.display().to_string(), f.mode, f.fixed)
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("data".to_string(), 0o755, Ok(0o700)),
                ("data/outbox".to_string(), 0o750, Ok(0o700)),
                ("data/outbox/1.eml".to_string(), 0o604, Ok(0o600)),
                ("data/store".to_string(), 0o644, Ok(0o600)),
            ]
        );
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("key")), 0o400, "stricter modes stay");
        assert!(check_data_dir(&data).unwrap().is_empty());

        let fresh = dir.path().join("fresh/data");
        assert!(check_data_dir(&fresh).unwrap().is_empty());
        assert_eq!(mode(&fresh), 0o700);
    }
}
