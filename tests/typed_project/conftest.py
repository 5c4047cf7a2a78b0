"""typed_app.py is checked by mypy (tests/packaging/test_typed_project.py), never collected or imported by pytest."""

collect_ignore = ["typed_app.py"]
