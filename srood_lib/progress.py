"""Progress bars: tqdm.auto (a widget in notebooks, text in a terminal), or, when run_all.sh executes the
notebooks (``SROOD_PROGRESS=log``), plain text bars on stderr that papermill streams to the terminal which ran
it, one line every ``SROOD_PROGRESS_INTERVAL`` seconds (default 30), so a ten-minute training step shows what it
is doing there and not only papermill's cell counter.
"""
from __future__ import annotations

import os
import sys


def tqdm(*args, **kwargs):
    """A tqdm bar, as described above; same arguments as ``tqdm.tqdm``."""
    if os.environ.get("SROOD_PROGRESS") == "log":
        from tqdm.std import tqdm as text_bar

        interval = float(os.environ.get("SROOD_PROGRESS_INTERVAL", "30"))
        kwargs.setdefault("file", sys.stderr)
        return text_bar(*args, mininterval=interval, maxinterval=interval, ascii=True, **kwargs)
    from tqdm.auto import tqdm as auto_bar

    return auto_bar(*args, **kwargs)
