//! Character data for character-level models: reading text, the vocabulary of its
//! characters, encoding text as token ids, and cutting the ids into training windows.

use super::error::DataError;
use std::fmt::{self, Write as _};
use std::io::Read;
use std::ops::Range;
use std::path::Path;

/// Largest text file read: far more than any corpus a character model trains on here, and
/// small enough that a wrong path (a disk image, a device) fails fast instead of filling
/// memory.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// The characters a model knows, sorted, so that token `i` is the `i`-th smallest char.
/// Sorting makes the ids depend only on the set of characters, not on where each first
/// occurs, and lets `index` use a binary search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocabulary {
    chars: Vec<char>,
}

impl Vocabulary {
    /// The distinct characters of `text` (usually the training text).
    pub fn from_text(text: &str) -> Vocabulary {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocabulary { chars }
    }

    /// Reads back a vocabulary written with `to_string` (as stored in checkpoint
    /// metadata). The characters must be sorted and distinct: anything else would give
    /// the same characters different ids than the ones the model was trained with.
    pub fn from_string(stored: &str) -> Result<Vocabulary, DataError> {
        let chars: Vec<char> = stored.chars().collect();
        if let Some(pair) = chars.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(DataError::VocabularyOrder { previous: pair[0], next: pair[1] });
        }
        Ok(Vocabulary { chars })
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The token id of `c`, if the vocabulary has it.
    pub fn index(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    /// The character of token `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`: token ids come from a model whose output has one score per
    /// character, so an id outside the vocabulary is a bug, like a slice index out of bounds.
    pub fn char(&self, i: usize) -> char {
        self.chars[i]
    }
}

/// All the characters in order: the form stored in checkpoint metadata, read back by
/// `Vocabulary::from_string`.
impl fmt::Display for Vocabulary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.chars.iter().try_for_each(|&c| f.write_char(c))
    }
}

/// Reads a UTF-8 text file of at most `MAX_TEXT_BYTES`.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    read_limited(path, MAX_TEXT_BYTES)
}

fn read_limited(path: &Path, limit: u64) -> Result<String, DataError> {
    let io = |source| DataError::Io { path: path.display().to_string(), source };
    let too_large = || DataError::TextTooLarge { path: path.display().to_string(), limit };
    // Only regular files: a device or a pipe may never end.
    let (file, len) = crate::files::open_regular(path).map_err(io)?;
    if len > limit {
        return Err(too_large());
    }
    // The size check above does not cover a file that grows, so the read itself stops
    // just past the limit too.
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count();
        DataError::NotUtf8 { path: path.display().to_string(), offset, line }
    })
}

/// Token ids of `text`; every character must be in `vocab` (as it is for the text the
/// vocabulary was built from).
pub fn encode(text: &str, vocab: &Vocabulary) -> Result<Vec<u32>, DataError> {
    text.char_indices()
        .map(|(offset, c)| match vocab.index(c) {
            Some(i) => Ok(i as u32),
            None => {
                let (line, column) = line_column(text, offset);
                Err(DataError::UnknownChar { ch: c, line, column })
            }
        })
        .collect()
}

/// Token ids of `text`, with characters missing from `vocab` replaced by token
/// `fallback`; also returns how many were replaced. For validation or prompt text, which
/// may hold characters the training text never had.
pub fn encode_lossy(text: &str, vocab: &Vocabulary, fallback: usize) -> Result<(Vec<u32>, usize), DataError> {
    if fallback >= vocab.len() {
        return Err(DataError::FallbackOutOfRange { fallback, len: vocab.len() });
    }
    let mut replaced = 0;
    let ids = text
        .chars()
        .map(|c| {
            vocab.index(c).unwrap_or_else(|| {
                replaced += 1;
                fallback
            }) as u32
        })
        .collect();
    Ok((ids, replaced))
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (1 + before.matches('\n').count(), 1 + before[line_start..].chars().count())
}

/// How a token sequence is cut into training examples for a model unrolled over `steps`
/// steps: window `i` reads `steps` tokens from `i * steps` and is trained to predict each
/// one's successor, so it needs `steps + 1` consecutive tokens. Consecutive windows overlap
/// by that one extra token only, so every token is a target exactly once (except the
/// first, which nothing precedes, and a tail too short for a whole window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub steps: usize,
    pub count: usize,
}

impl Windows {
    /// The windows over a sequence of `len` tokens.
    pub fn new(len: usize, steps: usize) -> Windows {
        Windows { steps, count: windows(len, steps) }
    }

    /// Token positions of window `i`'s input: `i*steps .. i*steps + steps`.
    pub fn input(&self, i: usize) -> Range<usize> {
        i * self.steps..(i + 1) * self.steps
    }

    /// Token positions of window `i`'s targets: the input shifted on by one token.
    pub fn target(&self, i: usize) -> Range<usize> {
        i * self.steps + 1..(i + 1) * self.steps + 1
    }
}

/// The number of windows (see `Windows`) that fit in `len` tokens: window `i` needs tokens
/// up to `i*steps + steps`, so `(len - 1) / steps` of them. Zero when `steps` is zero,
/// since an empty window trains nothing.
pub fn windows(len: usize, steps: usize) -> usize {
    len.saturating_sub(1).checked_div(steps).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A path for one test's file, in a fresh directory.
    fn scratch(name: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nnc-text-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn clean(path: &Path) {
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn vocabulary_is_sorted_and_distinct() {
        let v = Vocabulary::from_text("hello, world\n");
        assert_eq!(v.to_string(), "\n ,dehlorw");
        assert_eq!((v.len(), v.is_empty()), (10, false));
        assert_eq!(
            (v.index('\n'), v.index('l'), v.index('w'), v.index('z')),
            (Some(0), Some(6), Some(9), None)
        );
        assert_eq!((v.char(0), v.char(6), v.char(9)), ('\n', 'l', 'w'));
        assert!(Vocabulary::from_text("").is_empty());
    }

    #[test]
    fn vocabulary_round_trips_through_a_string() {
        for text in
            ["To be, or not to be:\nthat is the question.\r\n\t", "naïve 日本語 🦀 \u{0}\u{10ffff}", ""]
        {
            let v = Vocabulary::from_text(text);
            let back = Vocabulary::from_string(&v.to_string()).unwrap();
            assert_eq!(back, v);
            assert!(text.chars().all(|c| back.char(back.index(c).unwrap()) == c));
        }
    }

    #[test]
    fn stored_vocabulary_must_be_sorted_and_distinct() {
        let e = Vocabulary::from_string("abdc").unwrap_err().to_string();
        assert_eq!(
            e,
            "the stored vocabulary is not a sorted list of distinct characters: 'd' is followed by 'c'"
        );
        let e = Vocabulary::from_string("\naa").unwrap_err().to_string();
        assert!(e.ends_with("'a' is followed by 'a'"), "{e}");
    }

    #[test]
    fn encodes_text_as_ids() {
        let v = Vocabulary::from_text("abc\n");
        assert_eq!(encode("cab\na", &v).unwrap(), [3, 1, 2, 0, 1]);
        let e = encode("ab\ncé\nx", &v).unwrap_err().to_string();
        assert_eq!(e, "character 'é' at line 2, column 2 is not in the vocabulary");
        let e = encode("abc\tx", &v).unwrap_err().to_string();
        assert_eq!(e, "character '\\t' at line 1, column 4 is not in the vocabulary");
    }

    #[test]
    fn lossy_encoding_replaces_and_counts_unknown_chars() {
        let v = Vocabulary::from_text(" ab");
        assert_eq!(encode_lossy("a xb", &v, 0).unwrap(), (vec![1, 0, 0, 2], 1));
        assert_eq!(encode_lossy("ñañ", &v, 2).unwrap(), (vec![2, 1, 2], 2));
        assert_eq!(encode_lossy("ab", &v, 0).unwrap(), (vec![1, 2], 0));
        let e = encode_lossy("a", &v, 3).unwrap_err().to_string();
        assert_eq!(e, "fallback token 3 is outside the vocabulary of 3 characters");
        assert!(encode_lossy("", &Vocabulary::from_text(""), 0).is_err());
    }

    #[test]
    fn reads_utf8_text() {
        let path = scratch("ok.txt");
        std::fs::write(&path, "héllo\n🦀\n").unwrap();
        assert_eq!(read_text(&path).unwrap(), "héllo\n🦀\n");
        clean(&path);
    }

    #[test]
    fn invalid_utf8_is_located() {
        let path = scratch("latin1.txt");
        std::fs::write(&path, b"ok\nnai\xefve\n").unwrap();
        let e = read_text(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("`{}` is not UTF-8 text: invalid bytes at byte offset 6 (line 2)", path.display())
        );
        clean(&path);
    }

    #[test]
    fn directories_devices_and_missing_files_are_refused() {
        let path = scratch("absent.txt");
        let e = read_text(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read `{}`: ", path.display())), "{e}");
        let dir = path.parent().unwrap();
        let e = read_text(dir).unwrap_err().to_string();
        assert_eq!(e, format!("cannot read `{}`: it is a directory, not a regular file", dir.display()));
        // A device would never end.
        let e = read_text(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(e, "cannot read `/dev/zero`: it is a character device, not a regular file");
        clean(&path);
    }

    #[test]
    fn large_files_are_refused() {
        let path = scratch("huge.txt");
        // Sparse: takes no disk space, but its size is past the limit.
        std::fs::File::create(&path).unwrap().set_len(MAX_TEXT_BYTES + 1).unwrap();
        let e = read_text(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("`{}` is larger than 268435456 bytes, the most nnc reads as text", path.display())
        );
        std::fs::write(&path, "abcde").unwrap();
        assert_eq!(read_limited(&path, 5).unwrap(), "abcde");
        assert!(matches!(read_limited(&path, 4), Err(DataError::TextTooLarge { limit: 4, .. })));
        clean(&path);
    }

    #[test]
    fn window_counts() {
        assert_eq!(windows(11, 5), 2);
        assert_eq!(windows(10, 5), 1);
        assert_eq!(windows(6, 5), 1);
        assert_eq!(windows(5, 5), 0);
        assert_eq!((windows(0, 5), windows(1, 1), windows(2, 1)), (0, 0, 1));
        assert_eq!(windows(100, 0), 0);
    }

    #[test]
    fn windows_cover_the_tokens_with_shifted_targets() {
        for len in 0..40 {
            for steps in 1..8 {
                let w = Windows::new(len, steps);
                assert_eq!(w, Windows { steps, count: windows(len, steps) });
                for i in 0..w.count {
                    let (input, target) = (w.input(i), w.target(i));
                    assert_eq!((input.len(), target.len()), (steps, steps));
                    assert_eq!((input.start + 1, input.end + 1), (target.start, target.end));
                    assert!(target.end <= len);
                }
                // Maximal: one more window would run past the end.
                assert!(w.target(w.count).end > len, "len {len}, steps {steps}");
            }
        }
        let w = Windows::new(11, 5);
        assert_eq!((w.input(1), w.target(1)), (5..10, 6..11));
    }
}
