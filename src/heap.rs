//! The process heap after a transient peak.

/// Give freed heap pages back to the OS. glibc keeps freed memory for reuse, so the tens of MB
/// that building a tokenizer or loading a model allocates for a moment would otherwise stay in
/// the resident set for the life of the process.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: malloc_trim only returns unused pages of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
