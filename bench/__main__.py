"""``make bench``: runs every ``bench/bench_*.py`` module's ``main()`` in turn.

Each benchmark prints its figures side by side with the baseline its issue
names. ``python -m bench NAME`` runs only the modules whose name contains NAME.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str]) -> int:
    wanted = argv[1:] or [""]
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if info.name.startswith("bench_") and any(w in info.name for w in wanted)
    )
    if not names:
        print(f"no benchmark matches {wanted}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        try:
            module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"({name}: {time.perf_counter() - started:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
