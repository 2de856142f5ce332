"""Runs the tests of tests/zoo_vision.py (pytest collects only test_*.py files); its CASES are
checked against their twins by tests/test_specs.py."""
from zoo_vision import (  # noqa: F401
    test_render_svg_and_summary_json,
    test_style_transfer_state_dicts_load_both_ways_and_forward_is_bit_equal,
)
