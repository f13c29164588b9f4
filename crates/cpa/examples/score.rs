//! Scores the engine on the CPA corpus and writes the report as markdown.
//!
//! `cargo run --release -p cpa --example score -- bench/results/cpa.md [CORPUS_DIR]`
//! Set `CPA_SCORE_VERBOSE=1` to list every clip, `=2` for the wrong ones only;
//! `CPA_SCORE_SUBSET=odd` or `=even` scores half the clips.

#[path = "../tests/support/score.rs"]
mod score;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).cloned();
    let dir = args
        .get(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(score::corpus_dir);
    let labels = match score::load_labels(&dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot read the corpus at {}: {e}", dir.display());
            std::process::exit(2);
        }
    };
    // `CPA_SCORE_SUBSET=odd|even` scores half the corpus (by the clip number), to check a
    // threshold chosen on one half against the other.
    let labels: Vec<_> = match std::env::var("CPA_SCORE_SUBSET").as_deref() {
        Ok(half @ ("odd" | "even")) => labels
            .into_iter()
            .filter(|l| clip_number(&l.file).is_some_and(|n| (n % 2 == 1) == (half == "odd")))
            .collect(),
        _ => labels,
    };
    let verbose = std::env::var("CPA_SCORE_VERBOSE").unwrap_or_default();
    let mut results = Vec::new();
    for l in &labels {
        match score::run_clip(&dir, l) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    for r in &results {
        let got = r.decision.as_ref().map(|d| d.0.as_str()).unwrap_or("-");
        let wrong = got != r.label.label
            || (r.label.beep_onset_s.is_some() && r.beep.is_none())
            || (r.label.beep_onset_s.is_none()
                && r.label.tone.is_none()
                && !r.tone_results.is_empty());
        if verbose == "1" || (verbose == "2" && wrong) {
            let segs: Vec<String> = r
                .segments
                .iter()
                .map(|(a, b)| format!("{:.2}-{:.2}", *a as f64 / 8000.0, *b as f64 / 8000.0))
                .collect();
            println!(
                "{} {} -> {} | end {:?} beep {:?}@{:?} | {} | {}",
                r.label.file,
                r.label.label,
                got,
                r.label.speech_end_s,
                r.label.beep_hz,
                r.label.beep_onset_s,
                r.all.join(" "),
                segs.join(" ")
            );
        }
    }
    let sc = score::score(&results);
    let md = sc.markdown();
    println!("{md}");
    if let Some(path) = out {
        if let Some(parent) = std::path::Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(&path, md) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
}

/// The number in a clip name such as `am_051.wav`.
fn clip_number(file: &str) -> Option<u32> {
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    stem.rsplit('_').next()?.parse().ok()
}
