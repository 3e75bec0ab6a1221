//! The shape plan as a table for people.

use super::{Plan, RowKind};
use crate::support::numbers::{bytes, metric, thousands};
use std::fmt;

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "network {}  ({})", self.network, self.defined_at)?;
        writeln!(f)?;
        let headers = ["layer", "op", "output", "params", "MACs", "line"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                let indent = "  ".repeat(r.depth);
                let (params, macs) = match r.kind {
                    RowKind::Input => (String::new(), String::new()),
                    _ => (thousands(r.params), thousands(r.macs)),
                };
                [format!("{indent}{}", r.name), r.op.clone(), r.output.clone(), params, macs, r.line.clone()]
            })
            .collect();
        let mut width = headers.map(str::len);
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let total_params = thousands(self.totals.params);
        let total_macs = thousands(self.totals.macs);
        width[3] = width[3].max(total_params.len());
        width[4] = width[4].max(total_macs.len());
        let row = |f: &mut fmt::Formatter<'_>, c: [&str; 6]| -> fmt::Result {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {:>w5$}",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3],
                w4 = width[4],
                w5 = width[5]
            );
            writeln!(f, "{}", line.trim_end())
        };
        row(f, headers)?;
        for c in &cells {
            row(f, [&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]])?;
        }
        let rule: usize = width.iter().sum::<usize>() + 10;
        writeln!(f, "{}", "─".repeat(rule))?;
        let layers = format!("{} layers", self.totals.layers);
        row(f, ["total", &layers, "", &total_params, &total_macs, ""])?;
        writeln!(f)?;
        write!(
            f,
            "parameters  {} trainable ({})",
            thousands(self.totals.params),
            bytes(self.totals.params * 4)
        )?;
        if self.totals.buffers > 0 {
            write!(f, ", {} in buffers", thousands(self.totals.buffers))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "compute     {} multiply-accumulates per example ({})",
            thousands(self.totals.macs),
            metric(self.totals.macs)
        )?;
        let m = &self.memory;
        let threads =
            format!("at batch {} on {} thread{}", m.batch, m.threads, if m.threads == 1 { "" } else { "s" });
        match (m.arena_bytes, m.arena_without_reuse_bytes) {
            (Some(arena), Some(without_reuse)) => writeln!(
                f,
                "memory      {threads}: arena {} ({} if no buffers shared), of which parameters {}",
                bytes(arena),
                bytes(without_reuse),
                bytes(m.parameter_bytes)
            )?,
            _ => writeln!(
                f,
                "memory      {threads}: arena overflows 64 bits (too large to plan), of which parameters {}",
                bytes(m.parameter_bytes)
            )?,
        }
        if let Some(t) = &self.train {
            writeln!(f)?;
            writeln!(f, "train {}", t.network)?;
            let loss = match t.loss {
                crate::front::train::Loss::CrossEntropy => "cross_entropy",
                crate::front::train::Loss::MeanSquaredError => "mse",
            };
            writeln!(f, "  loss       {loss}")?;
            writeln!(f, "  optimizer  {}", t.optimizer)?;
            let warmup = if t.warmup > 0 { format!(", {} warm-up epochs", t.warmup) } else { String::new() };
            writeln!(f, "  schedule   {}{warmup}", t.schedule)?;
            writeln!(f, "  batch      {}, {} epochs, seed {}", t.batch, t.epochs, t.seed)?;
            if let Some(c) = t.clip {
                writeln!(f, "  clip       gradient norm {}", crate::front::value::format_float(c))?;
            }
            if !t.augment.is_empty() {
                let a: Vec<String> = t.augment.iter().map(ToString::to_string).collect();
                writeln!(f, "  augment    {}", a.join(", "))?;
            }
            if !t.mean.is_empty() || !t.std.is_empty() {
                let list = |v: &[f64]| {
                    v.iter().map(|x| crate::front::value::format_float(*x)).collect::<Vec<_>>().join(", ")
                };
                writeln!(f, "  normalise  mean [{}], std [{}]", list(&t.mean), list(&t.std))?;
            }
            if let Some(d) = &t.data {
                writeln!(f, "  data       {d}")?;
            }
        }
        Ok(())
    }
}
