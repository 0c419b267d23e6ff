"""Progress bars that stay readable in CI logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from absl import logging
from tqdm import tqdm

LOG_INTERVAL_S = 10.0


class ProgressBar(tqdm):
    """A tqdm bar on stderr that also logs its status through absl when stderr is not a terminal.

    In a terminal it is a plain tqdm bar. Otherwise (CI, redirected output) it
    redraws the bar at most every `log_interval_s` seconds and writes the same
    line (count, elapsed time, rate, ETA, postfix) to the absl log, so that the
    log shows progress without carriage-return noise.
    """

    def __init__(self, *args: Any, log_interval_s: float = LOG_INTERVAL_S, **kwargs: Any):
        self._log_to_absl = not sys.stderr.isatty()
        self._log_interval_s = log_interval_s
        self._last_log_time = time.monotonic()
        if self._log_to_absl:
            kwargs.setdefault("mininterval", log_interval_s)
        super().__init__(*args, file=sys.stderr, dynamic_ncols=True, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        """Redraw the bar, and log it when at least `log_interval_s` seconds have passed."""
        now = time.monotonic()
        if self._log_to_absl and now - self._last_log_time >= self._log_interval_s:
            self._last_log_time = now
            logging.info("%s", self.format_meter(**self.format_dict))
        return super().display(msg=msg, pos=pos)

    def close(self) -> None:
        """Close the bar and log its final line when logging to absl."""
        if self._log_to_absl and not self.disable:
            logging.info("%s", self.format_meter(**self.format_dict))
        super().close()


def progress(iterable_or_total: Iterable[Any] | int, desc: str, unit: str = "it",
             log_interval_s: float = LOG_INTERVAL_S, initial: int = 0) -> ProgressBar:
    """Create a progress bar with rate and ETA over an iterable or a known total.

    Args:
        iterable_or_total: an iterable to wrap (iterate over the returned bar),
            or an int total for manual mode (call `bar.update(n)` and
            `bar.set_postfix(...)`, then `bar.close()` or use it in a `with`).
        desc: the label before the bar, e.g. 'train'.
        unit: what one count is, e.g. 'step' or 'frame'.
        log_interval_s: seconds between absl log lines when stderr is not a terminal.
        initial: the count already done, as when a resumed run continues; the rate and ETA count only
            the updates made through this bar.
    """
    if isinstance(iterable_or_total, int):
        return ProgressBar(total=iterable_or_total, desc=desc, unit=unit, log_interval_s=log_interval_s,
                           initial=initial)
    return ProgressBar(iterable_or_total, desc=desc, unit=unit, log_interval_s=log_interval_s, initial=initial)
