"""Every way routing_rules.yaml can be wrong is refused with the file, the line and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from proxy_support import RULES

from proxy.endpoints import LEGACY_ENDPOINTS
from proxy.errors import RulesError
from proxy.rules import parse_rules

SHIPPED = RULES.read_text()
PATH = "routing_rules.yaml"


def _line(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def _refusal(text: str, has_handler=lambda entity, endpoint: False) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_rules(text, PATH, has_handler)
    return info.value


def _edit(old: str, new: str, text: str = SHIPPED) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def test_shipped_rules_are_valid_and_assign_every_legacy_endpoint_once() -> None:
    rules = parse_rules(SHIPPED, PATH)
    listed = [e for spec in rules.entities.values() for e in (*spec.read, *spec.write)]
    assert sorted(listed) == sorted(LEGACY_ENDPOINTS)
    assert all(spec.mode == "legacy" for spec in rules.entities.values())


CONNECTORS_MODE = "  connectors:\n    mode: legacy"

CASES = [
    pytest.param(
        _edit(CONNECTORS_MODE, CONNECTORS_MODE + "\n    colour: red"),
        "    colour: red",
        "unknown key 'colour' in entities.connectors",
        "remove it or correct its spelling",
        id="unknown-key",
    ),
    pytest.param(
        _edit("fence_retry_after: 2", "fence_retry_after: 2\nretries: 3"),
        "retries: 3",
        "unknown key 'retries' in the top level",
        "allowed here: entities, fence_retry_after, version",
        id="unknown-top-level-key",
    ),
    pytest.param(
        _edit("  roles:\n", "  robots:\n    mode: legacy\n  roles:\n"),
        "  robots:",
        "unknown entity 'robots'",
        "use one of the entities: connectors, workspaces",
        id="unknown-entity",
    ),
    pytest.param(
        _edit(CONNECTORS_MODE, "  connectors:\n    mode: canery"),
        "mode: canery",
        "unknown mode 'canery'",
        "use one of: legacy, shadow, canary, new",
        id="unknown-mode",
    ),
    pytest.param(
        _edit(CONNECTORS_MODE, "  connectors:\n    mode: legacy\n    percent: 120"),
        "percent: 120",
        "percent: Input should be less than or equal to 100",
        "a number from 0 to 100",
        id="percent-above-100",
    ),
    pytest.param(
        _edit(CONNECTORS_MODE, "  connectors:\n    mode: legacy\n    percent: '10'"),
        "percent: '10'",
        "entities.connectors.percent",
        "a number from 0 to 100",
        id="percent-as-string",
    ),
    pytest.param(
        _edit(CONNECTORS_MODE, "  connectors:\n    mode: legacy\n    percent: 12.345"),
        "percent: 12.345",
        "at most two decimals",
        "a number from 0 to 100",
        id="percent-too-fine",
    ),
    pytest.param(
        _edit(CONNECTORS_MODE, "  connectors:\n    mode: legacy\n    sample_rate: 1.5"),
        "sample_rate: 1.5",
        "sample_rate: Input should be less than or equal to 1",
        "from 0.0 to 1.0",
        id="sample-rate-above-1",
    ),
    pytest.param(
        _edit(
            "      - GET /users/getUser\n",
            "      - GET /users/getUser\n      - GET /roles/getRoles\n",
        ),
        "      - GET /roles/getRoles",
        "'GET /roles/getRoles' is claimed twice (by users on line",
        "keep it under exactly one entity",
        id="endpoint-claimed-twice",
    ),
    pytest.param(
        _edit("      - GET /users/getUser\n", "      - GET /users/getUserz\n"),
        "GET /users/getUserz",
        "'GET /users/getUserz' is not an endpoint of the legacy API (did you mean "
        "'GET /users/getUser'?)",
        "exactly as LEGACY.md section 3 lists it",
        id="unknown-endpoint",
    ),
    pytest.param(
        _edit(
            "    read:\n      - GET /groups/getGroups\n    write:\n",
            "    write:\n      - GET /groups/getGroups\n",
        ),
        "      - GET /groups/getGroups",
        "'GET /groups/getGroups' is a read endpoint but is listed under write",
        "move it to groups.read",
        id="read-listed-as-write",
    ),
    pytest.param(
        _edit("  connectors:\n    mode: legacy", "  connectors:\n    mode: shadow"),
        "    mode: shadow",
        "entity 'connectors' is set to mode 'shadow' but has no new-side handler for 2 "
        "endpoint(s): GET /connectors/getConnectors, GET /connectors/getConnector",
        "set connectors.mode back to legacy until proxy/handlers/connectors.py registers them",
        id="mode-without-handlers",
    ),
    pytest.param(
        _edit("version: 1\n", "version: 1\nversion: 1\n"),
        "version: 1",
        "key 'version' appears twice (first on line",
        "keep one of them",
        id="duplicate-yaml-key",
    ),
    pytest.param(
        _edit("fence_retry_after: 2 ", "fence_retry_after: 300 "),
        "fence_retry_after: 300",
        "fence_retry_after: Input should be less than or equal to 30",
        "see the comments at the top of routing_rules.yaml",
        id="retry-after-unbounded",
    ),
]


@pytest.mark.parametrize(("text", "bad_line", "problem", "fix"), CASES)
def test_each_problem_names_file_line_and_fix(
    text: str, bad_line: str, problem: str, fix: str
) -> None:
    error = _refusal(text)
    occurrence = 2 if bad_line.strip() in ("version: 1", "- GET /roles/getRoles") else 1
    expected_line = _line(text, bad_line.strip(), occurrence)
    rendered = [p.render(PATH) for p in error.problems]
    matching = [r for r in rendered if problem in r]
    assert matching, rendered
    assert matching[0].startswith(f"{PATH}:{expected_line}: "), (matching[0], expected_line)
    assert "; fix: " in matching[0] and fix in matching[0]
    assert matching[0] in str(error)


def test_an_unassigned_endpoint_is_refused() -> None:
    text = _edit("      - POST /roles/assignRole\n", "")
    error = _refusal(text)
    [problem] = error.problems
    assert problem.line == _line(text, "entities:")
    assert "1 legacy endpoint(s) assigned to no entity: POST /roles/assignRole" in problem.problem


def test_yaml_syntax_error_names_the_line() -> None:
    text = _edit("version: 1", "version: [1")
    [problem] = _refusal(text).problems
    assert problem.line == _line(text, "fence_retry_after")  # where the parser noticed
    assert problem.problem.startswith("not valid YAML")


def test_all_problems_are_reported_at_once() -> None:
    text = _edit(CONNECTORS_MODE, "  connectors:\n    mode: nope\n    percent: -1\n    extra: 1")
    error = _refusal(text)
    assert len(error.problems) == 3
    assert str(error).startswith(f"3 problem(s) in {PATH}")


def test_modes_pass_once_the_handlers_exist() -> None:
    text = _edit(CONNECTORS_MODE, "  connectors:\n    mode: canary\n    percent: 12.5")
    rules = parse_rules(text, PATH, lambda entity, endpoint: entity == "connectors")
    assert rules.entities["connectors"].percent == 12.5
    # new needs the writes too
    text = _edit(CONNECTORS_MODE, "  connectors:\n    mode: new")
    reads_only = {"GET /connectors/getConnectors", "GET /connectors/getConnector"}
    error = _refusal(text, lambda entity, endpoint: endpoint in reads_only)
    assert "no new-side handler for 4 endpoint(s): POST /connectors/addConnector" in str(error)


def test_check_rules_command_prints_the_problem_and_exits_2(tmp_path) -> None:
    bad = tmp_path / "routing_rules.yaml"
    bad.write_text(_edit(CONNECTORS_MODE, "  connectors:\n    mode: canery"))
    run = subprocess.run(
        [sys.executable, "-m", "strangler.cli", "proxy", "check-rules", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    line = _line(bad.read_text(), "mode: canery")
    assert f"{bad}:{line}: entities.connectors.mode: unknown mode 'canery'; fix: use one of" in (
        run.stderr
    )
    good = subprocess.run(
        [sys.executable, "-m", "strangler.cli", "proxy", "check-rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert "valid; table hash" in good.stdout


@pytest.mark.parametrize("entity", ["users", "groups", "roles"])
def test_the_shipped_handlers_let_users_groups_and_roles_into_new(entity: str) -> None:
    """The proxy takes a table with the entity in ``new`` (a reload refuses an entity whose
    endpoints have no new-side handler): what ``strangler flags set <entity> new`` waits on."""
    from control.flags import edit_rules_text, plan_change, read_flags
    from proxy.handlers import HANDLER_MODULES
    from proxy.registry import HandlerDeps, load_handler_modules
    from strangler.config import Settings

    shipped = Path(__file__).resolve().parents[2] / "routing_rules.yaml"
    registry = load_handler_modules(HANDLER_MODULES, HandlerDeps(settings=Settings()))
    text = edit_rules_text(
        shipped.read_text(), plan_change(read_flags(str(shipped)), entity, "new", None)
    )
    rules = parse_rules(text, "routing_rules.yaml", registry.has)
    assert rules.entities[entity].mode == "new"
    with pytest.raises(RulesError, match=f"{entity}.mode back to legacy"):
        parse_rules(text, "routing_rules.yaml")  # no handlers: refused, as before
