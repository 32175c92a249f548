"""The source of truth (config/stack.toml), the configuration resolved from it, and the
files rendered from it. Reads and renders; never runs anything."""
