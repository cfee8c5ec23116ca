"""Workflow diagrams: the node graphs stored, as a JSON string, in ``workFlowDiagram``.

Pure: a seeded ``random.Random`` in, plain data out.
"""

from __future__ import annotations

import json
import random
from typing import Any

__all__ = ["DOMAINS", "OBJECTS", "Diagram", "diagram"]

Document = dict[str, Any]

DOMAINS = "Sales Finance Marketing Ops Supply Risk HR Product Billing Growth Claims".split()
OBJECTS = "orders customers invoices shipments events payments leads stock claims ledger".split()


class Diagram:
    """A workflow's node graph; ``text()`` is the JSON string legacy stores."""

    __slots__ = ("edges", "nodes")

    def __init__(self, nodes: list[Document], edges: list[Document]) -> None:
        self.nodes = nodes
        self.edges = edges

    def text(self) -> str:
        return json.dumps({"nodes": self.nodes, "edges": self.edges}, separators=(",", ":"))

    def previous(self) -> Diagram:
        """The diagram one edit earlier: the last node not yet added."""
        if len(self.nodes) < 2:
            return self
        gone = self.nodes[-1]["id"]
        return Diagram(
            self.nodes[:-1], [e for e in self.edges if gone not in (e["source"], e["target"])]
        )


def diagram(
    rng: random.Random, connector_ids: list[str], size: int | None = None, wide: bool = False
) -> Diagram:
    """A layered data flow: sources -> transforms and filters -> joins -> targets.

    ``size`` is the number of nodes (dozens unless given); ``wide`` adds long
    configuration text, as the oversized diagrams of old workspaces have.
    """
    count = size if size is not None else rng.randint(12, 48)
    sources = max(1, count // 6)
    targets = max(1, count // 10)
    joins = max(1, count // 8)
    middle = max(1, count - sources - targets - joins)
    layers = [("source", sources), ("middle", middle), ("join", joins), ("target", targets)]
    nodes: list[Document] = []
    edges: list[Document] = []
    previous_layer: list[str] = []
    number = 0
    for column, (kind, how_many) in enumerate(layers):
        layer: list[str] = []
        for row in range(how_many):
            number += 1
            node_type = (
                rng.choice(("transform", "filter", "aggregate", "lookup"))
                if (kind == "middle")
                else kind
            )
            node_id = f"n{number}"
            nodes.append(
                {
                    "id": node_id,
                    "type": node_type,
                    "label": f"{node_type.title()} {rng.choice(OBJECTS)}",
                    "position": {"x": 120 + column * 260, "y": 80 + row * 110},
                    "config": _node_config(rng, node_type, connector_ids, wide),
                }
            )
            layer.append(node_id)
            if previous_layer:
                edges.append(
                    {
                        "id": f"e{len(edges) + 1}",
                        "source": rng.choice(previous_layer),
                        "target": node_id,
                    }
                )
        previous_layer = layer
    return Diagram(nodes, edges)


def _node_config(
    rng: random.Random, node_type: str, connector_ids: list[str], wide: bool
) -> Document:
    table = f"{rng.choice(DOMAINS).lower()}.{rng.choice(OBJECTS)}"
    config: Document
    if node_type == "source":
        config = {"connector_id": rng.choice(connector_ids), "table": table, "incremental": True}
    elif node_type == "target":
        config = {
            "connector_id": rng.choice(connector_ids),
            "table": table,
            "write_mode": rng.choice(("append", "upsert", "overwrite")),
        }
    elif node_type == "filter":
        config = {"condition": f"{rng.choice(OBJECTS)}_amount > {rng.randrange(0, 1000)}"}
    elif node_type == "join":
        config = {"join_type": rng.choice(("inner", "left")), "left_key": "id", "right_key": "id"}
    elif node_type == "aggregate":
        config = {"group_by": ["region", "day"], "measures": {"total": "sum(amount)"}}
    elif node_type == "lookup":
        config = {"table": table, "key": "customer_id", "cache": rng.random() < 0.5}
    else:
        config = {"expressions": {f"col_{i}": f"upper(col_{i})" for i in range(rng.randint(1, 4))}}
    if wide:
        config["sql"] = " UNION ALL ".join(
            f"SELECT * FROM {table}_{part:03d} WHERE batch_id = {part}" for part in range(30)
        )
    return config
