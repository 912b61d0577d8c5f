//! A run: entries of one table written to a file in key order, never changed after.
//!
//! File: blocks of at most [`BLOCK_ENTRIES`] entries, back to back; an entry is the
//! bincode (standard configuration) of `(key: &str, value: Option<&[u8]>)`, `None` marking
//! a removed entry (a tombstone, which hides the key in older runs). In memory a run keeps
//! the first key, offset and length of each block, and a Bloom filter of its keys: about
//! 2.5 bytes per entry.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::shared::Text;

/// Entries per block: a lookup reads one block.
pub(crate) const BLOCK_ENTRIES: usize = 32;

/// False-positive rate of a run's Bloom filter.
const BLOOM_FALSE_POSITIVE: f64 = 0.01;

/// The hasher of every run's Bloom filter: one seed, so a key is hashed once for all runs.
pub(crate) type KeyHasher = foldhash::fast::FixedState;

fn key_hasher() -> KeyHasher {
    foldhash::fast::FixedState::with_seed(0x6372_6d2d_7370_696c)
}

/// The hash of `key` that runs' Bloom filters take.
pub(crate) fn key_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    key_hasher().hash_one(key)
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// One entry as it is read back: a live value or a tombstone.
pub(crate) type Entry = (String, Option<Vec<u8>>);

/// Where one block is.
struct Block {
    first_key: Text,
    offset: u64,
    len: usize,
}

/// A run file and what is kept in memory to read it.
pub(crate) struct Run {
    path: PathBuf,
    file: File,
    blocks: Vec<Block>,
    bloom: fastbloom::BloomFilter<KeyHasher>,
    /// Entries, tombstones included.
    pub(crate) entries: usize,
    /// Compaction level: 0 when written from memory, one more than its inputs' when merged.
    pub(crate) level: u32,
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

impl Run {
    /// Writes `entries` (strictly ascending keys; about `count` of them, which sizes the Bloom
    /// filter: more only make it answer "maybe" more often) to a new file at `path`.
    pub(crate) fn write<K: AsRef<str>, B: AsRef<[u8]>>(
        path: &Path,
        level: u32,
        count: usize,
        entries: impl Iterator<Item = (K, Option<B>)>,
    ) -> std::io::Result<Run> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut out = BufWriter::with_capacity(256 * 1024, &file);
        let mut bloom = fastbloom::BloomFilter::with_false_pos(BLOOM_FALSE_POSITIVE)
            .hasher(key_hasher())
            .expected_items(count.max(1));
        let mut blocks: Vec<Block> = Vec::new();
        let mut offset = 0u64;
        let mut in_block = 0usize;
        let mut entries_written = 0usize;
        let mut buf = Vec::new();
        for (key, value) in entries {
            let (key, value) = (key.as_ref(), value.as_ref().map(AsRef::as_ref));
            buf.clear();
            bincode::encode_into_std_write((key, value), &mut buf, config())
                .map_err(|e| invalid(format!("encoding a spilled entry: {e}")))?;
            if in_block == BLOCK_ENTRIES || blocks.is_empty() {
                blocks.push(Block {
                    first_key: Text::from(key),
                    offset,
                    len: 0,
                });
                in_block = 0;
            }
            out.write_all(&buf)?;
            let n = buf.len();
            offset = offset.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            if let Some(block) = blocks.last_mut() {
                block.len = block.len.saturating_add(n);
            }
            in_block += 1;
            entries_written += 1;
            bloom.insert_hash(key_hash(key));
        }
        out.flush()?;
        drop(out);
        Ok(Run {
            path: path.to_path_buf(),
            file,
            blocks,
            bloom,
            entries: entries_written,
            level,
        })
    }

    fn read_block(&self, block: &Block) -> std::io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; block.len];
        self.file.read_exact_at(&mut bytes, block.offset)?;
        Ok(bytes)
    }

    /// Decodes the entries of one block's bytes, calling `each` until it returns false.
    fn entries_of(
        bytes: &[u8],
        mut each: impl FnMut(&str, Option<&[u8]>) -> bool,
    ) -> std::io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let ((key, value), used): ((&str, Option<&[u8]>), usize) =
                bincode::borrow_decode_from_slice(rest, config())
                    .map_err(|e| invalid(format!("a spilled entry could not be read: {e}")))?;
            if !each(key, value) {
                return Ok(());
            }
            rest = rest.get(used..).unwrap_or_default();
        }
        Ok(())
    }

    /// The entry of `key` (whose [`key_hash`] is `hash`): `Some(Some(bytes))` live,
    /// `Some(None)` removed, `None` absent.
    pub(crate) fn get(&self, key: &str, hash: u64) -> std::io::Result<Option<Option<Vec<u8>>>> {
        if !self.bloom.contains_hash(hash) {
            return Ok(None);
        }
        let after = self.blocks.partition_point(|b| b.first_key.as_str() <= key);
        let Some(block) = after.checked_sub(1).and_then(|i| self.blocks.get(i)) else {
            return Ok(None);
        };
        let bytes = self.read_block(block)?;
        let mut found = None;
        Run::entries_of(&bytes, |k, v| {
            if k == key {
                found = Some(v.map(<[u8]>::to_vec));
                false
            } else {
                k < key
            }
        })?;
        Ok(found)
    }

    /// Every entry in key order, read a block at a time.
    pub(crate) fn iter(&self) -> RunIter<'_> {
        RunIter {
            run: self,
            next_block: 0,
            pending: Vec::new(),
        }
    }
}

impl Drop for Run {
    /// A run merged into another, or of a dropped table, is not needed again.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The entries of a run, in key order.
pub(crate) struct RunIter<'a> {
    run: &'a Run,
    next_block: usize,
    /// The rest of the current block, reversed (popped from the end).
    pending: Vec<Entry>,
}

impl Iterator for RunIter<'_> {
    type Item = std::io::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pending.is_empty() {
            let block = self.run.blocks.get(self.next_block)?;
            self.next_block += 1;
            let bytes = match self.run.read_block(block) {
                Ok(bytes) => bytes,
                Err(e) => return Some(Err(e)),
            };
            let mut entries = Vec::with_capacity(BLOCK_ENTRIES);
            if let Err(e) = Run::entries_of(&bytes, |k, v| {
                entries.push((k.to_owned(), v.map(<[u8]>::to_vec)));
                true
            }) {
                return Some(Err(e));
            }
            entries.reverse();
            self.pending = entries;
        }
        self.pending.pop().map(Ok)
    }
}

/// The entries of several runs merged in key order; where runs share a key, the newest's
/// entry (the lowest rank) is kept and the others are skipped.
pub(crate) struct Merged<'a> {
    /// Each source's next entry, by rank (0 = newest).
    heads: Vec<Option<Entry>>,
    sources: Vec<RunIter<'a>>,
    /// The ranks whose heads hold the smallest key, newest first (kept between calls for
    /// its allocation).
    at_key: Vec<usize>,
}

impl<'a> Merged<'a> {
    /// Over `runs`, newest first.
    pub(crate) fn new(runs: impl Iterator<Item = &'a Run>) -> std::io::Result<Merged<'a>> {
        let mut sources: Vec<RunIter<'a>> = runs.map(Run::iter).collect();
        let mut heads = Vec::with_capacity(sources.len());
        for source in &mut sources {
            heads.push(source.next().transpose()?);
        }
        Ok(Merged {
            heads,
            sources,
            at_key: Vec::new(),
        })
    }

    /// The next entry in key order, the newest of those sharing its key.
    pub(crate) fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        // One comparison per head: a smaller key starts the list of sources at the key, an
        // equal one joins it (the first, the newest, is the entry kept).
        self.at_key.clear();
        for (rank, head) in self.heads.iter().enumerate() {
            let Some((key, _)) = head else { continue };
            let order = self
                .at_key
                .first()
                .and_then(|b| self.heads.get(*b))
                .and_then(Option::as_ref)
                .map(|(best_key, _)| key.cmp(best_key));
            match order {
                None | Some(std::cmp::Ordering::Less) => {
                    self.at_key.clear();
                    self.at_key.push(rank);
                }
                Some(std::cmp::Ordering::Equal) => self.at_key.push(rank),
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        let Some(entry) = self
            .at_key
            .first()
            .and_then(|best| self.heads.get_mut(*best))
            .and_then(Option::take)
        else {
            return Ok(None);
        };
        // Advance every source at this key (the chosen one and the older ones it hides).
        for rank in &self.at_key {
            let next = match self.sources.get_mut(*rank) {
                Some(source) => source.next().transpose()?,
                None => None,
            };
            if let Some(head) = self.heads.get_mut(*rank) {
                *head = next;
            }
        }
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_answers_lookups_and_lists_its_entries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<(String, Option<Vec<u8>>)> = (0..100u32)
            .map(|i| {
                let v = (i % 10 != 3).then(|| vec![u8::try_from(i).unwrap(); 5]);
                (format!("key-{i:04}"), v)
            })
            .collect();
        let run = Run::write(
            &dir.path().join("run"),
            0,
            values.len(),
            values.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        )
        .unwrap();
        assert_eq!(run.entries, 100);
        assert_eq!(run.blocks.len(), 100usize.div_ceil(BLOCK_ENTRIES));
        for (k, v) in &values {
            assert_eq!(run.get(k, key_hash(k)).unwrap(), Some(v.clone()), "{k}");
        }
        for k in ["key-", "key-0100", "a", "zzz", "key-0050x"] {
            assert_eq!(run.get(k, key_hash(k)).unwrap(), None, "{k}");
        }
        let listed: Vec<Entry> = run.iter().map(Result::unwrap).collect();
        assert_eq!(listed, values);
    }

    #[test]
    fn merged_runs_keep_the_newest_entry_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<(String, Option<Vec<u8>>)> = vec![
            ("a".into(), Some(vec![1])),
            ("b".into(), Some(vec![1])),
            ("d".into(), Some(vec![1])),
        ];
        let new: Vec<(String, Option<Vec<u8>>)> = vec![
            ("b".into(), None),
            ("c".into(), Some(vec![2])),
            ("d".into(), Some(vec![2])),
        ];
        let write = |name: &str, e: &[(String, Option<Vec<u8>>)]| {
            Run::write(
                &dir.path().join(name),
                0,
                e.len(),
                e.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            )
            .unwrap()
        };
        let (old, new) = (write("old", &old), write("new", &new));
        let mut merged = Merged::new([&new, &old].into_iter()).unwrap();
        let mut out = Vec::new();
        while let Some(e) = merged.next_entry().unwrap() {
            out.push(e);
        }
        assert_eq!(
            out,
            vec![
                ("a".to_owned(), Some(vec![1])),
                ("b".to_owned(), None),
                ("c".to_owned(), Some(vec![2])),
                ("d".to_owned(), Some(vec![2])),
            ]
        );
    }
}
