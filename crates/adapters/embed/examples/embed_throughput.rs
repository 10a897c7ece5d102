//! Local embedding throughput: sentences per second of `LocalEmbedder` on seeded
//! synthetic sentences of 8–25 words, batch 32, as reported in `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p trellis-embed --example embed_throughput -- \
//!     [--model-dir DIR] [--sentences 1024] [--rounds 3] [--dump-sentences FILE]
//! ```
//!
//! It measures two ways of calling the embedder: the whole set in one call (sorted by
//! length inside, then batches of 32) and calls of 32 texts each in arrival order (what
//! a caller that batches by itself gets). The last line of stdout is JSON, for
//! `cargo xtask bench rag`. `--dump-sentences` writes the sentences, one per line, for
//! the Python baseline (`examples/st_throughput.py`) to embed the same texts.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use trellis_embed::{LocalEmbedder, LocalOptions};

const WORDS: &[&str] = &[
    "the",
    "customer",
    "invoice",
    "was",
    "sent",
    "to",
    "our",
    "billing",
    "team",
    "after",
    "a",
    "long",
    "review",
    "of",
    "every",
    "open",
    "ticket",
    "and",
    "support",
    "agents",
    "answered",
    "questions",
    "about",
    "refunds",
    "course",
    "students",
    "learn",
    "how",
    "search",
    "works",
    "in",
    "documents",
    "with",
    "citations",
    "tenant",
    "data",
    "stays",
    "private",
    "while",
    "models",
    "embed",
    "each",
    "chunk",
    "quickly",
    "new",
    "users",
    "sign",
    "up",
    "for",
    "trial",
    "plans",
    "monthly",
    "yearly",
    "payment",
    "failed",
    "because",
    "card",
    "expired",
    "please",
    "update",
    "your",
    "details",
    "before",
    "next",
    "week",
    "lesson",
    "quiz",
    "results",
    "show",
    "progress",
    "across",
    "modules",
    "manager",
    "approved",
    "budget",
    "marketing",
    "campaign",
    "launch",
    "date",
    "moved",
    "friday",
    "product",
    "catalogue",
    "includes",
    "shoes",
    "shirts",
    "jackets",
    "winter",
    "summer",
    "discount",
    "code",
    "applies",
    "only",
    "once",
    "per",
    "order",
    "shipping",
    "takes",
    "three",
    "days",
    "within",
    "europe",
    "delivery",
    "address",
    "changed",
    "yesterday",
    "phone",
    "number",
    "email",
    "password",
    "reset",
    "link",
    "expires",
    "after",
    "one",
    "hour",
    "security",
    "settings",
    "allow",
    "two",
    "factor",
    "login",
    "report",
    "exported",
    "as",
    "pdf",
    "file",
    "shared",
    "folder",
    "contains",
    "contracts",
    "signed",
    "by",
    "partners",
    "assistant",
    "summarised",
    "meeting",
    "notes",
    "action",
    "items",
    "owner",
    "deadline",
    "risk",
    "high",
    "low",
    "priority",
    "bug",
    "fixed",
    "release",
    "version",
    "server",
    "restarted",
    "night",
    "backup",
    "completed",
    "successfully",
    "database",
    "index",
    "rebuilt",
    "faster",
    "queries",
    "than",
    "before",
];

/// A small seeded generator (xorshift64*): the same sentences on every run and platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn sentences(n: usize) -> Vec<String> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    (0..n)
        .map(|_| {
            let len = 8 + rng.below(18);
            let mut words: Vec<String> = (0..len)
                .map(|_| WORDS[rng.below(WORDS.len())].to_owned())
                .collect();
            if let Some(first) = words.first_mut() {
                let mut chars = first.chars();
                if let Some(c) = chars.next() {
                    *first = c.to_uppercase().chain(chars).collect();
                }
            }
            format!("{}.", words.join(" "))
        })
        .collect()
}

struct Args {
    model_dir: PathBuf,
    sentences: usize,
    rounds: usize,
    dump: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model_dir: std::env::var_os("TRELLIS_EMBED_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../.trellis/models/all-minilm-l6-v2")
            }),
        sentences: 1024,
        rounds: 3,
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model-dir" => args.model_dir = PathBuf::from(value()?),
            "--sentences" => args.sentences = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--dump-sentences" => args.dump = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    if args.sentences == 0 || args.rounds == 0 {
        bail!("--sentences and --rounds must be at least 1");
    }
    Ok(args)
}

/// The best of `rounds` timings of `f` (the least disturbed by other work on the machine).
fn best_rate(rounds: usize, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..rounds {
        let started = Instant::now();
        f()?;
        best = best.max(n as f64 / started.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let texts = sentences(args.sentences);
    if let Some(path) = &args.dump {
        std::fs::write(path, texts.join("\n") + "\n")
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    let started = Instant::now();
    let embedder = LocalEmbedder::load_with(
        &args.model_dir,
        LocalOptions {
            batch_size: 32,
            ..LocalOptions::default()
        },
    )?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let tokens: usize = texts
        .iter()
        .map(|t| embedder.count_tokens(t))
        .sum::<Result<usize>>()?;

    // Warm-up: first-touch page faults and thread-pool start-up are not throughput.
    embedder.embed_blocking(&texts[..texts.len().min(64)])?;

    let sorted = best_rate(args.rounds, texts.len(), || {
        embedder.embed_blocking(&texts).map(drop)
    })?;
    let unsorted = best_rate(args.rounds, texts.len(), || {
        for chunk in texts.chunks(32) {
            embedder.embed_blocking(chunk)?;
        }
        Ok(())
    })?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);

    println!("model            {}", args.model_dir.display());
    println!("load             {load_ms:.0} ms");
    println!(
        "sentences        {} of 8-25 words, {:.1} word pieces on average",
        texts.len(),
        tokens as f64 / texts.len() as f64
    );
    println!("threads          {threads}");
    println!("sorted, batch 32 {sorted:.1} sentences/s");
    println!("in order, 32/call {unsorted:.1} sentences/s");
    println!(
        "{}",
        serde_json::json!({
            "bench": "embed_throughput",
            "model": embedder_id(&embedder),
            "sentences": texts.len(),
            "batch": 32,
            "threads": threads,
            "load_ms": load_ms,
            "sentences_per_s": sorted,
            "sentences_per_s_unsorted": unsorted,
        })
    );
    Ok(())
}

fn embedder_id(embedder: &LocalEmbedder) -> String {
    use trellis_rag::Embedder as _;
    embedder.model().id
}
