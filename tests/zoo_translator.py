"""The translator of specs/translator.dl (issue #13) and its independent twin: the PyTorch tutorial
"Language Translation with nn.Transformer and torchtext" (Seq2SeqTransformer, TokenEmbedding,
PositionalEncoding, create_mask), written out here batch first.

tests/test_specs.py runs CASES (parameter counts, meta shapes, layer calls, a CPU forward);
tests/test_translator.py loads the state dicts both ways, compares the forward passes bit for bit
on real padded batches of the `reverse` data set, and checks ONNX and training.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from zoo_case import Case

PAD_IDX = 0


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, emb_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.emb_size = emb_size

    def forward(self, tokens):
        return self.embedding(tokens.long()) * math.sqrt(self.emb_size)


class PositionalEncoding(nn.Module):
    """The tutorial's, batch first: the table is [maxlen, emb_size] and rows are positions."""

    def __init__(self, emb_size: int, dropout: float, maxlen: int = 5000):
        super().__init__()
        den = torch.exp(-torch.arange(0, emb_size, 2) * math.log(10000) / emb_size)
        pos = torch.arange(0, maxlen).reshape(maxlen, 1)
        pos_embedding = torch.zeros((maxlen, emb_size))
        pos_embedding[:, 0::2] = torch.sin(pos * den)
        pos_embedding[:, 1::2] = torch.cos(pos * den)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pos_embedding", pos_embedding)

    def forward(self, token_embedding):
        return self.dropout(token_embedding + self.pos_embedding[:token_embedding.size(1)])


def generate_square_subsequent_mask(sz: int, device) -> torch.Tensor:
    mask = (torch.triu(torch.ones((sz, sz), device=device)) == 1).transpose(0, 1)
    return mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, float(0.0))


def create_mask(src, tgt):
    """The tutorial's masks, batch first. Its src_mask is all false (it hides nothing), so it is
    left out, as the spec leaves it out."""
    tgt_mask = generate_square_subsequent_mask(tgt.shape[1], tgt.device)
    return tgt_mask, src == PAD_IDX, tgt == PAD_IDX


class TranslatorTwin(nn.Module):
    def __init__(self, src_vocab: int = 16, tgt_vocab: int = 16, emb_size: int = 512, nhead: int = 8,
                 num_encoder_layers: int = 3, num_decoder_layers: int = 3, dim_feedforward: int = 512,
                 dropout: float = 0.1, maxlen: int = 5000):
        super().__init__()
        self.transformer = nn.Transformer(d_model=emb_size, nhead=nhead, num_encoder_layers=num_encoder_layers,
                                          num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                                          dropout=dropout, batch_first=True)
        self.generator = nn.Linear(emb_size, tgt_vocab)
        self.src_tok_emb = TokenEmbedding(src_vocab, emb_size)
        self.tgt_tok_emb = TokenEmbedding(tgt_vocab, emb_size)
        self.positional_encoding = PositionalEncoding(emb_size, dropout=dropout, maxlen=maxlen)

    def forward(self, src, tgt):
        tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt)
        src_emb = self.positional_encoding(self.src_tok_emb(src))
        tgt_emb = self.positional_encoding(self.tgt_tok_emb(tgt))
        # tgt_is_causal: what nn.TransformerDecoder would find by comparing the mask with the causal one
        outs = self.transformer(src_emb, tgt_emb, None, tgt_mask, None, src_padding_mask, tgt_padding_mask,
                                src_padding_mask, tgt_is_causal=True)
        return self.generator(outs)


SMALL = {"emb_size": 32, "nhead": 4, "num_encoder_layers": 2, "num_decoder_layers": 2, "dim_feedforward": 64,
         "maxlen": 64}

CASES = [
    # the CPU run draws ids from 1 (tests/test_specs.py): a row of padding alone would be NaN in torch's eval path
    Case("translator.dl", "Translator", TranslatorTwin, ((("B", "S"), torch.long), (("B", "T"), torch.long)),
         names=("src_tok_emb.embedding.weight", "tgt_tok_emb.embedding.weight",
                "positional_encoding.pos_embedding", "transformer.encoder.norm.weight", "generator.weight"),
         small=SMALL, rename=lambda key: key),
]
