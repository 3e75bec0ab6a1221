//! Reading and writing the files a run names, so that a wrong path cannot do harm: reads
//! take only regular files and never more than the memory the machine has, and writes
//! never replace a device, a directory or a pipe, never leave a partial file, and reach
//! the disk before they count as done.

use std::fs::{File, FileType};
use std::io::{self, Read, Write};
use std::path::Path;

/// Largest file read whole into memory, whatever the machine has: far above any
/// checkpoint or data set nnc works with, and a bound where the available memory is
/// unknown.
pub const MAX_READ: u64 = 16 << 30;

fn not_regular(t: FileType) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, nnc_compiler::front::load::not_a_file(t))
}

/// Bytes of memory the machine has free for a file and what is made of it:
/// `MemAvailable` on Linux, capped at [`MAX_READ`].
pub fn memory_budget() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    available.unwrap_or(MAX_READ).min(MAX_READ)
}

/// An error for `needed` bytes over `limit`, naming both.
pub fn too_large(what: &str, needed: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!("{what} needs {needed} bytes of memory, more than the {limit} this machine has free for it"),
    )
}

/// Opens `path` for reading, refusing anything but a regular file (a directory, a device
/// such as `/dev/zero`, a FIFO), and returns it with its size. The type is checked before
/// opening, since opening a FIFO waits for a writer.
pub fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let file = File::open(path)?;
    Ok((file, meta.len()))
}

/// The bytes of the regular file `path`, refused when larger than `limit` (the read also
/// stops just past it, for a file that grows meanwhile).
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > limit {
        return Err(too_large("the file", len, limit));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large("the file", bytes.len() as u64, limit));
    }
    Ok(bytes)
}

/// Refuses an output path that exists and is not a regular file: writing there would
/// replace a device or fail only after the work is done.
pub fn check_output(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(not_regular(meta.file_type())),
        _ => Ok(()),
    }
}

/// Writes `data` to `path` atomically and durably: into a temporary file beside it,
/// flushed to the disk, renamed over `path`, then the directory flushed, so that a crash
/// or power cut leaves either the old file or the whole new one. The temporary file is
/// removed when any step fails.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    check_output(path)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    check_output(&tmp)?;
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_directory(path)
}

/// Flushes the directory holding `path`, which makes a rename into it durable.
fn sync_directory(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("nnc-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_replace_files_but_never_directories() {
        let d = scratch("write");
        let file = d.join("w.bin");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err();
        assert!(e.to_string().contains("it is a directory, not a regular file"), "{e}");
        assert!(sub.is_dir());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2, "no temporary file is left");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reads_refuse_devices_and_large_files() {
        let e = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let d = scratch("read");
        let f = d.join("f");
        std::fs::write(&f, [0u8; 100]).unwrap();
        assert_eq!(read_regular(&f, 100).unwrap().len(), 100);
        let e = read_regular(&f, 99).unwrap_err();
        assert!(e.to_string().contains("needs 100 bytes") && e.to_string().contains("99"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
