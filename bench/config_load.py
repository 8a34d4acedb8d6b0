"""Reading a large config file: what ``notifier run`` spends before it starts (issue 16).

A config as a script would generate it, one subscription per container (100,000 over 10,000
containers by default, two sinks, every fifth with a domain filter), written as YAML, as JSON
(which is YAML too), and in the compact form (one subscription per filter with a
``container_ids`` list of every container). Each case runs in a fresh process and reports the
CPU seconds of parsing the file and of validating what it holds (interpolation included):
the two steps of ``load_config``. Baseline, in the same run: the reading before libyaml and
the JSON path, PyYAML's pure-Python safe loader with the collector running (what
``load_config`` did up to 2026-11-30).

    python bench/config_load.py [--subscriptions 100000] [--containers 10000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, note, table

CASES = {  # name: (file form, how it is read)
    "baseline (pure-Python YAML, collector on)": ("yaml", "baseline"),
    "YAML": ("yaml", "parse"),
    "JSON": ("json", "parse"),
    "compact YAML (container_ids lists)": ("compact", "parse"),
}


def generated(subscriptions: int, containers: int, compact: bool) -> dict[str, Any]:
    guids = [f"5d0c2a3e-3b1f-4b8e-9a51-{n:012x}" for n in range(containers)]
    subs: list[dict[str, Any]]
    if compact:
        per = max(1, subscriptions // containers)
        subs = [{"name": f"filter{k}", "credential": "main", "container_ids": guids,
                 "sinks": ["archive", "hook"], "emit_initial": False} for k in range(per)]
    else:
        subs = [{"name": f"s{i:06d}", "credential": "main", "container_id": guids[i % containers],
                 "sinks": ["archive", "hook"], "emit_initial": False,
                 **({"domains": ["autodesk-bim360-asset"]} if i % 5 == 0 else {})}
                for i in range(subscriptions)]
    return {
        "credentials": [{"name": "main", "access_token": "${TOKEN:-t}"}],
        "sinks": [{"name": "archive", "type": "jsonl", "path": "./events.jsonl"},
                  {"name": "hook", "type": "webhook", "url": "https://example.test/h",
                   "secret": "whsec_" + "a2tr" * 11}],
        "subscriptions": subs,
    }


def child(how: str, path: str) -> int:
    """In the measured process: read ``path`` as ``how`` says, print the CPU seconds as JSON."""
    import yaml

    from notifier.config import config_from_data
    from notifier.config.loader import _PyLoader, parse_config_text

    text = Path(path).read_text(encoding="utf-8")
    c0 = time.process_time()  # load_config is these two steps (and the file's read)
    data = yaml.load(text, Loader=_PyLoader) if how == "baseline" else parse_config_text(text)
    c1 = time.process_time()
    config = config_from_data(data)
    c2 = time.process_time()
    print(json.dumps({"parse": c1 - c0, "load": c2 - c1,
                      "streams": len(list(config.streams()))}))
    return 0


def measure(how: str, path: Path) -> dict[str, float]:
    root = Path(__file__).resolve().parent
    out = subprocess.run([sys.executable, str(root / "config_load.py"), "--child", how,
                          str(path)], check=True, capture_output=True, text=True,
                         cwd=root.parent).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscriptions", type=int, default=100_000)
    p.add_argument("--containers", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("HOW", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    import yaml

    print(f"# config_load: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="bench-config-"))
    files = {}
    for form in ("yaml", "json", "compact"):
        data = generated(args.subscriptions, args.containers, compact=form == "compact")
        path = work / f"config-{form}.{'json' if form == 'json' else 'yaml'}"
        path.write_text(json.dumps(data, indent=2) if form == "json"
                        else yaml.safe_dump(data, sort_keys=False))
        files[form] = path
        note(f"{form}: {path.stat().st_size / 1e6:.1f} MB")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    for r in range(args.repeat):
        for name, (form, how) in CASES.items():
            runs[name].append(measure(how, files[form]))
            note(f"round {r + 1} {name}: {runs[name][-1]}")
    base = statistics.median(m["parse"] for m in runs[next(iter(CASES))])
    base_total = statistics.median(m["parse"] + m["load"] for m in runs[next(iter(CASES))])
    rows = []
    for name, (form, _) in CASES.items():
        parse = statistics.median(m["parse"] for m in runs[name])
        total = statistics.median(m["parse"] + m["load"] for m in runs[name])
        rows.append([name, f"{files[form].stat().st_size / 1e6:.1f}", runs[name][0]["streams"],
                     round(parse, 3), round(parse / base, 3), round(total, 3),
                     round(total / base_total, 3)])
    print(table(["case", "file MB", "streams", "parse CPU s", "parse / baseline",
                 "read + validate CPU s", "/ baseline"], rows))
    print(f"(medians of {args.repeat} runs, each in a fresh process; validation is the same code "
          "in every case)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
