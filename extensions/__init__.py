"""Optional drivers, sources and sinks; each module imports its heavy dependency itself."""
