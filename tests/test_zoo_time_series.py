"""Runs the tests of tests/zoo_time_series.py (pytest collects only test_*.py files); its CASES are
checked against their twins by tests/test_specs.py."""
from zoo_time_series import (  # noqa: F401
    test_a_state_that_grows_is_a_clean_diagnostic,
    test_sine_forecaster_is_bit_equal_to_its_twin,
    test_sine_forecaster_is_one_loop_and_learns_through_it,
    test_sine_forecaster_summary_counts_the_steps,
)
