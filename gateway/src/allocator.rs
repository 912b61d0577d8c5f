//! How the C allocator gives memory back: the one place of the workspace with `unsafe` code.
//!
//! glibc's `malloc` raises its mmap and trim thresholds each time it frees a large block
//! (up to 32 MiB and 64 MiB). sled frees 16 MiB buffers while it recovers the index at
//! open, so from then on every block under 16 MiB comes from the heap: a growing column of a
//! metric question is copied on each growth instead of moved by `mremap`, and what is freed
//! below a live block stays resident. Fixed thresholds keep blocks of 1 MiB and more out of
//! the heap and give the heap's top back once 1 MiB of it is free; at most one arena per
//! core bounds what idle threads keep. Measured with `crm-bench metric-memory` over
//! 10,000,000 events (README): metric questions peaked at 309–569 MiB before, 252–494 MiB
//! after; over 1,000,000 events their median time rose by about a fifth and the open took
//! 0.1 s more (sled's buffers are mapped afresh).
//!
//! The environment is the operator's choice: a `MALLOC_TRIM_THRESHOLD_`,
//! `MALLOC_MMAP_THRESHOLD_` or `MALLOC_ARENA_MAX` leaves the setting it names as glibc read
//! it, and a `GLIBC_TUNABLES` leaves all three.

/// Heap top kept before it is given back, and the size from which a block is its own mapping.
const THRESHOLD_BYTES: i32 = 1024 * 1024;

/// Sets the allocator's thresholds and arena count, unless the environment set them.
pub(crate) fn tune() {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let arenas = i32::try_from(cores.max(2)).unwrap_or(i32::MAX);
    let tunables = std::env::var_os("GLIBC_TUNABLES").is_some();
    for (variable, parameter, value) in settings(arenas) {
        if tunables || std::env::var_os(variable).is_some() {
            continue;
        }
        set(parameter, value);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn settings(arenas: i32) -> [(&'static str, i32, i32); 3] {
    [
        (
            "MALLOC_TRIM_THRESHOLD_",
            libc::M_TRIM_THRESHOLD,
            THRESHOLD_BYTES,
        ),
        (
            "MALLOC_MMAP_THRESHOLD_",
            libc::M_MMAP_THRESHOLD,
            THRESHOLD_BYTES,
        ),
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, arenas),
    ]
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set(parameter: i32, value: i32) {
    // SAFETY: `mallopt` takes two integers and no pointer; glibc serialises it with every
    // other allocator call, and these parameters only change when memory is returned.
    let accepted = unsafe { libc::mallopt(parameter, value) };
    if accepted != 1 {
        tracing::debug!(parameter, value, "the allocator refused a setting");
    }
}

/// Gives the heap's free pages back to the system, in every arena (`malloc_trim`): after a
/// large structure is dropped (a question's released log index), so that the pages it held
/// do not count again when the next allocations land in another arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn give_back() {
    // SAFETY: `malloc_trim` takes an integer and no pointer; glibc locks each arena while
    // it trims it.
    let _ = unsafe { libc::malloc_trim(0) };
}

/// Elsewhere the allocator has no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn give_back() {}

/// Elsewhere (musl, macOS, Windows) the allocator has no such settings.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn settings(_arenas: i32) -> [(&'static str, i32, i32); 0] {
    []
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_parameter: i32, _value: i32) {}
