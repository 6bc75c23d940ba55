#!/usr/bin/env bash
# One command for the whole workbook.
#
#   ./run_all.sh                      create the environment if absent, then run every notebook (profile: quick)
#   ./run_all.sh --tests              same environment, run the test suite
#   ./run_all.sh --profile smoke      pick a profile: smoke | quick | paper (configs/<profile>.yaml)
#   ./run_all.sh --only 00_data       run one notebook (name with or without .ipynb)
#   ./run_all.sh --set prior.kimg=20  override any (nested) config key for this run
#   ./run_all.sh -p seed 1            papermill-style override of a top-level key
#   ./run_all.sh --data-dir DIR       where the raw datasets are (same as SROOD_DATA_DIR=DIR)
#   ./run_all.sh --download           fetch missing datasets from their official sources (needs internet)
#
# Results land in results/<profile>/: executed notebooks, their HTML, CSV tables, PNG figures and the resolved
# config they ran with. A failing notebook stops the run with a non-zero exit naming the notebook and the cell.
set -euo pipefail
cd "$(dirname "$0")"

profile=quick
only=""
run_tests=0
sets=()
params=()
pytest_args=()

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --only) only="${2:?--only needs a notebook name}"; shift 2 ;;
    --tests) run_tests=1; shift ;;
    --set) sets+=("${2:?--set needs key=value}"); shift 2 ;;
    -p) params+=("-p" "${2:?-p needs a key}" "${3:?-p needs a value}"); shift 3 ;;
    --data-dir) export SROOD_DATA_DIR="${2:?--data-dir needs a path}"; shift 2 ;;
    --download) export SROOD_DOWNLOAD=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; pytest_args+=("$@"); break ;;
    *) echo "run_all.sh: unknown argument '$1' (see ./run_all.sh --help)" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------------------------------------------------------
# Environment: a virtualenv in .venv (or the interpreter named by SROOD_PYTHON, e.g. an activated conda env).
# torch is installed first and on its own: this pin resolves to local wheels on the project's machines; elsewhere
# set SROOD_TORCH="torch torchvision" (or any spec) to take your platform's build.
# ---------------------------------------------------------------------------------------------------------------
SROOD_TORCH="${SROOD_TORCH:-torch==2.14.1 torchvision==0.29.1}"
if [[ -n "${SROOD_PYTHON:-}" ]]; then
  py="$SROOD_PYTHON"
else
  py=.venv/bin/python
  stamp=.venv/.srood-installed
  want="$(sha256sum pyproject.toml | cut -c1-16) $SROOD_TORCH"
  if [[ ! -x "$py" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "==> creating the environment in .venv (first run only; a few minutes)"
    python3 -m venv .venv
    "$py" -m pip install --quiet --upgrade pip
    # shellcheck disable=SC2086  # SROOD_TORCH is a list of requirement specs
    "$py" -m pip install --quiet $SROOD_TORCH
    "$py" -m pip install --quiet -e ".[test]"
    echo "$want" > "$stamp"
  fi
fi

if [[ $run_tests -eq 1 ]]; then
  echo "==> provisioning LPIPS weights (offline-capable; see README)"
  "$py" -m srood_lib provision-lpips
  echo "==> running the test suite"
  set +e
  "$py" -m pytest "${pytest_args[@]}"
  rc=$?
  set -e
  if [[ $rc -eq 5 ]]; then
    echo "run_all.sh: pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
  fi
  exit $rc
fi

# ---------------------------------------------------------------------------------------------------------------
# Main job: resolve the profile, check the data it needs, then run the notebooks in order with papermill.
# ---------------------------------------------------------------------------------------------------------------
out="${SROOD_RESULTS_DIR:-results}/$profile"
mkdir -p "$out"
resolved="$out/config.resolved.yaml"
set_args=()
for s in "${sets[@]+"${sets[@]}"}"; do set_args+=(--set "$s"); done
"$py" -m srood_lib resolve-config --profile "$profile" "${set_args[@]+"${set_args[@]}"}" --out "$resolved"
# Fails fast, with the dataset named and how to provide it, when the profile's data cannot be reached.
"$py" -m srood_lib check-data --config "$resolved"

notebooks=()
if [[ -n "$only" ]]; then
  nb="notebooks/${only%.ipynb}.ipynb"
  [[ -f "$nb" ]] || { echo "run_all.sh: no notebook $nb (see notebooks/)" >&2; exit 2; }
  notebooks=("$nb")
else
  for nb in notebooks/[0-9][0-9]_*.ipynb; do notebooks+=("$nb"); done
fi

for nb in "${notebooks[@]}"; do
  name="$(basename "$nb" .ipynb)"
  echo "==> [$profile] $name"
  log="$out/$name.log"
  set +e
  "$py" -m papermill "$nb" "$out/$name.ipynb" -f "$resolved" "${params[@]+"${params[@]}"}" \
        --cwd notebooks --progress-bar 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -ne 0 ]]; then
    cell="$(grep -o 'Exception encountered at "In \[[0-9]*\]"' "$log" | head -1 | sed 's/.*at //' || true)"
    echo "run_all.sh: notebook $name failed${cell:+ at cell $cell} (profile $profile); executed copy with the" \
         "error: $out/$name.ipynb, log: $log" >&2
    exit 1
  fi
  rm -f "$log"
  # The report reads as a page: its HTML leaves the code out (the .ipynb keeps it).
  html_args=()
  [[ "$name" == 99_report ]] && html_args=(--no-input)
  "$py" -m jupyter nbconvert --to html --log-level WARN "${html_args[@]+"${html_args[@]}"}" "$out/$name.ipynb" \
        --output-dir "$out" >/dev/null
done
echo "==> done: results in $out/"
