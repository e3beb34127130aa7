# Makes conf/ importable as the package ``hardneg.conf`` inside the wheel (see pyproject.toml).
