"""The languages, in the order an event meets them: JSONPath and JMESPath read values,
FQL triggers pick subscriptions, mappings (with Liquid) build payloads, fields check them;
``template`` is the one compiler of ``{{…}}`` templates, a mapping's and a plugin's request's.
Each compiles once at load; only closures run per event."""
