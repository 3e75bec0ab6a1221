//! Stage 1 (with [`crate::front::syntax`]): reading the main file and everything it
//! `include`s.
//!
//! Each file is read once however often it is included (so include cycles among included
//! files are harmless), never more than [`MAX_FILE_BYTES`](crate::front::syntax::MAX_FILE_BYTES)
//! of it, and a file that is not UTF-8 is reported at its first bad byte. A UTF-8
//! byte-order mark, which some editors write, is dropped. An include that leads back to
//! the main file is an error: the main file would be read again as a file of blocks.

use crate::front::syntax::{self, ast};
use crate::support::diagnostic::{Diagnostic, Diagnostics};
use crate::support::source::{FileId, SourceMap, Span};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Most files one model may pull in through `include`.
const MAX_FILES: usize = 256;

/// A model's source files, parsed.
#[derive(Debug)]
pub struct Program {
    pub sources: SourceMap,
    pub main: FileId,
    /// Parsed files, indexed by `FileId`.
    pub files: Vec<ast::File>,
}

/// Why the main file could not be read at all (an include that cannot be read is a
/// diagnostic at the `include` instead).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    /// A directory, FIFO, device or socket: reading one would fail, block forever or
    /// never end.
    #[error("cannot read `{path}`: {why}")]
    NotAFile { path: String, why: String },
    #[error("`{path}` is too large ({size} bytes; the limit is {limit} bytes)")]
    TooLarge { path: String, size: u64, limit: usize },
}

/// Loads `path` and its includes. I/O problems with the main file are a [`ReadError`];
/// everything else is in the returned diagnostics.
pub fn load(path: &Path) -> Result<(Program, Diagnostics), ReadError> {
    let name = path.display().to_string();
    let bytes = read_limited(path, &name)?;
    Ok(load_bytes(&name, bytes, path.parent().map(Path::to_path_buf), path.canonicalize().ok()))
}

/// Loads source text that did not come from a file (tests, stdin). Includes are resolved
/// against `dir`, if given.
pub fn load_str(name: &str, text: &str, dir: Option<PathBuf>) -> (Program, Diagnostics) {
    load_bytes(name, text.as_bytes().to_vec(), dir, Path::new(name).canonicalize().ok())
}

/// `main_key` is the main file's canonical path, when it is a file.
fn load_bytes(
    name: &str,
    bytes: Vec<u8>,
    dir: Option<PathBuf>,
    main_key: Option<PathBuf>,
) -> (Program, Diagnostics) {
    let mut loader = Loader {
        sources: SourceMap::new(),
        files: Vec::new(),
        seen: HashMap::new(),
        main_key,
        chain: Vec::new(),
        diagnostics: Diagnostics::default(),
    };
    let main = loader.add(name, bytes, dir);
    (Program { sources: loader.sources, main, files: loader.files }, loader.diagnostics)
}

struct Loader {
    sources: SourceMap,
    files: Vec<ast::File>,
    seen: HashMap<PathBuf, FileId>,
    main_key: Option<PathBuf>,
    /// The `include`s that led to the file being loaded, outermost first: the path
    /// string's span and the name of the file it named.
    chain: Vec<(Span, String)>,
    diagnostics: Diagnostics,
}

impl Loader {
    /// Adds a file's bytes, parses it and loads its includes.
    fn add(&mut self, name: &str, mut bytes: Vec<u8>, dir: Option<PathBuf>) -> FileId {
        if bytes.starts_with(BOM) {
            bytes.drain(..BOM.len());
        }
        let (text, bad_byte) = match String::from_utf8(bytes) {
            Ok(t) => (t, None),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(at))
            }
        };
        let id = self.sources.add(name, text);
        if let Some(at) = bad_byte {
            self.diagnostics.push(
                Diagnostic::error("file is not valid UTF-8")
                    .at(Span::new(id, at..at + 1), "invalid byte here")
                    .with_note("nnc source files must be UTF-8 text"),
            );
            self.files.push(ast::File { id, items: Vec::new() });
            return id;
        }
        let (file, diagnostics) = syntax::parse(&self.sources, id);
        self.diagnostics.extend(diagnostics);
        let includes: Vec<ast::Include> = file
            .items
            .iter()
            .filter_map(|i| match i {
                ast::Item::Include(inc) => Some(inc.clone()),
                _ => None,
            })
            .collect();
        self.files.push(file);
        for inc in includes {
            self.include(&inc, dir.as_deref());
        }
        id
    }

    fn include(&mut self, inc: &ast::Include, dir: Option<&Path>) {
        let path = match dir {
            Some(d) if !Path::new(&inc.path).is_absolute() => d.join(&inc.path),
            _ => PathBuf::from(&inc.path),
        };
        let key = path.canonicalize().unwrap_or_else(|_| path.clone());
        if self.main_key.as_ref() == Some(&key) {
            self.include_of_main(inc);
            return;
        }
        if self.seen.contains_key(&key) {
            return;
        }
        if self.files.len() >= MAX_FILES {
            self.diagnostics.push(
                Diagnostic::error(format!("too many included files (the limit is {MAX_FILES})"))
                    .at(inc.path_span, "one include too many"),
            );
            return;
        }
        let name = path.display().to_string();
        match read_limited(&path, &name) {
            Ok(bytes) => {
                // Claim the path before loading so that a file including itself stops here.
                self.seen.insert(key.clone(), FileId(u32::MAX));
                self.chain.push((inc.path_span, name.clone()));
                let id = self.add(&name, bytes, path.parent().map(Path::to_path_buf));
                self.chain.pop();
                self.seen.insert(key, id);
            }
            Err(e) => {
                let reason = match &e {
                    ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        "no such file".to_string()
                    }
                    ReadError::Io { source, .. } => source.to_string(),
                    ReadError::NotAFile { why, .. } => why.clone(),
                    ReadError::TooLarge { .. } => e.to_string(),
                };
                self.diagnostics.push(
                    Diagnostic::error(format!("cannot include `{}`: {reason}", inc.path))
                        .at(inc.path_span, format!("looked for {name}"))
                        .with_note("include paths are relative to the file that includes them"),
                );
            }
        }
    }
}

impl Loader {
    /// Reports `inc`, which names the main file, with the includes that led to it.
    fn include_of_main(&mut self, inc: &ast::Include) {
        // The main file is the first one loaded.
        let main = &self.sources.get(FileId(0)).name;
        let mut d = Diagnostic::error(format!("`{main}` is included from itself"))
            .at(inc.path_span, "this includes the main file again");
        let mut names = vec![main.clone()];
        for (span, name) in &self.chain {
            d = d.with_secondary(*span, format!("`{name}` is included here"));
            names.push(name.clone());
        }
        names.push(main.clone());
        self.diagnostics.push(d.with_note(format!("the chain of includes: {}", names.join(" → "))));
    }
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = "\u{feff}".as_bytes();

/// Why a path that exists is not a regular file, for messages: `it is a FIFO, not a regular
/// file`. Shared by everything that reads a file a user names.
pub fn not_a_file(t: std::fs::FileType) -> String {
    let what = if t.is_dir() { Some("a directory") } else { None };
    #[cfg(unix)]
    let what = what.or_else(|| {
        use std::os::unix::fs::FileTypeExt;
        [
            (t.is_fifo(), "a FIFO"),
            (t.is_char_device(), "a character device"),
            (t.is_block_device(), "a block device"),
            (t.is_socket(), "a socket"),
        ]
        .into_iter()
        .find_map(|(is, what)| is.then_some(what))
    });
    match what {
        Some(what) => format!("it is {what}, not a regular file"),
        None => "it is not a regular file".to_string(),
    }
}

/// Reads a source file: a regular file of at most [`syntax::MAX_FILE_BYTES`].
pub fn read_limited(path: &Path, name: &str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io { path: name.to_string(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile { path: name.to_string(), why: not_a_file(meta.file_type()) });
    }
    let limit = syntax::MAX_FILE_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(io)?.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge {
            path: name.to_string(),
            size: meta.len().max(bytes.len() as u64),
            limit,
        });
    }
    Ok(bytes)
}
