"""The tools around the engine: running mapping and plugin tests, documentation pages, the plugin scaffold, the demo."""
