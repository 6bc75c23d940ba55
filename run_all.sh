#!/usr/bin/env bash
# One command for the whole workbook.
#
#   ./run_all.sh                      create the environment if absent, then run the tables path (profile: quick):
#                                     00_data, each ID set's notebooks (its table, figures, baselines; Tables IV-V
#                                     for CIFAR-10), the report
#   ./run_all.sh --all                also the analyses beyond the tables (configs/id/*.yaml: analyses; hours)
#   ./run_all.sh --tests              same environment, run the test suite
#   ./run_all.sh --profile smoke      pick a profile: smoke | quick | paper (configs/<profile>.yaml)
#   ./run_all.sh --id celeba          run one ID set of the profile: cifar10 | celeba | pokemon (configs/id/)
#   ./run_all.sh --only 03_table      run one notebook (name with or without .ipynb) for each ID set that has it
#   ./run_all.sh --set prior.kimg=20  override any (nested) config key for this run
#   ./run_all.sh -p seed 1            papermill-style override of a top-level key
#   ./run_all.sh --data-dir DIR       where the raw datasets are (same as SROOD_DATA_DIR=DIR)
#   ./run_all.sh --offline            never download; by default missing datasets are fetched from their
#                                     official sources (needs internet; offline the attempt fails at once and the
#                                     error lists every place looked)
#   ./run_all.sh --retrain            train everything: no stored prior (priors/), no shipped detector or
#                                     baseline model (detectors/); models this machine trained before
#                                     (checkpoints/) are reused, so remove checkpoints/ for a cold start
#
# Results land in results/<profile>/ (00_data, the report) and results/<profile>/<id_set>/ (one folder per ID
# set: executed notebooks, their HTML, CSV tables, PNG figures and the resolved config they ran with). A failing
# notebook stops the run with a non-zero exit naming the notebook and the cell.
set -euo pipefail
cd "$(dirname "$0")"

profile=quick
only=""
id_set=""
run_tests=0
retrain=0
run_analyses=0
sets=()
params=()
pytest_args=()

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --only) only="${2:?--only needs a notebook name}"; shift 2 ;;
    --id) id_set="${2:?--id needs an ID set name}"; shift 2 ;;
    --tests) run_tests=1; shift ;;
    --set) sets+=("${2:?--set needs key=value}"); shift 2 ;;
    -p) params+=("-p" "${2:?-p needs a key}" "${3:?-p needs a value}"); shift 3 ;;
    --data-dir) export SROOD_DATA_DIR="${2:?--data-dir needs a path}"; shift 2 ;;
    --download) export SROOD_DOWNLOAD=1; shift ;;   # the default; kept for old command lines
    --offline) export SROOD_DOWNLOAD=0; shift ;;
    --retrain) retrain=1; shift ;;
    --all) run_analyses=1; shift ;;
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
# Main job: resolve each ID experiment's config and check its data (both fail fast, before any notebook runs),
# then run the notebooks with papermill: 00_data, each experiment's own notebooks, the report.
# ---------------------------------------------------------------------------------------------------------------
export SROOD_DOWNLOAD="${SROOD_DOWNLOAD:-1}"  # fetch what is missing, unless --offline
# Absolute, so the notebooks (run with cwd notebooks/) write where this script reads.
mkdir -p "${SROOD_RESULTS_DIR:-results}"
SROOD_RESULTS_DIR="$(cd "${SROOD_RESULTS_DIR:-results}" && pwd)"
export SROOD_RESULTS_DIR
out="$SROOD_RESULTS_DIR/$profile"
mkdir -p "$out"

# One run at a time per results folder and per checkpoint folder: two runs would train into the same checkpoint and
# write the same notebooks at once. The lock is an flock on an open file descriptor that this shell and everything
# it starts hold, so it ends with the run however the run ends (no stale lock to delete). Python's fcntl takes it,
# as the flock command is not on every system; the lock belongs to the open file, so it outlives that child.
lock_folder() {  # lock_folder DIR FD (a fixed descriptor number: bash 3.2, macOS's, has no {fd} redirection)
  local file="$1/.run_all.lock" fd="$2" holder
  mkdir -p "$1"
  eval "exec $fd<>\"\$file\""
  if ! "$py" - "$fd" "$$" <<'PY'
import fcntl, os, sys
fd, pid = int(sys.argv[1]), sys.argv[2]
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
os.ftruncate(fd, 0)
os.pwrite(fd, pid.encode() + b"\n", 0)
PY
  then
    holder="$(head -c 20 "$file" 2>/dev/null | tr -dc '0-9')"
    echo "run_all.sh: another ./run_all.sh${holder:+ (pid $holder)} is running on $1; wait for it to end, or stop it" \
         "(kill -- -<its process group>), then run this again" >&2
    exit 2
  fi
}
lock_folder "$out" 8
lock_folder "${SROOD_CHECKPOINT_DIR:-checkpoints}" 9
if [[ $retrain -eq 1 ]]; then
  # The stored priors are named per ID set in the profile; a --set after them wins. Shipped detectors and baseline
  # models are looked up in SROOD_SHIPPED_DIR: point it at a folder that holds none.
  sets=("prior.checkpoint=null" "${sets[@]+"${sets[@]}"}")
  export SROOD_SHIPPED_DIR="$out/.no-shipped-detectors"
  echo "==> --retrain: priors, SR-OOD detectors and baseline models are trained here (not read from priors/ or detectors/)"
fi
set_args=()
for s in "${sets[@]+"${sets[@]}"}"; do set_args+=(--set "$s"); done
listed="$("$py" -m srood_lib experiments --profile "$profile")"
read -r -a profile_experiments <<< "$(echo $listed)"
if [[ -n "$id_set" ]]; then
  experiments=("$id_set")
else
  experiments=("${profile_experiments[@]+"${profile_experiments[@]}"}")
fi
if [[ ${#experiments[@]} -eq 0 ]]; then
  echo "run_all.sh: profile $profile lists no ID sets (its experiments section); nothing to run" >&2; exit 2
fi

only="${only%.ipynb}"
if [[ -n "$only" && ! -f "notebooks/$only.ipynb" ]]; then
  echo "run_all.sh: no notebook notebooks/$only.ipynb (see notebooks/)" >&2; exit 2
fi
wants() { [[ -z "$only" || "$only" == "$1" ]]; }

# 00_data and the report run once, with the config of the profile's first ID set (not this run's: an --id run
# must not rewrite the profile-level config the committed report was made with). Its data is checked after the
# ID sets' configs resolve, so an unknown --id is named before any data is looked for.
"$py" -m srood_lib resolve-config --profile "$profile" --experiment "${profile_experiments[0]:-${experiments[0]}}" \
      "${set_args[@]+"${set_args[@]}"}" --out "$out/config.resolved.yaml"
plans=()  # plans[i]: the notebooks of experiments[i] this run executes
for e in "${experiments[@]}"; do
  "$py" -m srood_lib resolve-config --profile "$profile" --experiment "$e" "${set_args[@]+"${set_args[@]}"}" \
        --out "$out/$e/config.resolved.yaml"
  # --only may name any notebook of the ID set, an analysis too; otherwise the analyses need --all.
  list_args=()
  [[ $run_analyses -eq 1 || -n "$only" ]] && list_args=(--all)
  names="$("$py" -m srood_lib notebooks --config "$out/$e/config.resolved.yaml" "${list_args[@]+"${list_args[@]}"}")"
  plan=""
  for name in $names; do if wants "$name"; then plan+="$name "; fi; done
  plans+=("$plan")
  # Names the dataset and how to provide it when the experiment's ID data cannot be reached.
  if [[ -n "$plan" ]]; then "$py" -m srood_lib check-data --config "$out/$e/config.resolved.yaml"; fi
done
if wants 00_data; then "$py" -m srood_lib check-data --config "$out/config.resolved.yaml"; fi

run_notebook() {  # run_notebook NAME DEST_DIR RESOLVED_CONFIG [papermill args...]
  local name="$1" dest="$2" resolved="$3"; shift 3
  local label="[$profile${dest#"$out"}] $name"
  echo "==> $label"
  local log="$dest/$name.log"
  set +e
  # --log-output streams each cell's output here as it runs; SROOD_PROGRESS=log makes the library's progress bars
  # plain text for it (srood_lib/progress.py), so long training shows its step counter on this terminal.
  SROOD_PROGRESS=log "$py" -m papermill "notebooks/$name.ipynb" "$dest/$name.ipynb" -f "$resolved" "$@" \
        "${params[@]+"${params[@]}"}" --cwd notebooks --progress-bar --log-output 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -ne 0 ]]; then
    local cell
    cell="$(grep -o 'Exception encountered at "In \[[0-9]*\]"' "$log" | head -1 | sed 's/.*at //' || true)"
    echo "run_all.sh: notebook $name failed${cell:+ at cell $cell} ($label); executed copy with the" \
         "error: $dest/$name.ipynb, log: $log" >&2
    render_html
    exit 1
  fi
  rm -f "$log"
  executed+=("$dest/$name.ipynb")
}

# HTML beside each executed notebook, in one nbconvert process for all of them (one per notebook cost ~4 s of
# start-up each). The report reads as a page: its HTML leaves the code out (the .ipynb keeps it).
executed=()
render_html() {
  local pages=() report=() nb
  for nb in "${executed[@]+"${executed[@]}"}"; do
    if [[ "$(basename "$nb")" == 99_report.ipynb ]]; then report+=("$nb"); else pages+=("$nb"); fi
  done
  if [[ ${#pages[@]} -gt 0 ]]; then
    echo "==> HTML of ${#pages[@]} executed notebook(s)"
    "$py" -m jupyter nbconvert --to html --log-level WARN "${pages[@]}" >/dev/null
  fi
  if [[ ${#report[@]} -gt 0 ]]; then
    "$py" -m jupyter nbconvert --to html --log-level WARN --no-input "${report[@]}" >/dev/null
  fi
  executed=()
}

wants 00_data && run_notebook 00_data "$out" "$out/config.resolved.yaml"
ran_any=0
for i in "${!experiments[@]}"; do
  e="${experiments[$i]}"
  for name in ${plans[$i]}; do
    run_notebook "$name" "$out/$e" "$out/$e/config.resolved.yaml" -p id_set "$e"
    ran_any=1
  done
done
wants 99_report && run_notebook 99_report "$out" "$out/config.resolved.yaml"
render_html
if [[ -n "$only" && "$only" != 00_data && "$only" != 99_report && $ran_any -eq 0 ]]; then
  echo "run_all.sh: no ID set of this run (${experiments[*]}) has notebook $only (configs/id/*.yaml: notebooks)" >&2
  exit 2
fi
echo "==> done: results in $out/"
