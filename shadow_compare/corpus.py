"""Replay corpora: YAML or JSON files of requests to send to both sides.

One file holds its tenants and its cases::

    name: connectors-basic
    tenants:
      acme: {subscription_id: sub_..., user_id: usr_...}
      sandbox: {subscription_id: sub_..., user_id: usr_..., isolated: true}
    cases:
      - name: list connectors
        tenant: acme
        method: GET
        path: /connectors/getConnectors
        query: {page: 1, per_page: 20}
      - name: a stale version is refused by the new side
        tenant: sandbox
        method: POST
        path: /workflow/updateWorkflow
        body: {workflow_id: wf_..., workflow_name: x, version: 1}
        send_to_both: true
        expect: stale-version-409

Writes change data, so a write case is only accepted when it says ``send_to_both: true``
and its tenant is ``isolated`` (a tenant no one else uses, whose data both sides hold):
then it is sent to both sides, like a read. ``expect`` names the expected divergence the
case must produce; a case that does not produce it fails the replay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shadow_compare.endpoints import endpoint_entity
from shadow_compare.errors import CorpusError

__all__ = ["Case", "Corpus", "Tenant", "load_corpora"]

_FIX = "see docs/shadow_compare.md, 'Replay corpus'"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tenant(_Strict):
    subscription_id: str = Field(pattern=r"^sub_[0-9a-f]{12}$")
    user_id: str = Field(pattern=r"^usr_[0-9a-f]{12}$")
    email: str | None = None
    isolated: bool = False  # only this corpus uses it: writes may be sent to both sides


class Case(_Strict):
    name: str = Field(min_length=1)
    tenant: str
    method: Literal["GET", "POST"]
    path: str = Field(pattern=r"^/\S*$")
    query: dict[str, str | int | float | bool] = {}
    body: Any = None
    entity: str | None = None
    send_to_both: bool = False
    expect: str | None = None  # an expected divergence id the case must produce

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def is_write(self) -> bool:
        return self.method != "GET"

    @model_validator(mode="after")
    def _body_only_for_posts(self) -> Case:
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET case takes 'query', not 'body'")
        return self


class Corpus(_Strict):
    name: str = Field(min_length=1)
    tenants: dict[str, Tenant] = Field(min_length=1)
    cases: tuple[Case, ...] = Field(min_length=1)
    source: str = ""

    @model_validator(mode="after")
    def _cases_are_sound(self) -> Corpus:
        for index, case in enumerate(self.cases):
            where = f"cases[{index}] ({case.name!r})"
            tenant = self.tenants.get(case.tenant)
            if tenant is None:
                raise ValueError(f"{where}: tenant {case.tenant!r} is not under 'tenants'")
            if case.is_write and not case.send_to_both:
                raise ValueError(
                    f"{where}: a write is only replayed with 'send_to_both: true' "
                    "(it will change data on both sides)"
                )
            if case.is_write and not tenant.isolated:
                raise ValueError(
                    f"{where}: writes are only sent for an 'isolated: true' tenant, "
                    f"and {case.tenant!r} is not"
                )
        return self


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CorpusError(
            path, f"cannot be read ({exc.strerror})", "check the --cases path"
        ) from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CorpusError(
            path, f"is not valid {path.suffix.lstrip('.').upper()} ({exc})", _FIX
        ) from exc


def load_corpus(path: Path, entity_endpoints: Mapping[str, tuple[str, ...]]) -> Corpus:
    data = _read(path)
    if not isinstance(data, dict):
        raise CorpusError(path, "is not a mapping with 'tenants' and 'cases'", _FIX)
    try:
        corpus = Corpus.model_validate({"name": path.stem, **data, "source": str(path)})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = re.sub(r"^Value error, ", "", first["msg"])
        raise CorpusError(path, f"{where}: {message}", _FIX) from exc
    for case in corpus.cases:
        if case.entity is None and endpoint_entity(case.endpoint, entity_endpoints) is None:
            raise CorpusError(
                path,
                f"case {case.name!r}: {case.endpoint} is not an endpoint of any entity",
                "fix the path, or give the case an 'entity'",
            )
    return corpus


def load_corpora(directory: Path, entity_endpoints: Mapping[str, tuple[str, ...]]) -> list[Corpus]:
    """Every ``*.yaml``, ``*.yml`` and ``*.json`` file of ``directory``, in name order."""
    if not directory.is_dir():
        raise CorpusError(
            directory, "is not a directory", "pass --cases DIR holding .yaml/.json files"
        )
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    if not files:
        raise CorpusError(directory, "holds no .yaml, .yml or .json file", _FIX)
    return [load_corpus(path, entity_endpoints) for path in files]


def case_entity(case: Case, entity_endpoints: Mapping[str, tuple[str, ...]]) -> str:
    entity = case.entity or endpoint_entity(case.endpoint, entity_endpoints)
    assert entity is not None  # load_corpus checked it
    return entity
