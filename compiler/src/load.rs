//! Reading the main file and everything it `include`s.
//!
//! Each file is read once however often it is included (so include cycles are harmless),
//! never more than [`MAX_FILE_BYTES`](crate::syntax::MAX_FILE_BYTES) of it, and a file
//! that is not UTF-8 is reported at its first bad byte.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::{self, ast};
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
    #[error("cannot read `{path}`: it is a directory")]
    Directory { path: String },
    #[error("`{path}` is too large ({size} bytes; the limit is {limit} bytes)")]
    TooLarge { path: String, size: u64, limit: usize },
}

/// Loads `path` and its includes. I/O problems with the main file are a [`ReadError`];
/// everything else is in the returned diagnostics.
pub fn load(path: &Path) -> Result<(Program, Diagnostics), ReadError> {
    let name = path.display().to_string();
    let bytes = read_limited(path, &name)?;
    Ok(load_bytes(&name, bytes, path.parent().map(Path::to_path_buf)))
}

/// Loads source text that did not come from a file (tests, stdin). Includes are resolved
/// against `dir`, if given.
pub fn load_str(name: &str, text: &str, dir: Option<PathBuf>) -> (Program, Diagnostics) {
    load_bytes(name, text.as_bytes().to_vec(), dir)
}

fn load_bytes(name: &str, bytes: Vec<u8>, dir: Option<PathBuf>) -> (Program, Diagnostics) {
    let mut loader = Loader {
        sources: SourceMap::new(),
        files: Vec::new(),
        seen: HashMap::new(),
        diagnostics: Diagnostics::default(),
    };
    let main = loader.add(name, bytes, dir);
    (Program { sources: loader.sources, main, files: loader.files }, loader.diagnostics)
}

struct Loader {
    sources: SourceMap,
    files: Vec<ast::File>,
    seen: HashMap<PathBuf, FileId>,
    diagnostics: Diagnostics,
}

impl Loader {
    /// Adds a file's bytes, parses it and loads its includes.
    fn add(&mut self, name: &str, bytes: Vec<u8>, dir: Option<PathBuf>) -> FileId {
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
                let id = self.add(&name, bytes, path.parent().map(Path::to_path_buf));
                self.seen.insert(key, id);
            }
            Err(e) => {
                let reason = match &e {
                    ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        "no such file".to_string()
                    }
                    ReadError::Io { source, .. } => source.to_string(),
                    ReadError::Directory { .. } => "it is a directory".to_string(),
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

fn read_limited(path: &Path, name: &str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io { path: name.to_string(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(ReadError::Directory { path: name.to_string() });
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
