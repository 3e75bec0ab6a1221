//! `nnc generate`: sample text from a trained character model, one character at a time.
//!
//! The network reads a fixed number of steps T and was trained on windows that each start
//! from a zero state, so it is run the same way: on the last (up to) T characters placed
//! from position 0, with the next character drawn from the scores at the last filled
//! position. Positions after it hold no character; a recurrent layer reads forwards, so
//! they do not change the scores before them. While the text is shorter than T the
//! window grows; after that it slides on by one character per step.

use super::{EXIT_USAGE, Failure, Ui, finish, out, usage};
use clap::builder::NonEmptyStringValueParser;
use nnc_compiler::ir::graph::InputEncoding;
use nnc_compiler::ir::shape::Shape;
use nnc_runtime::data::text::Vocabulary;
use nnc_runtime::exec::Executable;
use nnc_runtime::init::Rng;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file: a character model, reading `seq[T] of onehot(V)` or
    /// `seq[T] of tokens(V)` and scoring every step's next character (`[T, V]`).
    file: PathBuf,
    /// Trained parameters: a checkpoint written by `nnc train`, whose `nnc.vocabulary`
    /// metadata maps the model's ids to characters.
    #[arg(long)]
    weights: PathBuf,
    /// The text to continue; printed first. Its last T characters start the sampling.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    prime: String,
    /// Characters to generate after the prime.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// Softmax temperature: below 1 the likelier characters are favoured more, above 1
    /// less; 0 always takes the likeliest.
    #[arg(long, default_value_t = 1.0, value_parser = temperature, allow_negative_numbers = true)]
    temperature: f64,
    /// Seed of the sampling: the same seed gives the same text.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The network (default: the first in the file).
    #[arg(long)]
    network: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn temperature(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(_) => Err("the temperature is a finite number, 0 or more".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(ui: &Ui, a: &Args) -> u8 {
    finish(generate(ui, a).map(|()| 0))
}

/// How a character model reads and scores characters.
struct CharModel {
    steps: usize,
    encoding: InputEncoding,
    /// Classes of the input (one-hot width or token count) and of the output.
    inputs: usize,
    outputs: usize,
}

fn char_model(graph: &nnc_compiler::ir::graph::Graph) -> Result<CharModel, String> {
    let prep = super::dataset::preparation(graph, None, None)?;
    let (steps, inputs) = match (prep.shape, prep.encoding) {
        (Shape::Seq { steps, features }, InputEncoding::OneHot) => (steps, features),
        (Shape::Tokens { steps, vocab }, InputEncoding::Tokens) => (steps, vocab),
        _ => {
            return Err(format!(
                "`{}` reads {}, not characters; `nnc generate` needs a character model \
                 (input `seq[T] of onehot(V)` or `seq[T] of tokens(V)`)",
                graph.name, prep.shape
            ));
        }
    };
    let output = graph.node(graph.output).shape;
    let Shape::Seq { steps: out_steps, features: outputs } = output else {
        return Err(format!(
            "`{}` outputs {output}; `nnc generate` needs scores for the next character at every step ([{steps}, V])",
            graph.name
        ));
    };
    if out_steps != steps {
        return Err(format!(
            "`{}` reads {steps} steps but outputs {output}; `nnc generate` needs scores for every step",
            graph.name
        ));
    }
    Ok(CharModel {
        steps: steps as usize,
        encoding: prep.encoding,
        inputs: inputs as usize,
        outputs: outputs as usize,
    })
}

fn generate(ui: &Ui, a: &Args) -> Result<(), Failure> {
    let model = ui.compile(&a.file).map_err(|code| (code, "the model has errors".to_string()))?;
    let graph = super::network(&model, a.network.as_deref(), &a.file)
        .ok_or((EXIT_USAGE, "no network to generate with".to_string()))?;
    let m = char_model(graph).map_err(usage)?;
    let options = ui.options(super::threads(a.threads));
    let mut exe = Executable::build(graph, 1, &options).map_err(usage)?;
    let meta = super::eval::load_weights(&mut exe, &a.weights, &graph.name)?;
    let stored = meta.and_then(|m| m.vocabulary).ok_or_else(|| {
        usage(format!(
            "`{}` has no `nnc.vocabulary` metadata, so the model's ids cannot be read as characters; \
             use a checkpoint written by `nnc train`",
            a.weights.display()
        ))
    })?;
    let vocab = Vocabulary::from_string(&stored).map_err(usage)?;
    if vocab.is_empty() || vocab.len() > m.inputs.min(m.outputs) {
        return Err(usage(format!(
            "the vocabulary of `{}` has {} characters; `{}` reads {} and scores {} classes",
            a.weights.display(),
            vocab.len(),
            graph.name,
            m.inputs,
            m.outputs
        )));
    }
    let mut ids = a
        .prime
        .chars()
        .map(|c| {
            vocab.index(c).map(|i| i as u32).ok_or_else(|| {
                usage(format!(
                    "the prime's character {c:?} is not in the vocabulary of `{}` ({} characters)",
                    a.weights.display(),
                    vocab.len()
                ))
            })
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let probabilities = super::predict::ends_in_softmax(&exe);
    let input = exe.graph().inputs[0];
    let mut rng = Rng::new(a.seed);
    out(&a.prime);
    for _ in 0..a.length {
        let window = &ids[ids.len().saturating_sub(m.steps)..];
        let x = exe.tensor_mut(input);
        x.fill(0.0);
        match m.encoding {
            InputEncoding::OneHot => {
                for (step, &id) in window.iter().enumerate() {
                    x[step * m.inputs + id as usize] = 1.0;
                }
            }
            // Token ids travel as the bits of the f32 values, as training feeds them.
            _ => {
                for (v, &id) in x.iter_mut().zip(window) {
                    *v = f32::from_bits(id);
                }
            }
        }
        exe.run().map_err(usage)?;
        let last = (window.len() - 1) * m.outputs;
        // Only the vocabulary's characters can come next: the other classes never
        // appeared as targets.
        let scores = &exe.output()[last..last + vocab.len()];
        let logits: Vec<f64> = scores
            .iter()
            .map(|&s| if probabilities { (s.max(f32::MIN_POSITIVE) as f64).ln() } else { s as f64 })
            .collect();
        let next = sample(&logits, a.temperature, &mut rng);
        ids.push(next as u32);
        out(vocab.char(next).encode_utf8(&mut [0; 4]));
    }
    out("\n");
    Ok(())
}

/// An index drawn with probability softmax(logits / temperature); the largest logit's
/// at temperature 0.
fn sample(logits: &[f64], temperature: f64, rng: &mut Rng) -> usize {
    let best = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
    if temperature == 0.0 {
        return best;
    }
    let weights: Vec<f64> = logits.iter().map(|l| ((l - logits[best]) / temperature).exp()).collect();
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    // Rounding (or scores that are not finite) left nothing drawn.
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_temperature() {
        let logits = [0.0, 1.0, 3.0, 2.0];
        let mut rng = Rng::new(7);
        assert!((0..100).all(|_| sample(&logits, 0.0, &mut rng) == 2));
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[sample(&logits, 1.0, &mut rng)] += 1;
        }
        // softmax([0, 1, 3, 2]) ≈ [0.032, 0.087, 0.644, 0.237].
        let expected = [0.032, 0.087, 0.644, 0.237];
        for (c, e) in counts.iter().zip(expected) {
            assert!((*c as f64 / 20_000.0 - e).abs() < 0.015, "{counts:?}");
        }
        // A low temperature sharpens the distribution towards the best.
        let sharp = (0..1000).filter(|_| sample(&logits, 0.1, &mut rng) == 2).count();
        assert!(sharp > 990, "{sharp}");
        assert_eq!(sample(&[f64::NAN, f64::NAN], 1.0, &mut rng), 0);
    }
}
