"""Shared benchmark plumbing: CPU and memory probes, the simulator, a Kafka broker, and the
notifier run in its own measured process.

Every benchmark measures the notifier in a child process (``python bench/common.py notifier
CONFIG.json REPORT.json``) so that nothing else (the simulator, the broker, the benchmark's own
bookkeeping) is counted. The child times the scheduling pass itself (``CredentialScheduler.run``)
as well as the whole process, so start-up (imports, config validation, sink connection) can be
told apart from the work. CPU is ``getrusage(RUSAGE_SELF)`` user+system (every thread, so the
SQLite worker counts too); memory is ``VmHWM`` (peak resident set) from ``/proc/self/status``.
Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's notifier, whatever is pip-installed
    sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
STATIC_TOKEN = "sim-access-token"  # the simulator's default static bearer token
STATIC_TOKEN_USER = "static-token-user"  # the simulator's user behind it (binds sync tokens)
UNLIMITED_RPM = 6_000_000  # the notifier's own request budget, when the simulator has rpm 0


# -- probes ---------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_status_kib(field_name: str, pid: int | str = "self") -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM: peak RSS, VmRSS: current RSS), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another (running) process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mib(kib: float) -> float:
    return kib / 1024.0


# -- output ---------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                     + " |")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def note(text: str) -> None:
    """Progress to stderr (the tables go to stdout)."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def machine() -> str:
    cpus = os.cpu_count() or 0
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "?")
    except OSError:
        model = "?"
    load = os.getloadavg()[0]
    return f"{cpus} CPUs ({model}), load average {load:.1f}, Python {sys.version.split()[0]}"


# -- the simulator in its own process -------------------------------------------------------------


@dataclass
class SimProcess:
    """``notifier simulate`` in a subprocess; ``url`` is its base URL."""

    proc: subprocess.Popen[bytes]
    url: str
    containers: list[str] = field(default_factory=list)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=600) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())

    def requests(self) -> dict[str, int]:
        """Relationship API requests served since the last ``reset_stats``, by endpoint."""
        return dict(self.get("/_sim/stats")["requests"])

    def reset_stats(self) -> None:
        self.post("/_sim/stats:reset")

    def rss_kib(self) -> int:
        return proc_status_kib("VmRSS", self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def simulator(*, containers: int = 1, relationships: int = 0, seed: int = 1,
              log_path: Path | None = None, timeout: float = 900.0,
              extra: Sequence[str] = ()) -> Iterator[SimProcess]:
    """Start the simulator (rpm unlimited, no background changes) and stop it afterwards."""
    args = [PYTHON, "-m", "notifier", "simulate", "--port", "0", "--containers", str(containers),
            "--relationships", str(relationships), "--rpm", "0", "--change-rate", "0",
            "--seed", str(seed), "--log-level", "WARNING", *extra]
    err = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    sim: SimProcess | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"simulator exited early (status {proc.wait()})")
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                url = m.group(1)
            if time.monotonic() > deadline:
                raise RuntimeError("simulator did not start in time")
        # Keep reading the banner so the pipe never fills (it lists every container).
        threading_drain(proc.stdout)
        sim = SimProcess(proc, url)
        sim.containers = [c["id"] for c in sim.get("/_sim/containers")]
        yield sim
    finally:
        if sim is not None:
            sim.stop()
        elif proc.poll() is None:
            proc.kill()
            proc.wait()
        if log_path is not None and hasattr(err, "close"):
            err.close()


def threading_drain(stream: Any) -> None:
    import threading

    def drain() -> None:
        for _ in iter(lambda: stream.read(65536), b""):
            pass

    threading.Thread(target=drain, daemon=True).start()


# -- a Kafka broker ------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    """``KAFKA_BOOTSTRAP`` if set, else a broker of our own from scripts/kafka.sh on a free
    port, stopped afterwards. Yields ``127.0.0.1:PORT``."""
    named = os.environ.get("KAFKA_BOOTSTRAP")
    if named:
        yield named
        return
    port = free_port()
    env = dict(os.environ, KAFKA_PORT=str(port))
    script = str(ROOT / "scripts" / "kafka.sh")
    note(f"starting a Kafka broker on 127.0.0.1:{port} (scripts/kafka.sh)")
    out = subprocess.run(["bash", script, "start"], env=env, check=True, capture_output=True,
                         text=True, timeout=900)
    address = out.stdout.strip().splitlines()[-1]
    try:
        yield address
    finally:
        subprocess.run(["bash", script, "stop"], env=env, check=False, capture_output=True,
                       timeout=120)


# -- the notifier in its own process -------------------------------------------------------------


@dataclass
class NotifierRun:
    """What one measured ``run --once`` process reported."""

    status: int
    cpu_total: float  # whole process, from wait4 (imports and start-up included)
    cpu_pass: float  # the scheduling pass only (check, drain, publish, checkpoint)
    user_pass: float  # the user-mode part of cpu_pass (the rest is the kernel's)
    threads_pass: dict[str, list[float]]  # thread name -> [user, system] CPU s over the pass
    gc_seconds_pass: float  # wall time in the cyclic garbage collector during the pass
    cpu_startup: float  # config validation, App start, store open, sinks connected, load
    wall_pass: float
    wall_total: float
    peak_rss_kib: int  # VmHWM at exit: the peak over the whole process
    rss_before_pass_kib: int
    rss_after_pass_kib: int
    maxrss_kib: int  # ru_maxrss from wait4 (should agree with peak_rss_kib)
    log: str

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}


def run_notifier(config: dict[str, Any], workdir: Path, *, name: str = "notifier",
                 timeout: float = 1800.0, profile: str | None = None) -> NotifierRun:
    """Run ``App(config).run(once=True)`` in a child process and return its measurements.

    ``profile``: "cprofile" (wall clock) or "cprofile-cpu" (the loop thread's CPU time) writes
    ``<name>.pstats`` in ``workdir``, "pyinstrument" a text
    report ``<name>.pstats`` (both profile the pass only), "py-spy" collapsed stacks of
    on-CPU samples of the whole process in ``<name>.pyspy`` (see ``pyspy_summary``). The CPU
    figures of a profiled run are not comparable with unprofiled ones.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / f"{name}.config.json"
    report_path = workdir / f"{name}.report.json"
    log_path = workdir / f"{name}.log"
    cfg_path.write_text(json.dumps(config))
    report_path.unlink(missing_ok=True)
    args = [PYTHON, str(Path(__file__).resolve()), "notifier", str(cfg_path), str(report_path)]
    if profile == "py-spy":  # sampled from outside: the child runs unmodified
        args = ["py-spy", "record", "--format", "raw", "--rate", "250", "--threads",
                "-o", str(workdir / f"{name}.pyspy"), "--", *args]
    elif profile:
        args += ["--profile", profile, str(workdir / f"{name}.pstats")]
    started = time.monotonic()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = started + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{name}: notifier did not finish within {timeout:.0f}s")
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if not report_path.exists():
        raise RuntimeError(f"{name}: the notifier child wrote no report (exit {proc.returncode})"
                           f"; log tail:\n{text[-3000:]}")
    rep = json.loads(report_path.read_text())
    return NotifierRun(
        status=rep["status"], cpu_total=ru.ru_utime + ru.ru_stime, cpu_pass=rep["cpu_pass"],
        user_pass=rep["user_pass"], threads_pass=rep["threads_pass"],
        gc_seconds_pass=rep["gc_seconds_pass"],
        cpu_startup=rep["cpu_startup"], wall_pass=rep["wall_pass"], wall_total=wall,
        peak_rss_kib=rep["vmhwm_kib"], rss_before_pass_kib=rep["rss_before_pass_kib"],
        rss_after_pass_kib=rep["rss_after_pass_kib"], maxrss_kib=ru.ru_maxrss, log=text,
    )


def notifier_config(*, sim_url: str, state_path: Path, subscriptions: list[dict[str, Any]],
                    sinks: list[dict[str, Any]], poll: dict[str, Any] | None = None,
                    concurrency: int = 8) -> dict[str, Any]:
    """A config for the simulator: static token, unlimited budget, metrics server off."""
    return {
        "source": {"base_url": sim_url, "concurrency": concurrency, "max_attempts": 3,
                   "allow_insecure_http": True},
        "credentials": [{"name": "bench", "access_token": STATIC_TOKEN,
                         "requests_per_minute": UNLIMITED_RPM}],
        "state": {"path": str(state_path)},
        "poll": poll or {},
        "subscriptions": subscriptions,
        "sinks": sinks,
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING", "format": "text"},
    }


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def pyspy_summary(path: Path, top: int = 30) -> str:
    """Self and inclusive on-CPU sample shares per function from py-spy's raw output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    if not total:
        return "(no samples)"
    lines = [f"{total} on-CPU samples; self %, then inclusive %:"]
    for label, counts in (("self", own), ("inclusive", incl)):
        lines.append(f"-- {label}")
        for f, c in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"{100 * c / total:6.1f}%  {f}")
    return "\n".join(lines)


# -- the child side -------------------------------------------------------------------------------


def _child(config_path: str, report_path: str, profile: tuple[str, str] | None) -> int:
    """Runs in the measured process: validate the config, run one pass, write the report."""
    import orjson

    from notifier.app import App
    from notifier.config import config_from_data
    from notifier.logs import setup_logging
    from notifier.scheduler import CredentialScheduler

    t0, c0 = time.monotonic(), cpu_seconds()
    config = config_from_data(orjson.loads(Path(config_path).read_bytes()))
    setup_logging(config.logging.level, "text")
    marks: dict[str, float] = {}
    threads_before: dict[str, tuple[float, float]] = {}
    threads_after: dict[str, tuple[float, float]] = {}
    active = 0
    original = CredentialScheduler.run
    profiler: Any = None

    async def timed_run(self: CredentialScheduler, *, once: bool = False,
                        progress: Any = None) -> None:
        nonlocal active, profiler
        if active == 0 and "c1" not in marks:
            threads_before.update(thread_cpu())
            marks.update(t1=time.monotonic(), c1=cpu_seconds(),
                         r1=proc_status_kib("VmRSS"), u1=user_seconds())
            if profile is not None:
                profiler = _start_profiler(profile[0])
        active += 1
        try:
            await original(self, once=once, progress=progress)
        finally:
            active -= 1
            if active == 0:
                threads_after.update(thread_cpu())
                marks.update(t2=time.monotonic(), c2=cpu_seconds(),
                             r2=proc_status_kib("VmRSS"), u2=user_seconds())
                if profiler is not None:
                    profiler.stop() if profile and profile[0] == "pyinstrument" \
                        else profiler.disable()

    gc_time = [0.0, 0]  # seconds spent in the cyclic GC during the pass, collections
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if "c1" not in marks or "c2" in marks:
            return
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_started[0]
            gc_time[1] += 1

    gc.callbacks.append(on_gc)
    CredentialScheduler.run = timed_run  # type: ignore[method-assign]
    status = asyncio.run(App(config).run(once=True))
    if profiler is not None and profile is not None:
        if profile[0] == "pyinstrument":
            Path(profile[1]).write_text(profiler.output_text(unicode=False, color=False,
                                                             show_all=False))
        else:
            profiler.dump_stats(profile[1])
    c1, c2 = marks.get("c1", 0.0), marks.get("c2", 0.0)
    report = {
        "status": status,
        "cpu_startup": c1 - c0 if c1 else 0.0,
        "cpu_pass": c2 - c1,
        "user_pass": marks.get("u2", 0.0) - marks.get("u1", 0.0),
        "gc_seconds_pass": round(gc_time[0], 3),
        "gc_collections_pass": gc_time[1],
        "threads_pass": {
            name: [round(u - threads_before.get(name, (0.0, 0.0))[0], 3),
                   round(s - threads_before.get(name, (0.0, 0.0))[1], 3)]
            for name, (u, s) in threads_after.items()},
        "wall_pass": marks.get("t2", 0.0) - marks.get("t1", 0.0),
        "wall_child": time.monotonic() - t0,
        "vmhwm_kib": proc_status_kib("VmHWM"),
        "rss_before_pass_kib": int(marks.get("r1", 0)),
        "rss_after_pass_kib": int(marks.get("r2", 0)),
    }
    Path(report_path).write_text(json.dumps(report))
    return status


def thread_cpu() -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of each live thread of this process, by thread name."""
    import threading

    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, tuple[float, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = re.sub(r"_\d+$", "", names.get(int(task.name), "other"))
        fields = stat.rsplit(")", 1)[1].split()
        u, s = int(fields[11]) / ticks, int(fields[12]) / ticks
        pu, ps = out.get(name, (0.0, 0.0))
        out[name] = (pu + u, ps + s)
    return out


def user_seconds() -> float:
    """User-mode CPU seconds of this process so far (the rest of cpu_seconds is the kernel's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def _start_profiler(kind: str) -> Any:
    """cProfile (wall clock, or CPU time for "cprofile-cpu"; loop thread) or pyinstrument
    (sampling; pip install pyinstrument)."""
    if kind == "pyinstrument":
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005, async_mode="disabled")
        prof.start()
        return prof
    import cProfile

    # The loop thread's CPU time (dearer per call, no idle), or the wall clock (cheap; idle time
    # shows up as select()).
    prof = cProfile.Profile(time.thread_time) if kind == "cprofile-cpu" else cProfile.Profile()
    prof.enable()
    return prof


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 3 and argv[0] == "notifier":
        profile = (argv[4], argv[5]) if len(argv) >= 6 and argv[3] == "--profile" else None
        return _child(argv[1], argv[2], profile)
    print("usage: python bench/common.py notifier CONFIG.json REPORT.json "
          "[--profile cprofile OUT]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
