//! The Python the black-box tests drive real peers with: the official `openai` SDK, to
//! prove the OpenAI-compatible API works with it unchanged, and `schemathesis`, which
//! derives requests for every operation from the OpenAPI document and checks that none
//! gets a server error. A virtual environment in the git-ignored `.trellis/sdk-venv/`
//! with both from PyPI, made once and reused. `cargo xtask test` hands its interpreter
//! to the tests as `TRELLIS_SDK_PYTHON`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::sys;

/// What pip installs: a 1.x-or-later SDK (`stream_options` arrived in 1.26), and a
/// schemathesis whose command line is the 4.x one the tests call.
const REQUIREMENTS: [&str; 2] = ["openai>=1.40", "schemathesis>=4.1,<5"];

/// The variable the tests read the interpreter from.
pub const PYTHON_VAR: &str = "TRELLIS_SDK_PYTHON";

const NO_PYTHON: &str = "cannot provision the Python environment for the SDK and spec tests: \
`python3` was not found. The black-box suite checks the OpenAI-compatible API with the \
official `openai` Python package and the OpenAPI document with `schemathesis`, so it needs \
Python 3 with the venv module and pip (on Debian/Ubuntu: \
`apt-get install python3 python3-venv python3-pip`); alternatively set TRELLIS_SDK_PYTHON \
to a Python interpreter that already has both packages installed.";

const NO_VENV: &str = "cannot provision the Python environment for the SDK and spec tests: \
`python3 -m venv` failed (see its output above). The black-box suite checks the \
OpenAI-compatible API with the official `openai` Python package and the OpenAPI document \
with `schemathesis`, installed into .trellis/sdk-venv; on Debian/Ubuntu the venv module \
is packaged separately (`apt-get install python3-venv`). Alternatively set \
TRELLIS_SDK_PYTHON to a Python interpreter that already has both packages installed.";

/// `<root>/.trellis/sdk-venv`.
fn venv_dir(root: &Path) -> PathBuf {
    root.join(".trellis").join("sdk-venv")
}

/// Whether `python` runs and can import both packages.
fn has_sdk(python: &Path) -> bool {
    sys::succeeds(Command::new(python).args(["-c", "import openai, schemathesis"]))
}

/// The interpreter to run the SDK tests with: `TRELLIS_SDK_PYTHON` if set, else the
/// venv's, creating the venv and installing the SDK when needed (idempotent).
pub fn ensure(root: &Path) -> Result<PathBuf> {
    if let Some(python) = sys::env_nonempty(PYTHON_VAR) {
        return Ok(PathBuf::from(python));
    }
    let dir = venv_dir(root);
    let python = dir.join("bin").join("python");
    if has_sdk(&python) {
        return Ok(python);
    }
    if !sys::is_executable(&python) {
        // A half-made venv (interrupted, or its base Python is gone) is made anew.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("could not remove the broken {}", dir.display()))?;
        }
        let Some(python3) = sys::find_program("python3") else {
            bail!("{NO_PYTHON}");
        };
        say!(
            "creating the OpenAI SDK test environment in {}",
            dir.display()
        );
        let mut venv = Command::new(python3);
        venv.arg("-m").arg("venv").arg(&dir);
        if let Err(e) = sys::run_captured(&mut venv) {
            let _ = std::fs::remove_dir_all(&dir);
            bail!("{e:#}\n\n{NO_VENV}");
        }
    }
    let wanted = REQUIREMENTS.join("`, `");
    say!("installing `{wanted}` from PyPI into {}", dir.display());
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(REQUIREMENTS);
    sys::run_captured(&mut pip).with_context(|| {
        format!(
            "could not install `{wanted}` into {} (is PyPI reachable?); alternatively \
             set {PYTHON_VAR} to a Python interpreter that has the `openai` and \
             `schemathesis` packages",
            dir.display()
        )
    })?;
    if !has_sdk(&python) {
        bail!(
            "`{wanted}` was installed into {} but `import openai, schemathesis` still fails",
            dir.display()
        );
    }
    Ok(python)
}
