"""``actionmap new-destination NAME``: a plugin folder that validates and passes its test at once.

The files are written from small templates rather than copied from a real plugin,
so the scaffold shows every part a plugin developer edits next: settings with a
secret, authentication, a credential check, one action with two fields, and a
data-only test of the request it sends.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import ConfigError

_SLUG = re.compile(r"[a-z][a-z0-9_]*")

_DESTINATION = """\
# Every key: `actionmap docs --keys`. Check this folder: `actionmap validate {folder}`.
name: {title} (Actions)
slug: {slug}
description: Send events to {title}.
settings:
  api_key:
    type: string
    label: API Key
    description: Your {title} API key
    required: true
    secret: true
  base_url:
    type: string
    label: Base URL
    description: Where {title}'s API is served.
    default: https://api.{slug}.example
    format: uri
authentication:
  headers:
    Authorization: Bearer {{{{settings.api_key}}}}
credential_check:
  request: {{method: GET, url: "{{{{settings.base_url}}}}/v1/me"}}
  valid: [200]
  invalid: [401, 403]
actions: [send]
presets:
  - name: Send track events
    action: send
    trigger: type = "track"
"""

_ACTION = """\
title: Send
description: Send one event to {title}
default_trigger: type = "track"
fields:
  id:
    type: string
    required: true
    maxLength: 128
    description: The event's id, for deduplication on {title}'s side.
    default: $.messageId
  name:
    type: string
    required: true
    description: What happened.
    default: $.event
  user:
    type: string
    coerce: [number_to_string]
    description: Who did it.
    default:
      "@coalesce": [$.userId, $.anonymousId]
batching:
  max_batch_size: 50
request:
  method: POST
  url: "{{{{settings.base_url}}}}/v1/events"
  body: batch
"""

_TEST = """\
# Run with `actionmap test {folder}`: the event must become exactly this request.
action: send
cases:
  - name: a track event becomes one request
    settings: {{api_key: key-for-tests-only}}
    event: {{type: track, messageId: m-1, userId: 42, event: Signed Up}}
    request:
      method: POST
      url: https://api.{slug}.example/v1/events
      headers: {{Authorization: Bearer ********}}
      body: [{{id: m-1, name: Signed Up, user: "42"}}]
"""


def new_destination(name: str, parent: Path) -> Path:
    """Write the plugin folder ``parent/<slug>``; refuses to overwrite anything."""
    slug = name.strip().lower().replace("-", "_").replace(" ", "_")
    if not _SLUG.fullmatch(slug):
        raise ConfigError(f"{name!r} cannot be a plugin slug: use letters, digits and _ and start with a letter")
    folder = parent / slug
    if folder.exists():
        raise ConfigError(f"{folder} already exists; choose another name or remove it")
    title = slug.replace("_", " ").title()
    values = {"slug": slug, "title": title, "folder": folder}
    (folder / "actions").mkdir(parents=True)
    (folder / "tests").mkdir()
    (folder / "__init__.py").write_text(f'"""The {title} destination plugin for actionmap."""\n', encoding="utf-8")
    (folder / "destination.yaml").write_text(_DESTINATION.format(**values), encoding="utf-8")
    (folder / "actions" / "send.yaml").write_text(_ACTION.format(**values), encoding="utf-8")
    (folder / "tests" / "send.yaml").write_text(_TEST.format(**values), encoding="utf-8")
    return folder
