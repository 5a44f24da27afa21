"""actionmap's engine: load a mapping file once, then map and send events.

    >>> import engine
    >>> mapping = engine.load_mapping("mappings/metronome.yaml")
    >>> [o.payload for o in engine.Pipeline(mapping).run(event)]     # preview: no network
    >>> engine.send_events(mapping, events, dead_letters="dead.ndjson")  # deliver: a Summary
"""

from engine.delivery import RetryPolicy, Sender, TokenBucket
from engine.errors import ActionmapError, ConfigError, Location
from engine.config.mappingfile import MappingFile, load_mapping_file as load_mapping
from engine.lang.missing import MISSING
from engine.pipeline import Outcome, Pipeline
from engine.runtime.send import Summary, send_events

__all__ = [
    "ActionmapError", "ConfigError", "Location", "MappingFile", "load_mapping", "MISSING", "Outcome", "Pipeline",
    "RetryPolicy", "Sender", "Summary", "TokenBucket", "send_events",
]
