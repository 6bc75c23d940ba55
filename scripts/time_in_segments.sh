#!/usr/bin/env bash
# Wall time of a command too long for one sitting, e.g. `./run_all.sh --retrain` (hours on a CPU), which resumes
# every training from its last checkpoint when started again. Each call runs the command once and appends one
# segment to LOG: a START line, then an END line with its rc and wall seconds, whether it finished or was
# stopped (Ctrl-C, or SIGTERM to its process group). The end-to-end time is the sum of the segments once one ends
# with rc=0; it includes what each restart re-did (re-run notebooks, steps since the last checkpoint).
#
#   scripts/time_in_segments.sh LOG -- ./run_all.sh --retrain        # again after a stop, same LOG
#   setsid nohup scripts/time_in_segments.sh LOG -- ./run_all.sh --retrain > run.log 2>&1 &
#   kill -TERM -- -PGID                                               # stop that one: PGID = its pid
set -uo pipefail
log="${1:?usage: scripts/time_in_segments.sh LOG -- COMMAND...}"
shift
[[ "${1:-}" == "--" ]] && shift
if [[ $# -eq 0 ]]; then
  echo "time_in_segments.sh: no command after LOG (usage: scripts/time_in_segments.sh LOG -- COMMAND...)" >&2
  exit 2
fi

start=$(date +%s)
echo "START $start $(date -u -Is) $(git rev-parse --short HEAD 2>/dev/null || echo no-git) :: $*" >> "$log"
ended=0
finish() {
  [[ $ended -eq 1 ]] && return
  ended=1
  local end
  end=$(date +%s)
  echo "END $end $(date -u -Is) rc=$1 wall=$((end - start))" >> "$log"
  awk '/^END/ { for (i = 1; i <= NF; i++) if ($i ~ /^wall=/) { n++; s += substr($i, 6) } }
       END { printf "time_in_segments.sh: %d segment(s), %d s (%.2f h) in all\n", n, s, s / 3600 }' "$log" >&2
}
# A group-wide signal (Ctrl-C, kill -- -PGID) reaches the command too; bash runs the trap once it has exited.
trap 'finish 130; exit 130' INT
trap 'finish 143; exit 143' TERM
"$@"
rc=$?
finish "$rc"
exit "$rc"
