//! The language reference covers every layer, argument and train setting the compiler
//! knows, so adding a layer without documenting it fails here.

use nnc_compiler::front::layers::kinds;
use nnc_compiler::front::train::SETTINGS;

fn reference() -> String {
    std::fs::read_to_string("docs/language.md").unwrap()
}

/// The text from a layer's `###` heading to the next heading.
fn section<'a>(doc: &'a str, layer: &str) -> Option<&'a str> {
    let start = doc.lines().position(|l| l.starts_with("### ") && l.contains(&format!("`{layer}`")))?;
    let lines: Vec<&str> = doc.lines().collect();
    let from = doc.find(lines[start])?;
    let rest = &doc[from + lines[start].len()..];
    let end = rest.find("\n### ").or_else(|| rest.find("\n## ")).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn every_layer_and_argument_is_documented() {
    let doc = reference();
    for kind in kinds() {
        let text = section(&doc, kind.name).unwrap_or_else(|| panic!("no section for `{}`", kind.name));
        for arg in kind.args {
            // Layers documented together (`avgpool` "as for `maxpool`") may defer their table.
            let deferred = text.replace('\n', " ").contains("Arguments and shape as for `");
            assert!(
                deferred || text.contains(&format!("`{}`", arg.name)),
                "`{}` of `{}` is undocumented",
                arg.name,
                kind.name
            );
        }
    }
}

#[test]
fn every_train_setting_is_documented() {
    let doc = reference();
    let train = &doc[doc.find("## The train section").unwrap()..];
    for (name, _) in SETTINGS {
        assert!(train.contains(&format!("| `{name}` |")), "train setting `{name}` is undocumented");
    }
}

/// The error shown in the reference is the one the compiler prints today.
#[test]
fn the_documented_error_is_current() {
    let doc = reference();
    let snapshot = std::fs::read_to_string(
        "tests/snapshots/diagnostics__bad_models_have_reviewed_diagnostics@add_shape_mismatch.net.snap",
    )
    .unwrap();
    let body = snapshot.splitn(3, "---\n").nth(2).unwrap();
    let message: String = body.lines().take_while(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect();
    assert!(doc.contains(&message), "docs/language.md shows an outdated error:\n{message}");
}

/// The README's tour shows the real LeNet-5 file and the plan `nnc compile` prints for it
/// (on two threads, as on the two-core machine the project is built and tested on, whose
/// CPU has AVX2: memory figures follow the back end's geometry).
#[cfg(target_arch = "x86_64")]
const README_GEOMETRY: nnc_compiler::backend::Geometry = nnc_compiler::backend::x86::GEOMETRY;
#[cfg(not(target_arch = "x86_64"))]
const README_GEOMETRY: nnc_compiler::backend::Geometry = nnc_compiler::backend::cranelift::GEOMETRY;

#[test]
fn the_readme_tour_is_current() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let example = std::fs::read_to_string("examples/lenet5.net").unwrap();
    assert!(readme.contains(&example), "README shows an outdated examples/lenet5.net");
    let model = nnc_compiler::compile_file(std::path::Path::new("examples/lenet5.net")).unwrap();
    let g = &model.networks[0];
    let plan = nnc_compiler::report::plan::Plan::new(
        g,
        &model.sources,
        1,
        2,
        README_GEOMETRY,
        model.train_config(&g.name).cloned(),
    );
    assert!(readme.contains(&plan.to_string()), "README shows an outdated plan:\n{plan}");
}

/// The architecture page names every module of the stage folders (and the driver), so
/// that a new stage or a moved one cannot leave it behind.
#[test]
fn the_architecture_page_names_every_stage_module() {
    let doc = std::fs::read_to_string("docs/architecture.md").unwrap();
    let mut missing = Vec::new();
    for dir in ["front", "ir", "passes", "backend", "report", "support"] {
        assert!(doc.contains(&format!("compiler/src/{dir}/")), "`compiler/src/{dir}/` is not named");
        for entry in std::fs::read_dir(format!("compiler/src/{dir}")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name == "mod.rs" {
                continue;
            }
            let shown = if name.ends_with(".rs") { name.clone() } else { format!("{name}/") };
            if !doc.contains(&shown) {
                missing.push(format!("{dir}/{shown}"));
            }
        }
    }
    for file in ["pipeline.rs", "lib.rs"] {
        if !doc.contains(file) {
            missing.push(file.to_string());
        }
    }
    assert!(missing.is_empty(), "docs/architecture.md does not name: {missing:?}");
}
