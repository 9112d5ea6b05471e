"""mai-tools' desktop bundle: its manifest, entry point and build script (not part of the wheel)."""
