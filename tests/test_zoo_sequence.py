"""Runs the tests of tests/zoo_sequence.py (pytest collects only test_*.py files); its CASES are
checked against their twins by tests/test_specs.py."""
from zoo_sequence import (  # noqa: F401
    test_bert_base_encoder_is_bert_model_sized,
    test_bert_pre_norm_matches_twin,
    test_denoising_autoencoder_corrupts_only_while_training,
    test_header_gives_each_models_parameter_count,
    test_render_and_summary,
    test_seq2seq_decoder_is_causal,
    test_seq2seq_embedding_is_shared_and_tied,
)
