"""Progress for long command-line work: a bar on stderr that appears only after ``delay`` seconds.

``tqdm`` draws it where installed; otherwise a plain one-line bar (carriage returns on a terminal, one line
per 10% elsewhere). Nothing is printed for work that ends before ``delay``, or when ``enabled`` is False.

    with Progress(total=n_bytes, desc="resize", unit="B") as bar:
        for ...:
            bar.update(nbytes)
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_amount(x: float, unit: str) -> str:
    if unit == "B":
        for u in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(x) < 1024 or u == "TiB":
                return f"{x:.0f} {u}" if u == "B" else f"{x:.1f} {u}"
            x /= 1024
    return f"{x:g}{(' ' + unit) if unit else ''}"


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"


class Progress:
    """A delayed progress bar over ``total`` units (see module doc). ``update(n)`` adds ``n`` units;
    ``postfix`` is a short text shown after the bar (e.g. the current file)."""

    def __init__(self, total: float, desc: str = "", unit: str = "", delay: float = 2.0,
                 stream: TextIO | None = None, enabled: bool = True):
        self.total, self.desc, self.unit, self.delay = float(total or 0), desc, unit, delay
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.done, self.postfix = 0.0, ""
        self.start = time.monotonic()
        self._tqdm = None
        self._last_decile = -1
        self._shown = False
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1, postfix: str | None = None) -> None:
        self.done += n
        if postfix is not None:
            self.postfix = postfix
        if not self.enabled or time.monotonic() - self.start < self.delay:
            return
        if self._tqdm is None and not self._shown and self._start_tqdm():
            return
        if self._tqdm is not None:
            self._tqdm.update(n)
            if postfix is not None:
                self._tqdm.set_postfix_str(postfix, refresh=False)
            return
        self._draw()

    def _start_tqdm(self) -> bool:
        try:
            from tqdm import tqdm
        except ImportError:
            return False
        self._tqdm = tqdm(total=self.total, initial=self.done, desc=self.desc or None, unit=self.unit or "it",
                          unit_scale=self.unit == "B", unit_divisor=1024, file=self.stream, leave=True,
                          dynamic_ncols=True)
        if self.postfix:
            self._tqdm.set_postfix_str(self.postfix, refresh=True)
        self._shown = True
        return True

    def _line(self) -> str:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        elapsed = time.monotonic() - self.start
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        bar = "#" * int(frac * 24)
        text = (f"{self.desc + ': ' if self.desc else ''}{frac * 100:3.0f}% [{bar:<24}] "
                f"{_fmt_amount(self.done, self.unit)}/{_fmt_amount(self.total, self.unit)} "
                f"{_fmt_seconds(elapsed)} elapsed, ETA {_fmt_seconds(eta)}")
        return text + (f"  {self.postfix}" if self.postfix else "")

    def _draw(self) -> None:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        if self._tty:
            self.stream.write("\r" + self._line()[:160].ljust(80))
        else:
            decile = int(frac * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(self._line() + "\n")
        self._shown = True
        self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self._shown and self._tty:
            self.stream.write("\n")
            self.stream.flush()


class ProgressCallback:
    """The ``progress(done, total)`` callback that core functions take, drawn as a delayed ``Progress`` bar.
    Use it as a context manager around the work; the delay counts from entering it.

        with ProgressCallback("inspect", "modules") as progress:
            inspect(lora, progress=progress)
    """

    def __init__(self, desc: str = "", unit: str = "", **options):
        self.desc, self.unit, self.options = desc, unit, options
        self.bar: Progress | None = None
        self.start = time.monotonic()

    def __enter__(self) -> "ProgressCallback":
        self.start = time.monotonic()
        return self

    def __call__(self, done: float, total: float) -> None:
        if self.bar is None:
            self.bar = Progress(total, self.desc, self.unit, **self.options)
            self.bar.start = self.start
        self.bar.update(done - self.bar.done)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
