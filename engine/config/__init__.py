"""Configuration as a person writes it: YAML with a position for every node, the JSON
Schemas, plugin discovery and loading, and the operator's mapping files with their
settings and ``${VAR}`` references; every problem a located error."""
