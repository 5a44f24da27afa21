"""`actionmap new-destination`: the scaffold validates and passes its own test at once."""

from __future__ import annotations

from pathlib import Path


def test_new_destination_validates_and_passes_its_test(cli, tmp_path: Path) -> None:
    made = cli("new-destination", "acme", "--dir", str(tmp_path))
    assert made.code == 0, made.err
    folder = tmp_path / "acme"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*.*")} == {
        "__init__.py", "destination.yaml", "actions/send.yaml", "tests/send.yaml"}
    validated = cli("validate", str(folder))
    assert validated.code == 0, validated.err
    tested = cli("test", str(folder))
    assert tested.code == 0, tested.out
    assert tested.out.strip().splitlines()[-1] == "1 passed, 0 failed"


def test_the_scaffold_test_really_checks_the_request(cli, tmp_path: Path) -> None:
    cli("new-destination", "acme", "--dir", str(tmp_path))
    action = tmp_path / "acme" / "actions" / "send.yaml"
    action.write_text(action.read_text().replace("/v1/events", "/v2/events"))
    tested = cli("test", str(tmp_path / "acme"))
    assert tested.code == 1 and "url: expected" in tested.out


def test_new_destination_refuses_bad_names_and_overwrites(cli, tmp_path: Path) -> None:
    assert cli("new-destination", "9lives", "--dir", str(tmp_path)).code == 1
    assert cli("new-destination", "acme", "--dir", str(tmp_path)).code == 0
    again = cli("new-destination", "acme", "--dir", str(tmp_path))
    assert again.code == 1 and "already exists" in again.err
