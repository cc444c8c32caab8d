#!/usr/bin/env bash
# Create ./.venv (if missing) and install uu with its notebook and test extras, CPU torch.
# Usage: bash scripts/setup.sh        (idempotent; re-running only refreshes the project install)
# Installer: uv when it can be had (on PATH, or fetched into .venv/.uv with pip: seconds instead of
# minutes), else plain pip. UU_INSTALLER=pip forces pip; UU_UV_SPEC picks the uv that gets fetched.
# uv does not read pip's configuration, so the index URL, extra index URLs, find-links and constraint
# that pip is configured with (pip.conf, PIP_* variables) are handed to uv as UV_* variables (any UV_*
# already set wins). If uv fails for any reason, pip does the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${UU_TORCH_SPEC:-torch==2.13.0}   # CPU build shipped on these machines' disk
UV_SPEC=${UU_UV_SPEC:-uv>=0.5,<1}
INSTALLER=${UU_INSTALLER:-auto}
# torch in the same resolve as the project, pinned, so nothing pulls a multi-GB CUDA build
REQS=("$TORCH_SPEC" -e ".[notebooks,dev]")
t0=$(date +%s)

find_uv() {  # prints a usable uv, or fails
  local uv
  for uv in "$(command -v uv || true)" .venv/.uv/bin/uv; do
    if [ -n "$uv" ] && [ -x "$uv" ] && "$uv" --version >/dev/null 2>&1; then echo "$uv"; return 0; fi
  done
  return 1
}

pip_config_to_uv() {  # export pip's index settings as uv's (pip.conf and PIP_* variables)
  local lines
  lines=$("$PY" -m pip config list 2>/dev/null) || return 0
  eval "$(PIP_CONFIG_LINES="$lines" "$PY" - <<'EOF'
import ast, os, shlex
vals = {}
for line in os.environ["PIP_CONFIG_LINES"].splitlines():
    key, sep, value = line.partition("=")
    if not sep:
        continue
    scope, _, name = key.rpartition(".")
    try:
        value = ast.literal_eval(value)
    except Exception:
        continue
    rank = {":env:": 3, "install": 2, "global": 1}.get(scope, 0)   # pip's precedence
    if rank and rank >= vals.get(name, (0, ""))[0]:
        vals[name] = (rank, value)
uv = {"index-url": "UV_INDEX_URL", "extra-index-url": "UV_EXTRA_INDEX_URL",
      "find-links": "UV_FIND_LINKS", "constraint": "UV_CONSTRAINT"}
for name, var in uv.items():
    if name in vals and var not in os.environ:
        v = " ".join(vals[name][1].split())
        if var == "UV_FIND_LINKS":   # uv wants commas here, pip takes spaces
            v = ",".join(v.split())
        print(f"export {var}={shlex.quote(v)}")
EOF
)"
}

install_with_uv() {
  local uv
  if ! uv=$(find_uv); then
    echo "[setup] fetching $UV_SPEC into .venv/.uv"
    mkdir -p .venv
    "$PY" -m pip install -q --disable-pip-version-check --no-compile --target .venv/.uv "$UV_SPEC" \
      >/dev/null 2>&1 || return 1
    uv=$(find_uv) || return 1
  fi
  echo "[setup] installing with $("$uv" --version)"
  pip_config_to_uv
  export UV_PYTHON_DOWNLOADS=never   # never fetch an interpreter: use $PY
  if [ ! -x .venv/bin/python ]; then
    "$uv" venv -q --seed --allow-existing --python "$(command -v "$PY")" .venv || return 1
  fi
  "$uv" pip install -q --python .venv/bin/python "${REQS[@]}"
}

install_with_pip() {
  echo "[setup] installing with pip"
  if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
  if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then .venv/bin/python -m ensurepip -q; fi
  # editable installs of a pyproject-only project need pip >= 21.3; upgrade only an older pip
  if ! .venv/bin/python -c "import pip, sys; sys.exit(tuple(map(int, pip.__version__.split('.')[:2])) < (21, 3))"; then
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  .venv/bin/python -m pip install -q "${REQS[@]}"
}

if [ ! -x .venv/bin/python ]; then echo "[setup] creating .venv with $($PY --version)"; fi
if [ "$INSTALLER" = pip ] || ! install_with_uv; then
  [ "$INSTALLER" = pip ] || echo "[setup] uv unavailable or failed; falling back to pip"
  install_with_pip
fi
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null

# uv installs without bytecode; compiling all of site-packages takes a minute on 2 cores, so write
# .pyc only for what the workbook and the tests import (the rest compiles on first import, or each time
# under PYTHONDONTWRITEBYTECODE). Two processes, one per core; a failed import here is not an error.
warm='
import importlib, pkgutil, sys
for name in sys.argv[1:]:
    if name == "uu":
        try:
            import uu
            names = ["uu"] + [m.name for m in pkgutil.walk_packages(uu.__path__, "uu.", lambda n: None)]
        except BaseException:
            names = []
    else:
        names = [name]
    for n in names:
        try:
            importlib.import_module(n)
        except BaseException:
            pass
'
stamp=.venv/.uu-bytecode   # done once per install of pyproject.toml's dependencies
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  export MPLBACKEND=Agg
  PYTHONDONTWRITEBYTECODE= .venv/bin/python -c "$warm" torch monai uu >/dev/null 2>&1 &
  PYTHONDONTWRITEBYTECODE= .venv/bin/python -c "$warm" papermill nbformat nbclient jupyter_client \
    ipykernel.kernelapp ipykernel.ipkernel IPython matplotlib.pyplot pandas scipy.ndimage scipy.stats \
    nibabel h5py yaml tqdm pytest nbval >/dev/null 2>&1 &
  wait
  touch "$stamp"
fi
.venv/bin/python -c "import uu, uu.data, torch; print('[setup] uu', uu.__version__, 'from', uu.__path__[0] + ', torch', torch.__version__)"
echo "[setup] done in $(( $(date +%s) - t0 )) s"
