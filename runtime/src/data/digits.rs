//! The embedded digits: 2,000 training and 500 test examples of MNIST (see
//! `data/digits/README.md`), compiled into the binary so that training LeNet-5 works on
//! a fresh machine with no data at all.

use super::error::DataError;
use super::{idx, labelled};
use flate2::read::GzDecoder;
use std::io::Read;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../../data/digits/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../../data/digits/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../../data/digits/test-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../../data/digits/test-labels-idx1-ubyte.gz");

/// What messages call the embedded set.
pub const NAME: &str = "the embedded digits";

/// The training (`"train"`) or test (`"test"`) split.
pub fn split(which: &str) -> Result<labelled::Labelled, DataError> {
    let (images, labels) =
        if which == "train" { (TRAIN_IMAGES, TRAIN_LABELS) } else { (TEST_IMAGES, TEST_LABELS) };
    let name = |kind: &str| format!("{NAME} ({which} {kind})");
    let parse = |gz: &[u8], kind: &str| -> Result<idx::Idx, DataError> {
        let mut bytes = Vec::new();
        let bad = |reason: String| DataError::Idx(idx::IdxError::Format { path: name(kind), reason });
        GzDecoder::new(gz).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
        idx::parse(&bytes).map_err(bad)
    };
    labelled::pair(parse(images, "images")?, parse(labels, "labels")?, &name("images"), &name("labels"), 10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_splits_load_with_every_class() {
        for (which, count) in [("train", 2000), ("test", 500)] {
            let set = super::split(which).unwrap();
            assert_eq!((set.count, set.example_dims.as_slice()), (count, &[28usize, 28][..]));
            assert!(set.pixels);
            for class in 0..10 {
                assert!(set.labels.contains(&class), "{which} lacks digit {class}");
            }
        }
    }
}
