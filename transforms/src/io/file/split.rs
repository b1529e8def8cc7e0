//! Cutting large plain input files into line-aligned splits, so that the workers of a run
//! share one big file the way they share many small ones.
//!
//! A split starts at a line start: the first one at or after a multiple of the split size.
//! Its bounds depend only on the file's bytes and the split size, never on the number of
//! workers, so a checkpoint of a split stays valid when a job restarts with other workers.
//! Each split knows how many lines precede it (one pass counting newlines, at memchr speed),
//! so positions (`input_line`) are the same as when one worker reads the whole file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Plain files larger than this are cut into splits of about this size by default: small
/// enough that the last split of a worker ends close to the others', large enough that
/// opening a split (and its checkpoint) costs nothing next to reading it.
pub const DEFAULT_SPLIT_BYTES: u64 = 16 * 1024 * 1024;

/// A stretch of an input file read by one worker: a whole file, or one split of a large
/// plain one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) path: PathBuf,
    /// The first byte (a line start).
    pub(crate) start: u64,
    /// One past the last byte: the next split's start, or the file's listed size.
    pub(crate) end: u64,
    /// Lines before `start`.
    pub(crate) lines_before: u64,
    /// The file's size when it was listed.
    pub(crate) size: u64,
    /// A part of a file cut into splits (read by seeking, checkpointed on its own).
    pub(crate) split: bool,
}

impl Unit {
    /// The whole file `path` of `size` bytes.
    pub(crate) fn whole(path: PathBuf, size: u64) -> Unit {
        Unit {
            path,
            start: 0,
            end: size,
            lines_before: 0,
            size,
            split: false,
        }
    }

    /// Bytes of the file this unit covers (compressed bytes for a gzipped whole file).
    pub(crate) fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// How the unit is named in checkpoints and [`super::FileCheckpoints`]: the path of a
    /// whole file, `path@start` for a split.
    pub(crate) fn name(&self, path: &Path) -> PathBuf {
        if self.split {
            let mut name = path.as_os_str().to_owned();
            name.push(format!("@{}", self.start));
            PathBuf::from(name)
        } else {
            path.to_path_buf()
        }
    }
}

/// Reading at an offset without a shared cursor, so that several threads count lines of one
/// file at once.
pub(crate) trait ReadAt: Sync {
    /// Reads into `buf` from byte `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match std::os::unix::fs::FileExt::read_at(self, buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - from);
        buf[..n].copy_from_slice(&self[from..from + n]);
        Ok(n)
    }
}

/// Bytes read at a time when counting lines.
const COUNT_CHUNK: usize = 1 << 20;
/// Bytes read at a time when looking for the next line start.
const SEEK_CHUNK: usize = 64 << 10;

/// The line starts where the first `size` bytes of `input` are cut, with the number of lines
/// before each: `(0, 0)` first, then for every multiple `k * split_bytes` the first line start
/// at or after it (each start once, starts at the end of the input left out).
///
/// The cuts are found first (a short read after each multiple), then the lines of the splits
/// are counted by as many threads as there are cores: the count is a pass over the whole file,
/// and a worker that waits for it at start is a worker not decoding.
pub(crate) fn split_points<R: ReadAt + ?Sized>(
    input: &R,
    size: u64,
    split_bytes: u64,
) -> io::Result<Vec<(u64, u64)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    split_points_with(input, size, split_bytes, SEEK_CHUNK, COUNT_CHUNK, threads)
}

fn split_points_with<R: ReadAt + ?Sized>(
    input: &R,
    size: u64,
    split_bytes: u64,
    seek_chunk: usize,
    count_chunk: usize,
    threads: usize,
) -> io::Result<Vec<(u64, u64)>> {
    let split_bytes = split_bytes.max(1);
    let mut starts = vec![0u64];
    let mut buf = vec![0u8; seek_chunk.max(1)];
    // The next split begins at the first line start >= target, that is just after the first
    // newline at an index >= target - 1.
    let mut target = split_bytes;
    'cuts: while target < size {
        let mut at = target - 1;
        let start = loop {
            let want = buf
                .len()
                .min(usize::try_from(size - at).unwrap_or(usize::MAX));
            let n = input.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break 'cuts;
            }
            if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                break at + i as u64 + 1;
            }
            at += n as u64;
            if at >= size {
                break 'cuts;
            }
        };
        if start >= size {
            break;
        }
        starts.push(start);
        target = (start / split_bytes + 1) * split_bytes;
    }
    // lines in each split but the last, counted in parallel
    let ranges: Vec<(u64, u64)> = starts.windows(2).map(|w| (w[0], w[1])).collect();
    let threads = threads.clamp(1, ranges.len().max(1));
    let mut counts = vec![0u64; ranges.len()];
    std::thread::scope(|scope| -> io::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ranges = &ranges;
                scope.spawn(move || -> io::Result<Vec<(usize, u64)>> {
                    let mut buf = vec![0u8; count_chunk.max(1)];
                    let mut out = Vec::new();
                    for (i, &(a, b)) in ranges.iter().enumerate().skip(t).step_by(threads) {
                        out.push((i, count_lines(input, a, b, &mut buf)?));
                    }
                    Ok(out)
                })
            })
            .collect();
        for h in handles {
            let counted = h
                .join()
                .map_err(|_| io::Error::other("a line count panicked"))??;
            for (i, n) in counted {
                counts[i] = n;
            }
        }
        Ok(())
    })?;
    let mut lines = 0;
    Ok(starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let point = (start, lines);
            lines += counts.get(i).copied().unwrap_or(0);
            point
        })
        .collect())
}

/// Newlines in bytes `[a, b)` of `input`.
fn count_lines<R: ReadAt + ?Sized>(input: &R, a: u64, b: u64, buf: &mut [u8]) -> io::Result<u64> {
    let mut lines = 0;
    let mut at = a;
    while at < b {
        let want = buf.len().min(usize::try_from(b - at).unwrap_or(usize::MAX));
        let n = input.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        at += n as u64;
    }
    Ok(lines)
}

/// The units of the file `path` (listed with `size` bytes): splits of about `split_bytes`
/// when it is plain (no gzip magic) and larger than that, else the whole file.
pub(crate) fn units_of(path: &Path, size: u64, split_bytes: u64) -> io::Result<Vec<Unit>> {
    if split_bytes == 0 || size <= split_bytes {
        return Ok(vec![Unit::whole(path.to_path_buf(), size)]);
    }
    // a gzipped file cannot be entered in the middle, whatever its name
    if super::checkpoint::FileIdentity::of(path)?.gzip_magic {
        return Ok(vec![Unit::whole(path.to_path_buf(), size)]);
    }
    let points = split_points(&File::open(path)?, size, split_bytes)?;
    Ok(points
        .iter()
        .enumerate()
        .map(|(i, &(start, lines_before))| Unit {
            path: path.to_path_buf(),
            start,
            end: points.get(i + 1).map_or(size, |p| p.0),
            lines_before,
            size,
            split: true,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The independent reading: every line start at or after each grid point, by brute force.
    fn model(bytes: &[u8], split: u64) -> Vec<(u64, u64)> {
        let starts: Vec<u64> = std::iter::once(0)
            .chain(
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i as u64 + 1),
            )
            .filter(|s| *s < bytes.len() as u64 || *s == 0)
            .collect();
        let mut points = vec![(0, 0)];
        let mut k = 1;
        while k * split < bytes.len() as u64 {
            if let Some(&s) = starts.iter().find(|s| **s >= k * split) {
                if s > 0 && points.last().is_none_or(|p| p.0 != s) {
                    let lines = bytes[..s as usize].iter().filter(|b| **b == b'\n').count();
                    points.push((s, lines as u64));
                }
            }
            k += 1;
        }
        points
    }

    #[test]
    fn cuts_at_line_starts_and_counts_lines_before() {
        let bytes = b"aaaa\nbb\n\ncccccccccc\nd";
        let points = split_points(&bytes[..], bytes.len() as u64, 4).unwrap();
        // multiples 4, 8, 12, 16, 20: line starts 5, 8, 9 (8 < 9), 20, 20, none
        assert_eq!(points, vec![(0, 0), (5, 1), (8, 2), (20, 4)]);
        assert_eq!(points, model(bytes, 4));
    }

    #[test]
    fn a_line_longer_than_many_splits_is_one_split() {
        let mut bytes = vec![b'x'; 100];
        bytes.push(b'\n');
        bytes.extend_from_slice(b"y\n");
        let points = split_points(&bytes[..], bytes.len() as u64, 10).unwrap();
        assert_eq!(points, vec![(0, 0), (101, 1)]);
    }

    #[test]
    fn reads_no_further_than_the_listed_size() {
        let bytes = b"a\nb\nc\nd\n";
        // listed at 4 bytes (the file grew since): the grown part is not looked at
        let points = split_points(&bytes[..], 4, 1).unwrap();
        assert_eq!(points, vec![(0, 0), (2, 1)]);
    }

    proptest! {
        #[test]
        fn split_points_equal_the_brute_force_model(
            lines in prop::collection::vec(prop::collection::vec(prop_oneof![Just(b'x'), Just(b'\r'), Just(b' ')], 0..40), 0..60),
            trailing_newline in any::<bool>(),
            split in 1u64..64,
            seek in 1usize..9,
            count in 1usize..9,
            threads in 1usize..4,
        ) {
            let mut bytes = lines.join(&b'\n');
            if trailing_newline && !bytes.is_empty() {
                bytes.push(b'\n');
            }
            let points = split_points(&bytes[..], bytes.len() as u64, split).unwrap();
            prop_assert_eq!(&points, &model(&bytes, split));
            // small reads and several counting threads: chunk edges inside lines and splits
            let points = split_points_with(&bytes[..], bytes.len() as u64, split, seek, count, threads).unwrap();
            prop_assert_eq!(&points, &model(&bytes, split));
        }
    }
}
