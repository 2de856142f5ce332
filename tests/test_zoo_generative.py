"""Runs the tests of tests/zoo_generative.py (pytest collects only test_*.py files); its CASES are
checked against their twins by tests/test_specs.py."""
from zoo_generative import (  # noqa: F401
    test_clip_embeddings_are_unit_vectors,
    test_clip_logit_scale_starts_at_the_papers_temperature,
    test_clip_loss_checks_in_a_plan,
    test_clip_text_tower_is_causal,
    test_clip_vit_b32_is_openai_sized,
    test_ddpm_cifar10_is_paper_sized,
    test_ddpm_timestep_embedding_matches_at_real_timesteps,
    test_header_gives_each_models_parameter_count,
    test_render_and_summary,
)
