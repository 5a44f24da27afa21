"""Markdown documentation of a destination, as a documentation site would publish it."""

from __future__ import annotations

from engine.definitions import Destination


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: object) -> str:
    return f"`{_cell(value)}`" if value not in (None, "") else ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _trigger_text(trigger: object) -> str:
    return trigger if isinstance(trigger, str) else f"jmespath: {trigger['jmespath']}"  # type: ignore[index]


def destination_markdown(dest: Destination) -> str:
    """The page for one destination: settings, actions, and each action's fields."""
    out = [f"# {dest.name}", "", dest.description, "", f"Slug: `{dest.slug}` ({dest.origin})", "", "## Settings", ""]
    out += _table(
        ["Setting", "Label", "Type", "Required", "Default", "Description"],
        [
            [
                _code(s.name),
                _cell(s.label),
                s.type + (" (secret)" if s.secret else "") + (f", {s.format}" if s.format else ""),
                "yes" if s.required else "no",
                _code(s.default),
                _cell(s.description),
            ]
            for s in dest.settings.values()
        ],
    )
    out += ["", "## Actions", ""]
    out += _table(
        ["Action", "Title", "Default trigger", "Description"],
        [
            [_code(a.slug), _cell(a.title), _code(_trigger_text(a.default_trigger.source)), _cell(a.description)]
            for a in dest.actions.values()
        ],
    )
    for action in dest.actions.values():
        request = action.request
        batching = (
            f"up to {action.max_batch_size} payloads per request, as a JSON array"
            if request.body == "batch"
            else "one payload per request"
        )
        out += [
            "",
            f"### {action.title} (`{action.slug}`)",
            "",
            action.description,
            "",
            f"- Default trigger: `{_cell(_trigger_text(action.default_trigger.source))}`",
            f"- Request: `{request.method} {request.url}`, {batching}",
            "",
        ]
        out += _table(
            ["Field", "Label", "Type", "Required", "Default mapping", "Description"],
            [
                [
                    _code(f["name"]),
                    _cell(f["label"]),
                    _cell(f["type"]),
                    "yes" if f["required"] else "no",
                    _code(action.defaults[f["name"]].source if f["name"] in action.defaults else None),
                    _cell(f["description"]),
                ]
                for f in action.checks.describe()
            ],
        )
    if dest.presets:
        out += ["", "## Presets", "", "Default subscriptions offered to a new mapping file:", ""]
        out += _table(
            ["Name", "Action", "Trigger"],
            [[_cell(p.name), _code(p.action), _code(_trigger_text(p.trigger) if p.trigger else None)] for p in dest.presets],
        )
    return "\n".join(out) + "\n"
