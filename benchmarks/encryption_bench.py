"""Encrypted beside plaintext msal-persist: cache hits, forced refreshes, the key fetch.

Usage::

    python benchmarks/encryption_bench.py [--quick] [--output FILE]

Targets (DESIGN.md): a cache hit costs nothing extra (it decrypts nothing); a forced
refresh stays within 10 % of plaintext. The one-time key fetch per process is measured
against a real gnome-keyring Secret Service on a private D-Bus session
(``msal_persist.testing.secret_service``), in fresh processes, since ``keyring`` keeps
what it found for the life of a process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ENCRYPTED, LABELS, MEMORY, PERSIST, build_state, file_system_of, username
from run import fmt_ratio, fmt_time, median, run_hit, run_write, verdict

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "encryption.md"
KINDS = (MEMORY, PERSIST, ENCRYPTED)
LARGE = 2000
FETCH_PROCESSES = 10
FETCH_PROGRAM = """
import json, time
from msal_persist import KeyringKey
started = time.perf_counter()
source = KeyringKey(name="bench")  # imports keyring and lets it choose a backend
chosen = time.perf_counter()
key = source.fetch(create=False)  # one D-Bus round trip to the Secret Service
done = time.perf_counter()
print(json.dumps({"backend": chosen - started, "fetch": done - chosen, "found": key is not None}))
"""


def key_fetch_seconds(processes: int) -> list[dict[str, float]]:
    """Seconds to choose the backend and to fetch the key, in ``processes`` fresh processes."""
    import keyring  # noqa: PLC0415 - the "encryption" extra

    from msal_persist import KeyringKey  # noqa: PLC0415
    from msal_persist.testing import secret_service  # noqa: PLC0415

    with secret_service() as address:
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
        keyring.core.init_backend()
        KeyringKey(name="bench").fetch(create=True)  # the key every process then reads
        times = []
        for _ in range(processes):
            out = subprocess.run(
                [sys.executable, "-c", FETCH_PROGRAM],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
            report = json.loads(out)
            if not report.pop("found"):
                raise RuntimeError("the key stored in the keyring was not found")
            times.append(report)
    return times


def ms(values: list[float]) -> str:
    return f"{median(values) * 1e3:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    reps = 3 if args.quick else 5
    hit_ops, hit_seconds = (2000, 0.3) if args.quick else (10000, 1.0)
    write_ops = (
        {"small": (100, 0.6), "large": (12, 1.2)}
        if args.quick
        else {
            "small": (400, 2.0),
            "large": (40, 4.0),
        }
    )
    states = {"small": build_state(1), "large": build_state(LARGE)}
    users = {"small": username(0), "large": username(LARGE // 2)}
    hit = {size: {k: [] for k in KINDS} for size in states}
    write = {size: {k: [] for k in KINDS} for size in states}
    with tempfile.TemporaryDirectory(prefix="msal-persist-bench-enc-") as tmp_root:
        for rep in range(reps):
            print(f"# repetition {rep + 1}/{reps}", file=sys.stderr)
            for size, state in states.items():
                for kind in KINDS[rep % 3 :] + KINDS[: rep % 3]:
                    hit[size][kind].append(
                        run_hit(
                            kind, state, users[size], ops=hit_ops, seconds=hit_seconds,
                            tmp_root=tmp_root,
                        )
                    )  # fmt: skip
                    ops, seconds = write_ops[size]
                    per_call, _ = run_write(
                        kind, state, users[size], ops=ops, seconds=seconds, tmp_root=tmp_root
                    )
                    write[size][kind].append(per_call)
        file_system = file_system_of(tmp_root)
    fetches = key_fetch_seconds(FETCH_PROCESSES)

    lines = [
        "## Encrypted (AES-256-GCM) beside plaintext msal-persist",
        "",
        (
            f"Medians of {reps} repetitions; temp dir on {file_system}; key given by the "
            "application (`RawKey`)."
        ),
        "",
        f"| workload | {' | '.join(LABELS[k] for k in KINDS)} | encrypted ÷ plaintext | target |",
        "|---|---|---|---|---|---|",
    ]
    names = {"small": "1 account", "large": f"{LARGE:,} accounts"}
    for label, table, limit in (("cache hit", hit, 1.05), ("forced refresh", write, 1.10)):
        for size in ("small", "large"):
            row = {k: median(v) for k, v in table[size].items()}
            ratio = row[ENCRYPTED] / row[PERSIST]
            lines.append(
                f"| {label}, {names[size]} | "
                + " | ".join(fmt_time(row[k]) for k in KINDS)
                + f" | {fmt_ratio(ratio)} | ≤ {limit:.2f}x: {verdict(ratio <= limit)} |"
            )
    lines += [
        "",
        (
            "One-time key fetch per process from gnome-keyring's Secret Service, measured "
            f"inside {FETCH_PROCESSES} fresh processes (msal-persist already imported): "
            f"`KeyringKey()` (imports keyring, which chooses its backend) median "
            f"{ms([f['backend'] for f in fetches])}, then the fetch itself (one D-Bus round "
            f"trip) median {ms([f['fetch'] for f in fetches])}; paid once per process, "
            "never on a cache hit."
        ),
        "",
        f"(Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.)",
    ]
    text = "\n".join(lines)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
