//! Deterministic parameter initialisation. Each tensor draws from its own stream, seeded
//! from the run's seed and the tensor's name, so a tensor's values do not depend on how
//! many tensors come before it.

use nnc_compiler::ir::init::Init;
use nnc_compiler::ir::ops::{Layout, ParamInfo};

/// SplitMix64: small, fast, and good enough for initial weights and shuffles.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A stream for one named purpose (a tensor, a data shuffle) under `seed`.
    pub fn stream(seed: u64, name: &str) -> Rng {
        // FNV-1a of the name, mixed with the seed.
        let h =
            name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let mut r = Rng(seed ^ h);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Fan-in and fan-out of a weight of PyTorch shape `dims`, as PyTorch computes them.
pub fn fans(dims: &[usize]) -> (f64, f64) {
    match dims {
        [] => (1.0, 1.0),
        [n] => (*n as f64, *n as f64),
        [out, inp, rest @ ..] => {
            let field: usize = rest.iter().product();
            ((inp * field) as f64, (out * field) as f64)
        }
    }
}

/// Values for a parameter, in PyTorch's layout.
pub fn values(init: Init, dims: &[usize], rng: &mut Rng) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let (fan_in, fan_out) = fans(dims);
    let mut draw = |f: &mut dyn FnMut(&mut Rng) -> f64| (0..n).map(|_| f(rng) as f32).collect::<Vec<f32>>();
    match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::He => {
            let std = (2.0 / fan_in).sqrt();
            draw(&mut |r| r.normal() * std)
        }
        Init::Lecun => {
            let std = (1.0 / fan_in).sqrt();
            draw(&mut |r| r.normal() * std)
        }
        Init::Xavier => {
            let a = (6.0 / (fan_in + fan_out)).sqrt();
            draw(&mut |r| (2.0 * r.uniform() - 1.0) * a)
        }
        Init::Normal { std } => draw(&mut |r| r.normal() * std),
        Init::Uniform { a } => draw(&mut |r| (2.0 * r.uniform() - 1.0) * a),
    }
}

/// A parameter's PyTorch shape as a matrix: the first dimension by the rest.
fn as_matrix(info: &ParamInfo) -> (usize, usize) {
    (info.torch_dims[0], info.torch_dims[1..].iter().product())
}

/// Converts PyTorch-layout values to the tensor's internal layout.
pub fn to_internal(info: &ParamInfo, torch: &[f32]) -> Vec<f32> {
    match info.layout {
        Layout::Same => torch.to_vec(),
        Layout::Transposed => {
            let (rows, cols) = as_matrix(info);
            transpose(torch, rows, cols)
        }
    }
}

/// Converts internal-layout values back to PyTorch's layout.
pub fn to_torch(info: &ParamInfo, internal: &[f32]) -> Vec<f32> {
    match info.layout {
        Layout::Same => internal.to_vec(),
        Layout::Transposed => {
            let (rows, cols) = as_matrix(info);
            transpose(internal, cols, rows)
        }
    }
}

/// `[rows, cols]` to `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_of_order_and_reproducible() {
        let a = values(Init::He, &[4, 3, 3, 3], &mut Rng::stream(7, "conv1.weight"));
        let b = values(Init::He, &[4, 3, 3, 3], &mut Rng::stream(7, "conv1.weight"));
        let c = values(Init::He, &[4, 3, 3, 3], &mut Rng::stream(8, "conv1.weight"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn initialisers_have_the_right_spread() {
        let mut rng = Rng::new(1);
        let he = values(Init::He, &[256, 128], &mut rng);
        let var = he.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / he.len() as f64;
        assert!((var - 2.0 / 128.0).abs() < 0.1 * 2.0 / 128.0, "He variance {var}");
        let x = values(Init::Xavier, &[100, 300], &mut rng);
        let bound = (6.0f64 / 400.0).sqrt() as f32;
        assert!(x.iter().all(|v| v.abs() <= bound));
        assert!(x.iter().any(|v| v.abs() > 0.9 * bound));
    }

    #[test]
    fn transposition_round_trips() {
        let info = ParamInfo {
            name: "w".into(),
            torch_dims: vec![2, 3],
            layout: Layout::Transposed,
            trainable: true,
            init: Init::Zeros,
        };
        let t = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let i = to_internal(&info, &t);
        assert_eq!(i, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(to_torch(&info, &i), t);
    }
}
