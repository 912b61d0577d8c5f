//! The memory allocator of our binaries (`crm`, the benchmarks): jemalloc, with the settings
//! below. Each binary names it as its global allocator:
//! `#[global_allocator] static ALLOCATOR: crm_app::allocator::Allocator = crm_app::allocator::ALLOCATOR;`
//!
//! Why not the C library's `malloc`: a catch-up decodes pages of events on reader threads
//! while the workers fold and free them on others, and glibc's arenas serialise that on their
//! locks (in a profile of `crm project catch-up` over 1,000,000 events, `malloc`, `free` and
//! their lock waits took about a quarter of the CPU). Measured with jemalloc (README): the
//! catch-up over 1,000,000 events takes about a third less time and peaks 50 MiB lower (500
//! MiB lower over 10,000,000); metric questions over 10,000,000 events peak between 15 MiB
//! lower and 40 MiB higher than with glibc's tuned settings (a growing column is copied to
//! its new place where glibc's `mremap` moved it).
//!
//! Settings: freed pages go back to the system after about a second, returned by jemalloc's
//! own background thread (not by the thread that happens to free), and none are kept in the
//! "muzzy" state, so a large structure dropped before the next phase (a question's released
//! log index) is not part of that phase's peak. An operator overrides them with the
//! environment variable `_RJEM_MALLOC_CONF` (jemalloc's option syntax).
//!
//! A phase that frees a large structure and then allocates at once returns the freed pages
//! itself ([`return_freed_memory`]): jemalloc keeps freed pages in the arena of the thread that
//! freed them, and other threads allocate from other arenas, so until the pages decay they
//! count twice. Measured over 10,000,000 events (README): the catch-up at the head, which
//! loads four snapshots right after releasing the log's index, peaked at 295 MiB without it.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub use tikv_jemallocator::Jemalloc as Allocator;

/// The allocator's value, for `#[global_allocator]`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub const ALLOCATOR: Allocator = tikv_jemallocator::Jemalloc;

/// Elsewhere: the system allocator.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub use std::alloc::System as Allocator;

/// The allocator's value, for `#[global_allocator]`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub const ALLOCATOR: Allocator = std::alloc::System;

/// jemalloc's options, read once when it starts (a C string, as jemalloc's `malloc_conf`).
#[repr(transparent)]
pub struct Options(*const std::ffi::c_char);

// SAFETY: the pointer is to a static, immutable byte string; nothing writes through it.
#[allow(unsafe_code)]
unsafe impl Sync for Options {}

/// The settings described above, where jemalloc looks for them (`malloc_conf`, with the
/// prefix the jemalloc crate gives its symbols).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Options =
    Options(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// Returns every page freed so far to the system now, rather than after the decay above
/// (see the module documentation). Does nothing with the system allocator.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    purge_all_arenas();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn purge_all_arenas() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena (jemalloc 5 numbers "all" 4096).
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";
    let (old, old_len, new) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    // SAFETY: the name is a NUL-terminated static string; this control neither reads nor
    // writes a value, so every pointer is null and the length zero, as jemalloc requires.
    let status = unsafe { tikv_jemalloc_sys::mallctl(PURGE_ALL.as_ptr(), old, old_len, new, 0) };
    if status != 0 {
        tracing::debug!(status, "jemalloc did not purge its arenas");
    }
}
