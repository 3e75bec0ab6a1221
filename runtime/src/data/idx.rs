//! The IDX format of the MNIST distribution: a big-endian header (two zero bytes, a type
//! code, the number of dimensions, then each dimension as a u32) followed by the values.
//! Files ending in `.gz` are decompressed on the fly.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Largest file accepted after decompression (a full ImageNet-size IDX would be larger,
/// but nothing nnc trains or predicts on is).
const MAX_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("`{path}` is not an IDX file: {reason}")]
    Format { path: String, reason: String },
}

const NOT_IDX: &str = "it does not start with the IDX magic number (two zero bytes, a type, a rank)";

/// An IDX array, values converted to f32 (unsigned bytes keep their 0–255 values).
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
    /// Whether the values were unsigned bytes (pixels, labels).
    pub bytes: bool,
}

/// Whether `bytes` start like an IDX file (or a gzip stream, which may hold one).
pub fn looks_like_idx(path: &Path) -> bool {
    let mut head = [0u8; 4];
    // Opening a FIFO would wait for a writer; `read` refuses what is not a regular file.
    let Ok((mut f, _)) = crate::files::open_regular(path) else { return false };
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    head[..2] == [0x1f, 0x8b]
        || (head[0] == 0 && head[1] == 0 && matches!(head[2], 0x08 | 0x09 | 0x0b | 0x0c | 0x0d | 0x0e))
}

/// The file at `path` as a stream, decompressed when it is gzip (detected by its magic
/// bytes). Only regular files are read: a device such as `/dev/zero` never ends.
fn open(path: &Path) -> Result<Box<dyn Read>, IdxError> {
    let name = path.display().to_string();
    let io = |source| IdxError::Io { path: name.clone(), source };
    let (file, _) = crate::files::open_regular(path).map_err(io)?;
    let mut file = std::io::BufReader::new(file);
    let gzip = std::io::BufRead::fill_buf(&mut file).map_err(io)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip { Box::new(GzDecoder::new(file)) } else { Box::new(file) })
}

/// Reads at most `limit` bytes of `stream`, refusing more with the size named.
fn read_at_most(stream: impl Read, limit: u64, path: &Path) -> Result<Vec<u8>, IdxError> {
    let name = path.display().to_string();
    let mut bytes = Vec::new();
    stream
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| IdxError::Format { path: name.clone(), reason: format!("gzip data is corrupt: {e}") })?;
    if bytes.len() as u64 > limit {
        return Err(IdxError::Format { path: name, reason: format!("larger than {limit} bytes") });
    }
    Ok(bytes)
}

/// Reads a file's bytes (decompressed), bounded by [`MAX_BYTES`] and by half the memory
/// free, since the values made of them take as much again.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, IdxError> {
    let limit = MAX_BYTES.min(crate::files::memory_budget() / 2);
    read_at_most(open(path)?, limit, path)
}

/// Reads an IDX file. The header is read first: a file whose dimensions declare more
/// than [`MAX_BYTES`] of data or of f32 values, or more than the memory free for both,
/// is refused with the size named before anything else is read or decompressed.
pub fn read(path: &Path) -> Result<Idx, IdxError> {
    let name = path.display().to_string();
    let format = |reason: String| IdxError::Format { path: name.clone(), reason };
    let mut stream = open(path)?;
    let mut head = [0u8; 4];
    let short = |e: std::io::Error| format(format!("truncated header: {e}"));
    stream.read_exact(&mut head).map_err(short)?;
    if head[..2] != [0, 0] {
        return Err(format(NOT_IDX.into()));
    }
    let mut bytes = head.to_vec();
    bytes.resize(4 + 4 * head[3] as usize, 0);
    stream.read_exact(&mut bytes[4..]).map_err(short)?;
    let (size, count) = declared(&bytes).map_err(&format)?;
    // Both the bytes and the f32 values made of them stay under the bound.
    let largest = count.checked_mul(size.max(4));
    if largest.is_none_or(|bytes| bytes > MAX_BYTES) {
        return Err(format(format!(
            "its dimensions declare {count} values, more than the {MAX_BYTES} bytes nnc reads as f32 values"
        )));
    }
    let data = count * size;
    // The bytes, then one f32 per value.
    let needed = data + 4 * count;
    let budget = crate::files::memory_budget();
    if needed > budget {
        let source = crate::files::too_large(&format!("its {count} values"), needed, budget);
        return Err(IdxError::Io { path: name, source });
    }
    // One byte more than declared shows trailing data, which `parse` reports.
    bytes.extend(read_at_most(stream, data + 1, path)?);
    parse(&bytes).map_err(format)
}

/// The element size and value count an IDX header declares.
fn declared(bytes: &[u8]) -> Result<(u64, u64), String> {
    let size = match bytes[2] {
        0x08 | 0x09 => 1,
        0x0b => 2,
        0x0c | 0x0d => 4,
        0x0e => 8,
        t => return Err(format!("unknown element type 0x{t:02x}")),
    };
    let count = bytes[4..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("four bytes")) as u64)
        .try_fold(1u64, |a, d| a.checked_mul(d))
        .ok_or("the dimensions overflow")?;
    Ok((size, count))
}

/// Parses IDX bytes.
pub fn parse(bytes: &[u8]) -> Result<Idx, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(NOT_IDX.into());
    }
    let (size, bytes_type) = match bytes[2] {
        0x08 => (1, true),
        0x09 => (1, false),
        0x0b => (2, false),
        0x0c => (4, false),
        0x0d => (4, false),
        0x0e => (8, false),
        t => return Err(format!("unknown element type 0x{t:02x}")),
    };
    let rank = bytes[3] as usize;
    if rank == 0 {
        return Err("it has no dimensions".into());
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {rank} dimensions need {header} bytes, found {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("four bytes")) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the dimensions overflow")?;
    let expected =
        count.checked_mul(size).and_then(|n| n.checked_add(header)).ok_or("the dimensions overflow")?;
    if bytes.len() != expected {
        return Err(format!(
            "dimensions {dims:?} need {} bytes of data, but the file has {}",
            expected - header,
            bytes.len() - header
        ));
    }
    let data = &bytes[header..];
    let values: Vec<f32> = match bytes[2] {
        0x08 => data.iter().map(|&b| b as f32).collect(),
        0x09 => data.iter().map(|&b| b as i8 as f32).collect(),
        0x0b => data.chunks_exact(2).map(|c| i16::from_be_bytes([c[0], c[1]]) as f32).collect(),
        0x0c => data.chunks_exact(4).map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        0x0d => data.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect(),
        _ => data
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes(c.try_into().expect("eight bytes")) as f32)
            .collect(),
    };
    Ok(Idx { dims, values, bytes: bytes_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(t: u8, dims: &[u32]) -> Vec<u8> {
        let mut b = vec![0, 0, t, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn parses_bytes_and_floats() {
        let mut b = header(0x08, &[2, 2]);
        b.extend([0, 255, 7, 9]);
        let idx = parse(&b).unwrap();
        assert_eq!(idx.dims, [2, 2]);
        assert_eq!(idx.values, [0.0, 255.0, 7.0, 9.0]);
        let mut f = header(0x0d, &[1]);
        f.extend(1.5f32.to_be_bytes());
        assert_eq!(parse(&f).unwrap().values, [1.5]);
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        assert!(parse(b"PK\x03\x04").unwrap_err().contains("magic"));
        assert!(parse(&header(0x42, &[1])).unwrap_err().contains("unknown element type"));
        let mut short = header(0x08, &[10]);
        short.extend([1, 2, 3]);
        assert!(parse(&short).unwrap_err().contains("need 10 bytes of data, but the file has 3"));
        assert!(parse(&[0, 0, 8, 3, 0]).unwrap_err().contains("truncated header"));
        let huge = header(0x08, &[u32::MAX, u32::MAX, u32::MAX]);
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn sizes_are_checked_against_the_header_before_reading() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("nnc-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A small gzip file whose header declares 2.1 GB of pixels (8.4 GB as f32).
        let path = dir.join("huge-idx3-ubyte.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&header(0x08, &[2_100_000, 1000])).unwrap();
        gz.write_all(&[0; 4096]).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("declare 2100000000 values, more than the 4294967296 bytes"), "{e}");
        // Declared sizes that fit are read exactly; extra data is an error.
        let mut ok = header(0x08, &[3]);
        ok.extend([1, 2, 3]);
        std::fs::write(&path, &ok).unwrap();
        assert_eq!(read(&path).unwrap().values, [1.0, 2.0, 3.0]);
        ok.push(4);
        std::fs::write(&path, &ok).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("need 3 bytes of data, but the file has 4"));
        let e = read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("character device, not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_the_shared_mnist_digits_when_present() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist/test-images-idx3-ubyte.gz");
        if !path.exists() {
            return; // the project works without ../shared; this only checks real files when they are there
        }
        let idx = read(&path).unwrap();
        assert_eq!(idx.dims, [1000, 28, 28]);
        assert!(idx.bytes && idx.values.iter().all(|v| (0.0..=255.0).contains(v)));
    }
}
