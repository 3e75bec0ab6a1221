//! Labelled examples for supervised training: an IDX file of examples (images) paired with
//! an IDX file of class labels, named and laid out as in the MNIST distribution.

use super::error::DataError;
use super::idx;
use std::path::{Path, PathBuf};

/// Examples with one class label each, values exactly as stored in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    pub count: usize,
    /// The shape of one example, e.g. `[28, 28]` for MNIST digits.
    pub example_dims: Vec<usize>,
    /// Whether the examples were unsigned bytes. Their values then keep 0..=255, not
    /// scaled, because scaling and normalisation belong to the network's input spec (and
    /// augmentation must see raw pixels first).
    pub pixels: bool,
    /// `count` examples one after another, row-major.
    pub values: Vec<f32>,
    pub labels: Vec<u32>,
}

/// Finds the images and labels files of `split` ("train", "test") in `dir`.
///
/// Accepts `{split}-images-idx3-ubyte` and `{split}-labels-idx1-ubyte`, each optionally
/// with `.gz`, and `t10k-` in place of `test-` (the official MNIST name). When several
/// exist the uncompressed one wins, since that is usually a file unpacked from the other.
pub fn find_split(dir: &Path, split: &str) -> Result<(PathBuf, PathBuf), DataError> {
    let meta = std::fs::metadata(dir).map_err(|source| io_error(dir, source))?;
    if !meta.is_dir() {
        return Err(io_error(dir, std::io::ErrorKind::NotADirectory.into()));
    }
    Ok((find_file(dir, split, "images", "idx3")?, find_file(dir, split, "labels", "idx1")?))
}

fn io_error(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io { path: path.display().to_string(), source }
}

/// The first of the names `kind` of `split` may have that is a file in `dir`.
fn find_file(dir: &Path, split: &str, kind: &'static str, tag: &str) -> Result<PathBuf, DataError> {
    let names = file_names(split, kind, tag);
    let found = names.iter().map(|name| dir.join(name)).find(|path| path.is_file());
    found.ok_or_else(|| DataError::SplitMissing {
        dir: dir.display().to_string(),
        split: split.to_string(),
        kind,
        looked_for: names,
    })
}

/// The accepted names, in order of preference.
fn file_names(split: &str, kind: &str, tag: &str) -> Vec<String> {
    let prefixes: &[&str] = if split == "test" { &["test", "t10k"] } else { &[split] };
    prefixes
        .iter()
        .flat_map(|prefix| {
            let name = format!("{prefix}-{kind}-{tag}-ubyte");
            [name.clone(), name + ".gz"]
        })
        .collect()
}

/// Reads examples and their labels, checking that they pair up and that every label is a
/// class in `0..classes`.
pub fn load(images: &Path, labels: &Path, classes: usize) -> Result<Labelled, DataError> {
    let x = idx::read(images)?;
    let y = idx::read(labels)?;
    pair(x, y, &images.display().to_string(), &labels.display().to_string(), classes)
}

/// Pairs parsed examples `x` with labels `y` (named for messages), checking them as
/// [`load`] does.
pub fn pair(
    x: idx::Idx,
    y: idx::Idx,
    images_name: &str,
    labels_name: &str,
    classes: usize,
) -> Result<Labelled, DataError> {
    let (images_name, labels_name) = (images_name.to_string(), labels_name.to_string());
    if x.dims.len() < 2 {
        return Err(DataError::ImagesRank { path: images_name, dims: x.dims });
    }
    if y.dims.len() != 1 {
        return Err(DataError::LabelsNotVector { path: labels_name, dims: y.dims });
    }
    let count = x.dims[0];
    if count != y.dims[0] {
        return Err(DataError::CountMismatch {
            images: images_name,
            image_count: count,
            labels: labels_name,
            label_count: y.dims[0],
        });
    }
    if count == 0 {
        return Err(DataError::Empty { path: images_name });
    }
    let labels = y
        .values
        .iter()
        .enumerate()
        .map(|(example, &label)| class(label, example, classes, &labels_name))
        .collect::<Result<_, _>>()?;
    Ok(Labelled { count, example_dims: x.dims[1..].to_vec(), pixels: x.bytes, values: x.values, labels })
}

/// `label` as a class index, if it is a whole number in `0..classes`.
fn class(label: f32, example: usize, classes: usize, path: &str) -> Result<u32, DataError> {
    if label.fract() != 0.0 {
        // Also catches NaN and infinities, whose fractional part is NaN.
        return Err(DataError::LabelNotInteger { path: path.to_string(), example, label });
    }
    // Compared in f64 so that class counts above 2^24 are not rounded.
    if label < 0.0 || label as f64 >= classes as f64 {
        return Err(DataError::LabelOutOfRange { path: path.to_string(), example, label, classes });
    }
    Ok(label as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty directory for one test.
    fn scratch(name: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nnc-labelled-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// IDX bytes of element type `t` (0x08 unsigned bytes, 0x09 signed, 0x0d f32).
    fn idx_bytes(t: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, t, dims.len() as u8];
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend(data);
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Three 2×2 byte images and labels file written in `dir`.
    fn three_images(dir: &Path) -> PathBuf {
        write(dir, "x", &idx_bytes(0x08, &[3, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]))
    }

    fn load_err(images: &Path, labels: &Path) -> String {
        load(images, labels, 10).unwrap_err().to_string()
    }

    #[test]
    fn loads_pixels_and_labels_as_stored() {
        let dir = scratch("ok");
        let x = three_images(&dir);
        let y = write(&dir, "y", &idx_bytes(0x08, &[3], &[9, 0, 4]));
        let l = load(&x, &y, 10).unwrap();
        assert_eq!(l.count, 3);
        assert_eq!(l.example_dims, [2, 2]);
        assert!(l.pixels);
        assert_eq!(l.values[..4], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(l.values[11], 255.0);
        assert_eq!(l.labels, [9, 0, 4]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn float_examples_are_not_pixels() {
        let dir = scratch("float");
        let x = write(&dir, "x", &idx_bytes(0x0d, &[1, 1], &0.25f32.to_be_bytes()));
        let y = write(&dir, "y", &idx_bytes(0x0d, &[1], &2.0f32.to_be_bytes()));
        let l = load(&x, &y, 3).unwrap();
        assert!(!l.pixels);
        assert_eq!((l.values, l.labels), (vec![0.25], vec![2]));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn counts_must_match() {
        let dir = scratch("count");
        let x = three_images(&dir);
        let y = write(&dir, "y", &idx_bytes(0x08, &[2], &[1, 2]));
        let expected = format!("`{}` has 3 images but `{}` has 2 labels", x.display(), y.display());
        assert_eq!(load_err(&x, &y), expected);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn labels_must_be_one_dimensional() {
        let dir = scratch("labels-rank");
        let x = three_images(&dir);
        let y = write(&dir, "y", &idx_bytes(0x08, &[3, 1], &[1, 2, 3]));
        let e = load_err(&x, &y);
        assert!(e.contains(&format!("`{}` should hold one label per example", y.display())), "{e}");
        assert!(e.contains("[3, 1]"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn labels_must_be_classes() {
        let dir = scratch("label-range");
        let x = three_images(&dir);
        let y = write(&dir, "y", &idx_bytes(0x08, &[3], &[1, 12, 3]));
        let expected = format!("label 12 of example 1 in `{}` is outside 0..10", y.display());
        assert_eq!(load_err(&x, &y), expected);
        let negative = write(&dir, "neg", &idx_bytes(0x09, &[3], &[1, 2, 0xff]));
        let expected = format!("label -1 of example 2 in `{}` is outside 0..10", negative.display());
        assert_eq!(load_err(&x, &negative), expected);
        let fraction: Vec<u8> = [1.0f32, 1.5, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let fraction = write(&dir, "frac", &idx_bytes(0x0d, &[3], &fraction));
        let expected = format!("label 1.5 of example 1 in `{}` is not a whole number", fraction.display());
        assert_eq!(load_err(&x, &fraction), expected);
        let nan: Vec<u8> = [f32::NAN, 1.0, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let nan = write(&dir, "nan", &idx_bytes(0x0d, &[3], &nan));
        assert!(load_err(&x, &nan).contains("label NaN of example 0"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn images_need_a_count_and_a_shape() {
        let dir = scratch("images-rank");
        let x = write(&dir, "x", &idx_bytes(0x08, &[4], &[1, 2, 3, 4]));
        let y = write(&dir, "y", &idx_bytes(0x08, &[4], &[1, 2, 3, 4]));
        let e = load_err(&x, &y);
        assert!(
            e.contains(&format!("`{}` should hold examples of at least 2 dimensions", x.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn empty_files_are_refused() {
        let dir = scratch("empty");
        let x = write(&dir, "x", &idx_bytes(0x08, &[0, 2, 2], &[]));
        let y = write(&dir, "y", &idx_bytes(0x08, &[0], &[]));
        assert_eq!(load_err(&x, &y), format!("`{}` holds no examples", x.display()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn idx_reader_errors_name_the_file() {
        let dir = scratch("idx");
        let x = three_images(&dir);
        let zip = write(&dir, "y.zip", b"PK\x03\x04");
        let e = load_err(&x, &zip);
        assert!(
            e.starts_with(&format!("`{}` is not an IDX file", zip.display())) && e.contains("magic"),
            "{e}"
        );
        let short = write(&dir, "short", &idx_bytes(0x08, &[3, 2, 2], &[1, 2, 3]));
        let e = load_err(&short, &zip);
        assert!(e.contains(&short.display().to_string()), "{e}");
        assert!(e.contains("need 12 bytes of data, but the file has 3"), "{e}");
        let missing = dir.join("absent");
        let e = load_err(&x, &missing);
        assert!(e.starts_with(&format!("cannot read `{}`", missing.display())), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn finds_plain_gzip_and_t10k_names() {
        let dir = scratch("find");
        for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"] {
            write(&dir, name, b"");
        }
        write(&dir, "t10k-images-idx3-ubyte", b"");
        write(&dir, "t10k-labels-idx1-ubyte.gz", b"");
        let (x, y) = find_split(&dir, "train").unwrap();
        assert_eq!(x, dir.join("train-images-idx3-ubyte.gz"));
        assert_eq!(y, dir.join("train-labels-idx1-ubyte"), "the unpacked file is preferred");
        let (x, y) = find_split(&dir, "test").unwrap();
        assert_eq!((x, y), (dir.join("t10k-images-idx3-ubyte"), dir.join("t10k-labels-idx1-ubyte.gz")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_files_list_what_was_looked_for() {
        let dir = scratch("find-missing");
        write(&dir, "test-images-idx3-ubyte.gz", b"");
        std::fs::create_dir(dir.join("test-labels-idx1-ubyte")).unwrap();
        let expected = format!(
            "no test labels in `{}`: looked for test-labels-idx1-ubyte, test-labels-idx1-ubyte.gz, \
             t10k-labels-idx1-ubyte, t10k-labels-idx1-ubyte.gz",
            dir.display()
        );
        assert_eq!(find_split(&dir, "test").unwrap_err().to_string(), expected);
        let e = find_split(&dir, "train").unwrap_err().to_string();
        assert!(e.starts_with("no train images in") && e.ends_with("train-images-idx3-ubyte.gz"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_directory_must_exist() {
        let dir = scratch("find-nodir");
        let file = write(&dir, "file", b"");
        for path in [dir.join("absent"), file] {
            let e = find_split(&path, "train").unwrap_err().to_string();
            assert!(e.starts_with(&format!("cannot read `{}`: ", path.display())), "{e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_embedded_digits_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits");
        for (split, count) in [("train", 2000), ("test", 500)] {
            let (x, y) = find_split(&dir, split).unwrap();
            let l = load(&x, &y, 10).unwrap();
            assert_eq!((l.count, l.example_dims.as_slice(), l.pixels), (count, &[28, 28][..], true));
            assert_eq!(l.values.len(), count * 784);
            assert!(l.values.iter().all(|v| (0.0..=255.0).contains(v)));
            assert_eq!(l.values.iter().copied().fold(0.0, f32::max), 255.0);
            let mut seen = [0usize; 10];
            l.labels.iter().for_each(|&c| seen[c as usize] += 1);
            assert!(seen.iter().all(|&n| n > 0), "{split}: every digit occurs: {seen:?}");
        }
    }
}
