"""Runs the tests of tests/zoo_vision.py (pytest collects only test_*.py files); its CASES are
checked against their twins by tests/test_specs.py."""
from zoo_vision import test_render_svg_and_summary_json  # noqa: F401
