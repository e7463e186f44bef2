//! Giving memory back after a burst of logins.
//!
//! Each argon2id verify allocates 19 MiB on a blocking thread. glibc's
//! malloc raises its mmap threshold to the size of the last large block it
//! freed, so from the second burst on those blocks come from per-thread
//! arenas and are kept after use: 20 concurrent logins left the server at
//! 224 MB (from 70). A fixed threshold of 4 MiB keeps every argon2 block in
//! its own mapping, returned to the system when freed, and leaves smaller
//! buffers (message bodies, store pages) to the arenas as before.
//! Measured with `python3 scripts/measure-login-rss BINARY`.

/// Large allocations always get their own mapping (glibc only; other
/// allocators already return them).
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called once,
    // at the start of `main`, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
