"""Built-in demo presets (YAML)."""
