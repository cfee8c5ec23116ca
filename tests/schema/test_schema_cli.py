"""``strangler schema ...`` as an operator runs it."""

from __future__ import annotations

import pytest

from strangler.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_upgrade_status_upgrade_on_an_empty_database(empty_database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", empty_database_url)

    code, out, _ = run(capsys, "schema", "upgrade")
    assert code == 0
    assert "applying 0001_core_model.sql" in out
    assert "the schema is up to date" in out.splitlines()[-1]

    code, out, _ = run(capsys, "schema", "status")
    assert code == 0
    assert "0004_runs_and_activity.sql" in out and "applied" in out
    assert "pending  sha256" not in out
    assert "job_runs: 5 monthly partitions" in out
    assert out.splitlines()[-1] == "schema is up to date"

    code, out, _ = run(capsys, "schema", "upgrade")
    assert code == 0
    assert len(out.splitlines()) == 1
    assert out.startswith("nothing to apply: all ") and "already applied" in out


def test_status_of_a_database_that_does_not_exist_lists_everything_pending(
    empty_database_url, monkeypatch, capsys
):
    monkeypatch.setenv("DATABASE_URL", empty_database_url + "_absent")
    code, out, _ = run(capsys, "schema", "status")
    assert code == 0
    assert "does not exist yet; run: strangler schema upgrade" in out
    assert "0001_core_model.sql" in out and "pending" in out


def test_unreachable_server_is_one_line_naming_database_url(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://root@127.0.0.1:1/uzo")
    code, out, err = run(capsys, "schema", "upgrade")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "strangler schema: DATABASE_URL: cannot reach postgresql://root@127.0.0.1:1/uzo"
    )


@pytest.mark.parametrize("command", ["upgrade", "status", "partitions"])
def test_every_schema_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["schema", command, "--help"])
    assert exited.value.code == 0
    assert f"usage: strangler schema {command}" in capsys.readouterr().out


def test_a_negative_number_of_months_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["schema", "partitions", "--months-ahead", "-2"])
    assert exited.value.code == 2
    assert "not a number of months" in capsys.readouterr().err
