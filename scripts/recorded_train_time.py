"""What ``./run_all.sh --retrain`` adds over the default run: the training time each shipped prior, detector
and shipped baseline model records (``train_seconds`` in its JSON), per file and summed. A sum of records from the
machines that trained them, not an end-to-end measurement (``scripts/time_in_segments.sh`` measures that).

    .venv/bin/python scripts/recorded_train_time.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.shipped import recorded_train_seconds  # noqa: E402


def main() -> None:
    rows = recorded_train_seconds()
    for name, seconds in rows:
        print(f"{name:60s} {seconds / 60:7.1f} min")
    total = sum(s for _, s in rows)
    print(f"sum of {len(rows)} recorded training times: {total / 3600:.2f} h ({total / 60:.0f} min)")


if __name__ == "__main__":
    main()
