"""Plugins: the Metronome declaration, discovery (folders and entry points), docs, broken plugins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from engine.config.definitions import Catalog, load_destination, load_emulator, plugin_folders
from engine.errors import ConfigError
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "acme_plugin"


def test_metronome_is_declared_as_the_spec_says() -> None:
    dest = Catalog().get("metronome")
    assert (dest.name, dest.slug) == ("Metronome (Actions)", "metronome")
    token = dest.settings["api_token"]
    assert (token.label, token.description, token.secret, token.required) == (
        "Api Token", "Your Metronome API Token", True, True)
    assert dest.settings["base_url"].default == "https://api.metronome.com"
    assert dest.auth_headers == {"Authorization": "Bearer {{settings.api_token}}"}
    check = dest.credential_check
    assert check and check.request.method == "POST" and check.request.json == []
    assert check.request.url == "{{settings.base_url}}/v1/ingest"
    assert (check.valid, check.invalid) == ({400}, {401, 403})
    action = dest.actions["send_event"]
    assert (action.title, action.description) == ("Send Event", "Send an event to Metronome")
    assert action.default_trigger.source == 'type = "track"'
    assert action.max_batch_size == 100 and action.request.body == "batch"
    fields = action.checks
    assert fields.names == ("transaction_id", "customer_id", "timestamp", "event_type", "properties")
    assert fields.required == {"transaction_id", "customer_id", "timestamp", "event_type"}
    rules = {p.field: p.rule for p in fields.check({"transaction_id": "t" * 129, "properties": dict.fromkeys(map(str, range(2001)))})[1]}
    assert (rules["transaction_id"], rules["properties"]) == ("maxLength", "maxProperties")
    assert fields.check({"transaction_id": "t" * 128, "properties": dict.fromkeys(map(str, range(2000)))})[1][0].field == "customer_id"
    ((window,),) = [fields.windows]
    assert (window.field, window.past, window.future) == ("timestamp", timedelta(days=34), timedelta(hours=24))
    assert {n: node.source for n, node in action.defaults.items()}["transaction_id"] == "$.messageId"


def test_docs_metronome(cli) -> None:
    run = cli("docs", "metronome")
    assert run.code == 0
    page = run.out
    assert page.startswith("# Metronome (Actions)")
    assert "| `api_token` | Api Token | string (secret) | yes |  | Your Metronome API Token |" in page
    assert '| `send_event` | Send Event | `type = "track"` | Send an event to Metronome |' in page
    for name, kind in [("transaction_id", "string"), ("customer_id", "string"), ("timestamp", "datetime"),
                       ("event_type", "string"), ("properties", "object")]:
        assert any(line.startswith(f"| `{name}` |") and f"| {kind} |" in line for line in page.splitlines()), name


def test_docs_of_an_unknown_destination(cli) -> None:
    run = cli("docs", "nope")
    assert run.code == 1 and 'unknown destination "nope"' in run.err and "metronome" in run.err


def _copy_plugin(tmp_path: Path) -> Path:
    folder = tmp_path / "metronome"
    shutil.copytree(REPO / "destinations" / "metronome", folder)
    return folder


@pytest.mark.parametrize(
    "file, edit, fragment",
    [
        ("destination.yaml", ("actions: [send_event]", "actions: [send_event, refund]"), "refund is declared"),
        ("destination.yaml", ("Bearer {{settings.api_token}}", "Bearer {{settings.token}}"), "settings.token is not declared"),
        ("destination.yaml", ("Bearer {{settings.api_token}}", "Bearer {{ traits.token }}"), "traits.token is not a setting"),
        ("actions/send_event.yaml", ('url: "{{settings.base_url}}/v1', 'url: "{{settings.base_url/v1'), "unclosed {{"),
        ("actions/send_event.yaml", ("maxLength: 128", "maxLenght: 128"), 'did you mean "maxLength"'),
        ("actions/send_event.yaml", ('default_trigger: type = "track"', 'default_trigger: type = = "track"'), "default_trigger"),
        ("actions/send_event.yaml", ("default: $.messageId", "default: $.messageId["), "default"),
    ],
)
def test_a_broken_plugin_is_a_located_error(cli, tmp_path: Path, file: str, edit: tuple[str, str], fragment: str) -> None:
    folder = _copy_plugin(tmp_path)
    path = folder / file
    text = path.read_text(encoding="utf-8")
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1]), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_destination(folder, "metronome")
    error = caught.value
    assert error.location is not None and error.location.file == str(path)
    assert error.location.line == text[: text.index(edit[0])].count("\n") + 1
    assert fragment in str(error)
    run = cli("validate", str(folder))
    assert run.code == 1 and run.err.startswith(f"{path}:{error.location.line}:")


def test_a_folder_has_the_slug_it_declares_and_an_installed_name_must_be_the_slug(cli, tmp_path: Path) -> None:
    folder = _copy_plugin(tmp_path)  # a folder named metronome that declares another slug
    path = folder / "destination.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("slug: metronome", "slug: metronom"), encoding="utf-8")
    run = cli("validate", str(folder))
    assert run.code == 0 and "ok (destination metronom, actions: send_event)" in run.out, run.err
    with pytest.raises(ConfigError) as caught:
        load_destination(folder, "metronome", "entry point metronome = destinations.metronome of actionmap")
    line = text[: text.index("slug: metronome")].count("\n") + 1
    assert str(caught.value).startswith(
        f'{path}:{line}:7: slug "metronom" does not match the name "metronome" the plugin is installed as '
        "(entry point metronome = destinations.metronome of actionmap): name its entry point in actionmap.destinations by the slug")


def test_the_packaged_fixture_passes_validate_and_test_uninstalled(cli) -> None:
    """The package folder is actionmap_acme, its slug acme: as the guide lays a plugin out."""
    folder = FIXTURE / "actionmap_acme"
    run = cli("validate", str(folder))
    assert run.code == 0 and run.out == f"{folder}: ok (destination acme, actions: ping)\n", run.err
    run = cli("test", str(folder))
    assert run.code == 0 and run.out.endswith("1 passed, 0 failed\n"), run.out


@pytest.mark.parametrize(
    ("edit", "at"),
    [
        ("Bearer {{settings.token}}", "token"),  # the undeclared name
        ("Bearer {{settings.api_token}} {{ nope }}", "nope"),  # a placeholder that is no setting: its text
        ("Bearer {{settings.api_token", "{{"),  # an unclosed placeholder: its braces
    ],
)
def test_a_plugin_template_error_names_the_column_of_the_placeholder(tmp_path: Path, edit: str, at: str) -> None:
    folder = _copy_plugin(tmp_path)
    path = folder / "destination.yaml"
    text = path.read_text(encoding="utf-8").replace("Bearer {{settings.api_token}}", edit)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_destination(folder, "metronome")
    start = text.index(edit)
    line = text[:start].count("\n") + 1
    column = start - text.rfind("\n", 0, start) + edit.index(at)
    assert str(caught.value).startswith(f"{path}:{line}:{column}: the template at column {edit.rindex('{{') + 1}: ")


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture package really installed (pip, no network) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(FIXTURE)],
        check=True,
        capture_output=True,
    )
    return target


def _actionmap(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, capture_output=True, text=True, cwd=REPO)


def test_an_installed_plugin_is_found_through_its_entry_point(acme_site: Path) -> None:
    assert (acme_site / "actionmap_acme" / "actions" / "ping.yaml").is_file()
    run = _actionmap(acme_site, "destinations")
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert set(rows) >= {"acme", "metronome"}
    assert "ping" in rows["acme"] and "entry point acme" in rows["acme"] and "actionmap-acme" in rows["acme"]
    docs = _actionmap(acme_site, "docs", "acme")
    assert docs.returncode == 0 and "# Acme Analytics" in docs.stdout


def test_an_installed_plugin_works_by_its_slug_and_its_folder(acme_site: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "acme.yaml"
    mapping.write_text("destination: acme\nsettings: {endpoint: https://pings.acme.example}\n"
                       "subscriptions: [{name: Pings, action: ping}]\n")
    for args in (("validate", str(mapping)), ("test", str(acme_site / "actionmap_acme")), ("validate", str(acme_site / "actionmap_acme"))):
        run = _actionmap(acme_site, *args)
        assert run.returncode == 0, (args, run.stdout, run.stderr)
    paths = orjson.loads(_actionmap(acme_site, "paths", "--json").stdout)
    assert paths["plugins"]["acme"] == str(acme_site / "actionmap_acme")


def test_an_entry_point_not_named_by_the_slug_is_an_error_naming_both(tmp_path: Path) -> None:
    package = tmp_path / "package"
    shutil.copytree(FIXTURE, package)
    pyproject = package / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('acme = "actionmap_acme"', 'acme_pings = "actionmap_acme"'))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
                    str(package)], check=True, capture_output=True)
    run = _actionmap(site, "destinations")
    assert run.returncode == 1
    assert 'slug "acme" does not match the name "acme_pings" the plugin is installed as (entry point acme_pings = ' in run.stderr
    assert f"{site / 'actionmap_acme' / 'destination.yaml'}:2:7: " in run.stderr


def test_paths_names_each_shipped_folder_and_plugin(cli) -> None:
    text = cli("paths")
    assert text.code == 0
    lines = dict(line.split(": ", 1) for line in text.out.splitlines())
    as_json = orjson.loads(cli("paths", "--json").out)
    assert {name: lines[name] for name in ("mappings", "examples", "schemas", "docs")} == {
        name: str(REPO / name) for name in ("mappings", "examples", "schemas", "docs")} == {
        name: as_json[name] for name in ("mappings", "examples", "schemas", "docs")}
    assert lines["plugin metronome"] == as_json["plugins"]["metronome"] == str(REPO / "destinations" / "metronome")
    assert set(as_json["plugins"]) == {name.removeprefix("plugin ") for name in lines if name.startswith("plugin ")}
    assert (Path(lines["mappings"]) / "metronome.yaml").is_file()


def test_a_plugin_that_cannot_be_imported_is_an_error_not_a_skip(acme_site: Path, tmp_path: Path) -> None:
    broken = tmp_path / "site"
    shutil.copytree(acme_site, broken)
    (broken / "actionmap_acme" / "__init__.py").write_text("raise RuntimeError('half-installed')\n")
    run = _actionmap(broken, "destinations")
    assert run.returncode == 1
    assert "cannot load the plugin from entry point acme" in run.stderr and "half-installed" in run.stderr


def test_a_built_wheel_carries_plugins_schemas_and_mappings(tmp_path: Path) -> None:
    """A non-editable install works: the YAML, schemas and default mappings travel as package data."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("actionmap-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    for needed in ("destinations/metronome/destination.yaml", "destinations/metronome/actions/send_event.yaml",
                   "engine/_data/schemas/mapping.schema.json", "engine/_data/mappings/metronome.yaml"):
        assert needed in names
    env = dict(os.environ, PYTHONPATH=str(site), METRONOME_API_TOKEN="t")
    probe = "import engine.resources as r, engine; print(engine.__file__); print(r.data_path('schemas'))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert str(site) in out.splitlines()[0] and out.splitlines()[1].endswith("_data/schemas")
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(site / "engine/_data/mappings/metronome.yaml")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    paths = subprocess.run([sys.executable, "-m", "engine.cli", "paths", "--json"], env=env, capture_output=True, text=True,
                           cwd=tmp_path, check=True).stdout
    shipped = orjson.loads(paths)
    assert {name: shipped[name] for name in ("mappings", "examples", "schemas", "docs")} == {
        name: str(site / "engine" / "_data" / name) for name in ("mappings", "examples", "schemas", "docs")}
    assert (Path(shipped["mappings"]) / "metronome.yaml").is_file()


def test_the_readme_key_reference_is_generated_from_the_schemas() -> None:
    from engine.tools.docs import REFERENCE_BEGIN, REFERENCE_END, key_reference_markdown

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    region = readme[readme.index(REFERENCE_BEGIN) : readme.index(REFERENCE_END) + len(REFERENCE_END)]
    assert region + "\n" == key_reference_markdown(), "README is stale: run `actionmap docs --update README.md`"
    for key in ("`settings.<name>.secret`", "`fields.<name>.coerce`", "`subscriptions[].trigger`", "`tests[].expect[].status`"):
        assert key in region


def test_docs_update_rewrites_a_stale_reference(cli, tmp_path: Path) -> None:
    from engine.tools.docs import REFERENCE_BEGIN, REFERENCE_END

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{REFERENCE_BEGIN}\nSTALE-TEXT\n{REFERENCE_END}\ntail\n")
    assert cli("docs", "--update", str(readme)).code == 0
    text = readme.read_text()
    assert "STALE-TEXT" not in text and "`destination`" in text and text.endswith(f"{REFERENCE_END}\ntail\n")


def test_the_engine_finds_plugins_only_through_discovery() -> None:
    """Issue 14: no engine module imports a plugin by name; the built-ins are entry points like any other."""
    importers = [str(path.relative_to(REPO)) for path in (REPO / "engine").rglob("*.py")
                 if any(line.startswith(("import destinations", "from destinations")) for line in path.read_text().splitlines())]
    assert importers == []
    assert {slug: origin for slug, (_, origin) in plugin_folders().items() if slug in ("metronome", "webhook")} == {
        "metronome": "built-in", "webhook": "built-in"}


def test_an_emulator_is_found_beside_its_plugin() -> None:
    module = load_emulator("metronome")
    with module.Emulator({"t-0123456789"}) as emulator:
        assert emulator.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(ConfigError, match="no emulator for 'webhook'; available: lago, metronome, openmeter, orb, stripe"):
        load_emulator("webhook")
