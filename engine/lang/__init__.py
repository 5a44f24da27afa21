"""The languages, in the order an event meets them: JSONPath and JMESPath read values,
FQL triggers pick subscriptions, mappings (with templates and Liquid) build payloads,
fields check them. Each compiles once at load; only closures run per event."""
