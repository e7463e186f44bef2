//! A small real file system for the store: a tmpfs mounted on the data
//! folder, filled to the last byte by a filler file, so "disk full" is the
//! kernel's ENOSPC and not a fault switch. Mounting needs root (or
//! CAP_SYS_ADMIN); where it fails, the test says why and is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

const FILLER: &str = "filler";

impl Tmpfs {
    /// A tmpfs of `size` bytes on `path` (created, mode 0700). None, with
    /// the reason printed, where this process may not mount one.
    pub fn mount(path: &Path, size: u64) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self {
                path: path.to_path_buf(),
            }),
            Ok(out) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs on {} (root or CAP_SYS_ADMIN needed): {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    /// Writes a filler file until the file system is full (ENOSPC, then
    /// again for the last partial block); returns its size.
    pub fn fill(&self) -> u64 {
        let path = self.path.join(FILLER);
        let mut file = std::fs::File::create(&path).unwrap();
        let mut written = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let data = vec![0x5Au8; chunk];
            loop {
                match file.write(&data) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        file.sync_all().ok();
        written
    }

    /// Deletes the filler: the space is free again.
    pub fn free(&self) {
        std::fs::remove_file(self.path.join(FILLER)).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still in use (a test that failed with the server running):
            // detached now, gone once the last file is closed.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        // The mount point (the temporary folder around it may be gone).
        let _ = std::fs::remove_dir(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
