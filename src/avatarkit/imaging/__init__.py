"""Avatar pictures: the web UI's prompt syntax, presets, the renderer-ready check and provenance."""
