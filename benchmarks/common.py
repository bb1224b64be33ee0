"""Shared pieces of the benchmarks: machine info, load monitor, timing, statistics and the report
written into its own section of ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.utils.atomic import write_text

import numpy as np
import torch
from tabulate import tabulate

#: The results file that tools/benchmark.py updates by default (beside this package).
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
LOAD_LIMIT = 2.5  # 1-min load above this during a measurement: someone else used the cores


# ----------------------------------------------------------------------------- machine, load


def machine_info() -> dict[str, str]:
    """CPU model, cores, library versions, GPU (when present)."""
    import detectron2
    import torchvision

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def proc_status_mb(key: str) -> float:
    """A memory field of ``/proc/self/status`` in MiB (``VmRSS``: now, ``VmHWM``: peak since
    exec; NaN where unavailable). Read directly: ``resource.getrusage``'s peak carries a forking
    parent's peak over into its child, and psutil is not a dependency."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class LoadMonitor:
    """Sample the 1-min load average every ``period`` s in a thread (a context manager)."""

    def __init__(self, period: float = 2.0) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.period)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    @property
    def busy(self) -> bool:
        """Whether the load exceeded :data:`LOAD_LIMIT` at any sample."""
        return max(self.samples or [os.getloadavg()[0]]) > LOAD_LIMIT

    def summary(self) -> str:
        s = self.samples or [os.getloadavg()[0]]
        flag = f" > {LOAD_LIMIT}: other jobs used the cores" if self.busy else ""
        return f"1-min load avg: start {s[0]:.2f}, max {max(s):.2f}, end {s[-1]:.2f}{flag}"


# ----------------------------------------------------------------------------- timing


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def p90(values: Sequence[float]) -> float:
    return float(np.percentile(values, 90)) if len(values) else float("nan")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(device: str, amp: bool):
    """float16 autocast on CUDA when ``amp``; a no-op context otherwise."""
    return torch.autocast("cuda", torch.float16, enabled=amp and device.startswith("cuda"))


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int, device: str,
                per: int = 1) -> dict[str, list[float]]:
    """Seconds per call / ``per`` of each function: warm-up, then ``reps`` rounds calling them
    in alternating order (load drift hits both alike)."""
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(reps):
        for n in (names if i % 2 == 0 else names[::-1]):
            sync(device)
            t = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append((time.perf_counter() - t) / per)
    return times


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- report


@dataclass
class Report:
    """One task's console table(s) and the markdown section written to RESULTS.md."""

    task: str
    title: str
    lines: list[str] = field(default_factory=list)
    busy: bool = False  # the 1-min load exceeded LOAD_LIMIT during the measurement
    ratio: object = None  # the headline ratio(s), for callers and tests

    def add_table(self, rows: list[list], headers: list[str],
                  floatfmt: str | Sequence[str] = ".3g") -> None:
        print(tabulate(rows, headers=headers, floatfmt=floatfmt))
        print()
        self.lines += [tabulate(rows, headers=headers, tablefmt="github", floatfmt=floatfmt), ""]

    def add_text(self, text: str) -> None:
        print(text)
        self.lines += [text, ""]

    def markdown(self, info: dict[str, str], argv: Sequence[str]) -> str:
        machine = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cores"))
        head = [
            f"## Benchmark: {self.title}",
            "",
            f"`python tools/benchmark.py {shlex.join(argv)}`, "
            f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. Machine: {info['cpu']}, "
            f"{info['cores']} cores; {machine}.",
            "",
        ]
        return "\n".join([marker(self.task, "start"), *head, *self.lines,
                          marker(self.task, "end")])


def marker(task: str, which: str) -> str:
    return f"<!-- benchmark:{task}:{which} -->"


def write_section(path: str | Path, task: str, text: str) -> None:
    """Replace this task's marked section of ``path`` (append it when absent), atomically."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    pattern = re.compile(re.escape(marker(task, "start")) + ".*?"
                         + re.escape(marker(task, "end")), re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = old.rstrip("\n") + ("\n\n" if old.strip() else "") + text + "\n"
    write_text(path, new)
