"""``make bench`` (shadow_compare): the comparator on large bodies, beside two baselines.

Baselines: ``json.loads`` of both bodies plus Python ``==`` (the floor: it parses, but
says nothing about where or why, and calls ``1``, ``1.0`` and ``true`` equal), and
``json.loads`` alone. Cases: a getWorkspace-like tree of several MB that is identical
byte for byte, the same tree serialised with another key order (the full walk), with a
few planted differences, with every list reordered, with every item differing only in an
ignored field (the full walk, the worst case), and that last one past the node bound
(the cost bound in action: the walk stops, the result says "truncated").

    python -m bench shadow_compare
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from shadow_compare.compare import compare_responses
from shadow_compare.rules import parse_rules
from strangler.exchange import RecordedResponse

RULES = parse_rules(
    {"entities": {"workspaces": {"ignore": [{"path": "$..rows", "reason": "benchmark noise"}]}}}
).for_entity("workspaces")
ENDPOINT = "GET /workspace/getWorkspace"


def workspace(folders: int, jobs: int, workflows: int, rng: random.Random) -> dict[str, Any]:
    def stamp() -> str:
        return (
            f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 10:{rng.randint(0, 59):02d}:00"
        )

    return {
        "status": True,
        "message": "Workspace fetched",
        "data": {
            "workspace_id": "ws_0123456789ab",
            "workspace_name": "analytics",
            "created_at": stamp(),
            "folders": [
                {
                    "folder_id": f"fd_{f:012x}",
                    "folder_name": f"folder {f}",
                    "created_at": stamp(),
                    "jobs": [
                        {
                            "job_id": f"jb_{f:06x}{j:06x}",
                            "job_name": f"job {f}-{j}",
                            "environment": "prod",
                            "created_at": stamp(),
                            "workflow_dependency": [
                                f"wf_{rng.getrandbits(48):012x}" for _ in range(3)
                            ],
                            "workflows": [
                                {
                                    "workflow_id": f"wf_{f:04x}{j:04x}{w:04x}",
                                    "workflow_name": f"wf {w}",
                                    "d_flag": False,
                                    "version": rng.randint(1, 40),
                                    "rows": rng.random() * 1e6,
                                }
                                for w in range(workflows)
                            ],
                        }
                        for j in range(jobs)
                    ],
                }
                for f in range(folders)
            ],
        },
    }


def _reordered_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reordered_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered_keys(v) for v in value]
    return value


def _reversed_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reversed_lists(v) for v in reversed(value)]
    return value


def _timed(call: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    rng = random.Random(7)
    tree = workspace(folders=120, jobs=25, workflows=8, rng=rng)
    legacy = json.dumps(tree).encode()
    planted = json.loads(legacy)
    for folder in planted["data"]["folders"][::30]:
        folder["jobs"][3]["workflows"][2]["version"] += 1
    noisy = json.loads(legacy)  # every workflow differs, only in a field the rules ignore
    for folder in noisy["data"]["folders"]:
        for job in folder["jobs"]:
            for flow in job["workflows"]:
                flow["rows"] += 1
    cases = {
        "identical bytes": legacy,
        "other key order": json.dumps(_reordered_keys(tree)).encode(),
        "4 planted diffs": json.dumps(planted).encode(),
        "lists reordered": json.dumps(_reversed_lists(tree)).encode(),
        "all differ in an ignored field": json.dumps(noisy).encode(),
    }
    print(f"body: {len(legacy) / 1e6:.1f} MB; rules: defaults (max_nodes 500000), ignore $..rows")
    floor = _timed(lambda: json.loads(legacy) == json.loads(cases["other key order"]))
    parse = _timed(lambda: (json.loads(legacy), json.loads(cases["other key order"])))
    print(f"{'baseline: json.loads x2 + ==':<40} {floor * 1000:8.1f} ms")
    print(f"{'baseline: json.loads x2':<40} {parse * 1000:8.1f} ms")
    left = RecordedResponse(200, body=legacy)
    for name, body in cases.items():
        right = RecordedResponse(200, body=body)
        result = compare_responses(left, right, RULES, endpoint=ENDPOINT)
        took = _timed(lambda right=right: compare_responses(left, right, RULES, endpoint=ENDPOINT))
        rate = result.nodes / took / 1e6 if result.nodes else 0.0
        print(
            f"{'compare: ' + name:<40} {took * 1000:8.1f} ms  {took / floor:5.1f}x floor  "
            f"{result.nodes:>7} nodes ({rate:.2f} M/s)  -> {result.kind}, "
            f"{len(result.differences)} differences"
        )
    bounded = parse_rules(
        {
            "defaults": {"max_nodes": 50_000},
            "entities": {"workspaces": {"ignore": [{"path": "$..rows", "reason": "noise"}]}},
        }
    ).for_entity("workspaces")
    right = RecordedResponse(200, body=cases["all differ in an ignored field"])
    result = compare_responses(left, right, bounded, endpoint=ENDPOINT)
    took = _timed(lambda: compare_responses(left, right, bounded, endpoint=ENDPOINT))
    print(
        f"{'compare: bound max_nodes=50000':<40} {took * 1000:8.1f} ms  -> {result.kind} "
        f"after {result.nodes} nodes ({result.notes[0] if result.notes else ''})"
    )


if __name__ == "__main__":
    main()
