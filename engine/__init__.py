"""actionmap's engine: load a mapping file once, then map (and later send) events.

    >>> import engine
    >>> mapping = engine.load_mapping("mappings/metronome.yaml")
    >>> [o.payload for o in engine.Pipeline(mapping).run(event)]
"""

from engine.errors import ActionmapError, ConfigError, Location
from engine.mappingfile import MappingFile, load_mapping_file as load_mapping
from engine.missing import MISSING
from engine.pipeline import Outcome, Pipeline

__all__ = ["ActionmapError", "ConfigError", "Location", "MappingFile", "load_mapping", "MISSING", "Outcome", "Pipeline"]
