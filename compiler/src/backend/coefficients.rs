//! The constants of the transcendental functions, shared by every back end so that they
//! compute the same values: Cranelift's `cranelift/math.rs` and the x86 tiles'
//! `x86/math.rs` evaluate the same polynomials in the same order (the x86 tests check
//! them bit for bit), so a coefficient lives here once.

/// Largest and smallest arguments `exp` handles without overflowing the exponent.
pub const EXP_HI: f32 = 88.3;
pub const EXP_LO: f32 = -87.3;

/// eʳ − 1 − r = r² · P(r) on |r| ≤ ln2/2.
pub const EXP: [f32; 6] =
    [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1];
/// ln(1 + f) = f − f²/2 + f³ · P(f) on [√½ − 1, √2 − 1].
pub const LOG: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_5e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
/// tanh x = x · P(x²) / Q(x²) on |x| ≤ 9.
pub const TANH_P: [f32; 5] = [1.335_251e-8, 2.060_763_3e-5, 3.495_505_8e-3, 1.338_095_8e-1, 1.0];
pub const TANH_Q: [f32; 5] = [7.775_705_6e-7, 3.285_496e-4, 2.587_667_5e-2, 4.671_427_3e-1, 1.0];
/// erf x / x as a series in x², for |x| < 1.
pub const ERF_SERIES: [f32; 11] = [
    1.480_719_3e-8,
    -1.636_584_5e-7,
    1.646_211_4e-6,
    -1.492_565e-5,
    1.205_533_3e-4,
    -8.548_327e-4,
    5.223_977_6e-3,
    -2.686_617e-2,
    0.112_837_92,
    -0.376_126_4,
    std::f32::consts::FRAC_2_SQRT_PI,
];
/// ln(erfc x / t) + x² in t = 1 / (1 + x/2) (*Numerical Recipes*' `erfcc`), for x ≥ 1.
pub const ERFC: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];
