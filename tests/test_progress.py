"""Progress bars: a widget/auto bar normally; under run_all.sh (SROOD_PROGRESS=log) a plain text bar on stderr that
prints at most once per SROOD_PROGRESS_INTERVAL seconds, which papermill streams to the terminal."""
import io

from srood_lib.progress import tqdm


def test_log_mode_writes_a_throttled_text_bar(monkeypatch):
    monkeypatch.setenv("SROOD_PROGRESS", "log")
    monkeypatch.setenv("SROOD_PROGRESS_INTERVAL", "3600")
    out = io.StringIO()
    bar = tqdm(total=1000, desc="repair", unit="step", file=out)
    assert bar.mininterval == bar.maxinterval == 3600 and bar.ascii
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = [line for line in out.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    assert lines[0].startswith("repair:") and "1000/1000" in lines[-1]
    assert len(lines) <= 3  # the first line, the final one, nothing in between at a one-hour interval


def test_log_mode_defaults_to_stderr_and_30_seconds(monkeypatch, capsys):
    monkeypatch.setenv("SROOD_PROGRESS", "log")
    monkeypatch.delenv("SROOD_PROGRESS_INTERVAL", raising=False)
    with tqdm(total=2, desc="scoring") as bar:
        bar.update(2)
    assert bar.mininterval == 30
    captured = capsys.readouterr()
    assert "scoring" in captured.err and captured.out == ""


def test_without_log_mode_it_is_tqdm_auto(monkeypatch):
    from tqdm.auto import tqdm as auto_bar
    monkeypatch.delenv("SROOD_PROGRESS", raising=False)
    with tqdm(total=1, disable=True) as bar:
        assert isinstance(bar, auto_bar)
