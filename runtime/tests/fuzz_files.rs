//! No file makes a loader panic, abort or hang: checkpoints (safetensors), IDX images and
//! labels (gzipped or not), raw f32 inputs and text, each mutated byte by byte — flipped
//! bits, overwritten runs, truncations, insertions, header fields set to extremes — end in
//! a value or in an error. Every loader file of the regression corpus,
//! `tests/fuzz-corpus/`, is loaded too.
//!
//! The number of cases per property is `NNC_FUZZ_CASES` (default 48, as in CI); a
//! developer can run it for an hour with `NNC_FUZZ_CASES=200000 cargo test -p nnc-runtime
//! --test fuzz_files`. Every input that fails goes into the corpus (proptest prints the
//! mutations; write the mutated file out), so that it stays fixed.

use nnc_runtime::checkpoint;
use nnc_runtime::data::{idx, input, text};
use nnc_runtime::exec::{Executable, Options};
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases() -> u32 {
    std::env::var("NNC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

/// A fresh path in the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn with(name: &str, bytes: &[u8]) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("nnc-fuzz-{}-{n}-{name}", std::process::id()));
        std::fs::File::create(&path).and_then(|mut f| f.write_all(bytes)).expect("temporary file");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One change to a file's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A little- or big-endian integer field set to an extreme (sizes, offsets, counts).
    Extreme {
        at: usize,
        width: usize,
        value: u64,
        big: bool,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Positions are drawn over a large range and wrapped to the file; most land in the
    // first bytes, where the headers are.
    let at = prop_oneof![3 => 0usize..64, 1 => 0usize..1 << 20];
    let extreme = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(1 << 31),
        Just(1 << 40),
        any::<u64>()
    ];
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        at.clone().prop_map(|at| Mutation::Truncate { at }),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at, prop_oneof![Just(1usize), Just(2), Just(4), Just(8)], extreme, any::<bool>())
            .prop_map(|(at, width, value, big)| Mutation::Extreme { at, width, value, big }),
    ]
}

fn apply(original: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = original.to_vec();
    for m in mutations {
        let len = b.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if let Some(x) = b.get_mut(at % len) {
                    *x ^= 1 << bit;
                }
            }
            Mutation::Overwrite { at, bytes } => {
                for (i, x) in bytes.iter().enumerate() {
                    if let Some(y) = b.get_mut(at % len + i) {
                        *y = *x;
                    }
                }
            }
            Mutation::Truncate { at } => b.truncate(at % len),
            Mutation::Insert { at, bytes } => {
                let at = (at % len).min(b.len());
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Extreme { at, width, value, big } => {
                let bytes = if *big { value.to_be_bytes() } else { value.to_le_bytes() };
                let field = if *big { &bytes[8 - width..] } else { &bytes[..*width] };
                for (i, x) in field.iter().enumerate() {
                    if let Some(y) = b.get_mut(at % len + i) {
                        *y = *x;
                    }
                }
            }
        }
    }
    b
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
        .expect("the digits are gzipped");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// LeNet-5 compiled for inference, and a checkpoint of its initial weights.
fn lenet5() -> (Executable, Vec<u8>) {
    let model = nnc_compiler::compile_file(&repository().join("examples/lenet5.net")).expect("compiles");
    let options = Options { threads: 1, guard: false, verify: false, fma: true, ..Default::default() };
    let mut exe = Executable::build(&model.networks[0], 1, &options).expect("builds");
    exe.init_params(1);
    let file = Scratch::with("lenet5.safetensors", &[]);
    checkpoint::save(&exe, &file.0, Default::default()).expect("saves");
    let bytes = std::fs::read(&file.0).expect("reads back");
    (exe, bytes)
}

/// Loads a checkpoint: any outcome but a panic.
fn load_checkpoint(exe: &mut Executable, bytes: &[u8]) {
    let file = Scratch::with("w.safetensors", bytes);
    let _ = checkpoint::load(exe, &file.0);
}

/// Reads an IDX file both as data and as predict's input.
fn load_idx(bytes: &[u8], name: &str) {
    let file = Scratch::with(name, bytes);
    if let Ok(data) = idx::read(&file.0) {
        assert_eq!(data.values.len(), data.dims.iter().product::<usize>(), "values match the dimensions");
    }
    let _ = idx::parse(bytes);
    let spec = input::InputSpec {
        shape: nnc_compiler::ir::shape::Shape::Image { c: 1, h: 28, w: 28 },
        encoding: nnc_compiler::ir::graph::InputEncoding::Dense,
        mean: vec![0.1307],
        std: vec![0.3081],
    };
    let _ = input::read(&file.0, &spec, None);
}

fn load_text(bytes: &[u8]) {
    let file = Scratch::with("t.txt", bytes);
    if let Ok(t) = text::read_text(&file.0) {
        let vocab = text::Vocabulary::from_text(&t);
        let ids = text::encode(&t, &vocab).expect("a text's own vocabulary encodes it");
        assert_eq!(ids.len(), t.chars().count());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_checkpoints(ms in prop::collection::vec(mutation(), 1..6)) {
        // One compiled network per thread: compiling is most of a case's time.
        thread_local!(static NET: std::cell::RefCell<(Executable, Vec<u8>)> = std::cell::RefCell::new(lenet5()));
        NET.with(|net| {
            let (exe, original) = &mut *net.borrow_mut();
            load_checkpoint(exe, &apply(original, &ms));
        });
    }

    #[test]
    fn mutated_idx_files(ms in prop::collection::vec(mutation(), 1..6), gz in any::<bool>(), labels in any::<bool>()) {
        let name = if labels { "test-labels-idx1-ubyte.gz" } else { "test-images-idx3-ubyte.gz" };
        let raw = gunzip(&std::fs::read(repository().join("data/digits").join(name)).expect("digits"));
        // The first 40 images (or labels) keep each case small.
        let keep = if labels { 8 + 40 } else { 16 + 40 * 784 };
        let mut small = raw[..keep].to_vec();
        small[7] = 40;
        let mutated = apply(&small, &ms);
        let bytes = if gz { gzip(&mutated) } else { mutated };
        load_idx(&bytes, if gz { "x-idx3-ubyte.gz" } else { "x-idx3-ubyte" });
    }

    #[test]
    fn mutated_gzip_streams(ms in prop::collection::vec(mutation(), 1..6)) {
        let raw = gunzip(&std::fs::read(repository().join("data/digits/test-labels-idx1-ubyte.gz")).expect("digits"));
        load_idx(&apply(&gzip(&raw), &ms), "y-idx1-ubyte.gz");
    }

    #[test]
    fn mutated_text(ms in prop::collection::vec(mutation(), 1..6)) {
        let original = b"It was the best of times, it was the worst of times.\n\xc3\xa9t\xc3\xa9 \xe2\x80\x94 fin.\n";
        load_text(&apply(original, &ms));
    }
}

/// Every file of the regression corpus, through every loader its name fits.
#[test]
fn corpus() {
    let dir = repository().join("tests/fuzz-corpus");
    let (mut exe, _) = lenet5();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz-corpus exists") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let bytes = std::fs::read(&path).expect("corpus files are readable");
        if name.ends_with(".safetensors") {
            load_checkpoint(&mut exe, &bytes);
        } else if name.contains("idx") {
            load_idx(&bytes, &name);
        } else if name.ends_with(".txt") {
            load_text(&bytes);
        } else {
            continue;
        }
        seen += 1;
    }
    assert!(seen > 0, "the corpus is empty");
}
