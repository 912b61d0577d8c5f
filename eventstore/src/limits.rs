//! Every bound the log enforces, in one place. A request beyond a limit is
//! rejected with an error that names the limit; nothing is truncated silently.

/// Most events in one append (one atomic batch to one stream).
pub const APPEND_EVENTS_MAX: usize = 1_000;

/// Most bytes of one event (payload + metadata + type + actor). CRM events are
/// facts, not documents: store attachments elsewhere and reference them. The
/// sled backend relies on this bound to keep every node out of sled's
/// un-fsynced blob files (see `sled_store`).
pub const EVENT_SIZE_MAX_BYTES: usize = 64 * 1024;

/// Most bytes of one append, all events together.
pub const APPEND_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Most events one read returns; larger requests are capped to this.
pub const READ_PAGE_MAX: usize = 10_000;

/// Longest stream id.
pub const STREAM_ID_SIZE_MAX_BYTES: usize = 255;

/// Longest event type name.
pub const EVENT_TYPE_SIZE_MAX_BYTES: usize = 128;

/// Longest actor name.
pub const ACTOR_SIZE_MAX_BYTES: usize = 256;

/// Most appends (stream parts) in one `append_batch`.
pub const BATCH_PARTS_MAX: usize = 1_024;

/// Most events in one `append_batch`, all parts together.
pub const BATCH_EVENTS_MAX: usize = 50_000;

/// Most append requests one group commit takes before it flushes.
pub const GROUP_COMMIT_REQUESTS_MAX: usize = 1_024;

/// Most events one group commit takes before it flushes.
pub const GROUP_COMMIT_EVENTS_MAX: usize = 50_000;

/// Depth of the queue of append requests waiting for the writer.
pub const APPEND_QUEUE_DEPTH: usize = 4_096;

/// Stream versions the sled writer caches before it starts over (misses read the index).
pub const STREAM_CACHE_ENTRIES_MAX: usize = 1_000_000;
