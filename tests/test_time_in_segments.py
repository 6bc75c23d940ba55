"""scripts/time_in_segments.sh: one START and one END line per segment, finished, failed or stopped, and their sum."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "time_in_segments.sh"


def run(log, *command):
    return subprocess.run(["bash", str(SCRIPT), str(log), "--", *command], capture_output=True, text=True, timeout=60)


def segments(log):
    return re.findall(r"^END \d+ \S+ rc=(\d+) wall=(\d+)$", log.read_text(), re.M)


def test_each_call_appends_one_segment_with_its_rc_and_the_sum(tmp_path):
    log = tmp_path / "segments.log"
    assert run(log, "sleep", "1").returncode == 0
    assert run(log, "bash", "-c", "exit 3").returncode == 3
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["START", "END", "START", "END"]
    assert lines[0].endswith(":: sleep 1")
    (rc1, wall1), (rc2, wall2) = segments(log)
    assert (rc1, rc2) == ("0", "3") and int(wall1) >= 1
    proc = run(log, "true")
    assert f"3 segment(s), {int(wall1) + int(wall2)} s" in proc.stderr


def test_a_stopped_segment_is_recorded_when_its_process_group_is_terminated(tmp_path):
    log = tmp_path / "segments.log"
    proc = subprocess.Popen(["bash", str(SCRIPT), str(log), "--", "sleep", "30"], start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while not (log.exists() and log.read_text().startswith("START")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    (rc, wall), = segments(log)
    assert rc == "143" and int(wall) < 30


def test_no_command_is_a_one_line_error(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "log")], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "usage" in proc.stderr
