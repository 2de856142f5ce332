"""The zoo's sequence and generative models (issue #6): independent PyTorch twins and their cases.

tests/test_specs.py runs every case in CASES (parameter counts, meta-device shapes and
layer calls, readable state-dict keys and, with `small`, a CPU forward against the twin).
The twins use plain torch.nn and follow the papers and the common PyTorch implementations
each spec names (the PyTorch DCGAN example, AntixK/PyTorch-VAE, Hugging Face's BERT,
kuangliu/pytorch-cifar), not dslc's output. The tests at the end render every model of
these specs, summarize it as JSON, and check the few facts the cases cannot state.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_case import SPECS, Case, CifarResNet18Twin, check_header_counts, render_and_summary

import dslc

TOKENS = (("B", "T"), torch.long)
SOURCE = (("B", "S"), torch.long)
LABELS = (("B",), torch.long)


# ====================================================================== recurrent (specs/rnn.dl)


class RNNClassifierTwin(nn.Module):
    def __init__(self, vocab: int = 1000, embed: int = 64, hidden: int = 128, classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = nn.RNN(embed, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, tokens):
        _, h = self.rnn(self.embedding(tokens))
        return self.fc(h[-1])


class StackedRNNClassifierTwin(nn.Module):
    """A stacked (bidirectional) LSTM or GRU; the top layer's final states are classified."""

    def __init__(self, cell: type, vocab: int = 1000, embed: int = 64, hidden: int = 128, layers: int = 2,
                 bidirectional: bool = True, dropout: float = 0.5, classes: int = 2):
        super().__init__()
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = cell(embed, hidden, num_layers=layers, bidirectional=bidirectional, dropout=dropout,
                        batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, tokens):
        _, h = self.rnn(self.embedding(tokens))
        if isinstance(h, tuple):  # the LSTM's (h_n, c_n)
            h = h[0]
        last = torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1]
        return self.fc(self.dropout(last))


class SequenceTaggerTwin(nn.Module):
    """A BiLSTM tagger (Huang et al. 2015 without the CRF): per-token tag logits."""

    def __init__(self, vocab: int = 1000, embed: int = 64, hidden: int = 128, tags: int = 17, dropout: float = 0.5):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, bidirectional=True, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, tags)

    def forward(self, tokens):
        out, _ = self.lstm(self.dropout(self.embedding(tokens)))
        return self.fc(self.dropout(out))


# ====================================================================== BERT (specs/bert.dl)


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, context: int, segments: int, dim: int, dropout: float):
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(context, dim)
        self.segment = nn.Embedding(segments, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens, segment_ids):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.dropout(self.norm(self.word(tokens) + self.position(positions) + self.segment(segment_ids)))


class BertLayer(nn.Module):
    """Hugging Face's BertLayer, with nn.MultiheadAttention for its q/k/v/output projections;
    post-LN as in BERT, or pre-LN (Xiong et al. 2020)."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.pre_norm = pre_norm
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(dim, eps=1e-12)
        self.intermediate = nn.Linear(dim, ff)
        self.output = nn.Linear(ff, dim)
        self.output_norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def _attend(self, x):
        return self.dropout(self.attention(x, x, x, need_weights=False)[0])

    def _feed_forward(self, x):
        return self.dropout(self.output(F.gelu(self.intermediate(x))))

    def forward(self, x):
        if self.pre_norm:
            x = x + self._attend(self.attention_norm(x))
            return x + self._feed_forward(self.output_norm(x))
        x = self.attention_norm(x + self._attend(x))
        return self.output_norm(x + self._feed_forward(x))


class BertClassifierTwin(nn.Module):
    """BertForSequenceClassification: embeddings, encoder, pooler (tanh over [CLS]), classifier."""

    def __init__(self, vocab: int = 30522, context: int = 512, segments: int = 2, dim: int = 768, depth: int = 12,
                 heads: int = 12, ff: int | None = None, dropout: float = 0.1, pre_norm: bool = False,
                 classes: int = 2):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, context, segments, dim, dropout)
        self.layers = nn.ModuleList([BertLayer(dim, heads, ff or 4 * dim, dropout, pre_norm) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(dim, eps=1e-12) if pre_norm else None
        self.pooler = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, classes)

    def forward(self, tokens, segment_ids):
        h = self.embeddings(tokens, segment_ids)
        for layer in self.layers:
            h = layer(h)
        if self.final_norm is not None:
            h = self.final_norm(h)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return self.classifier(self.dropout(pooled))


def bert_key(key: str) -> str:
    """A BertClassifier state-dict key in BertClassifierTwin's names."""
    for mine, theirs in ((".attn.", ".attention."), (".norm1.", ".attention_norm."), (".fc1.", ".intermediate."),
                         (".fc2.", ".output."), (".norm2.", ".output_norm.")):
        key = key.replace(mine, theirs)
    for mine, theirs in (("word_embed.", "embeddings.word."), ("pos_embed.", "embeddings.position."),
                         ("segment_embed.", "embeddings.segment."), ("embed_norm.", "embeddings.norm.")):
        if key.startswith(mine):
            key = theirs + key[len(mine):]
    return key


# ====================================================================== encoder–decoder (specs/seq2seq.dl)


class CausalSelfAttentionTwin(nn.Module):
    """Masked multi-head self-attention (nanoGPT's form): one q/k/v projection, then the output's."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class DecoderLayerTwin(nn.Module):
    """The Transformer's post-LN decoder layer: masked self-attention, cross-attention, feed-forward."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = CausalSelfAttentionTwin(dim, heads, dropout)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory):
        x = self.norm1(x + self.dropout(self.self_attn(x)))
        x = self.norm2(x + self.dropout(self.cross_attn(x, memory, memory, need_weights=False)[0]))
        return self.norm3(x + self.dropout(self.linear2(F.relu(self.linear1(x)))))


class Seq2SeqTransformerTwin(nn.Module):
    """Vaswani et al.'s encoder–decoder: torch's own nn.TransformerEncoderLayer for the encoder,
    a shared √dim-scaled embedding tied to the output projection, learned positions."""

    def __init__(self, vocab: int = 37000, context: int = 512, dim: int = 512, depth: int = 6, heads: int = 8,
                 ff: int | None = None, dropout: float = 0.1):
        super().__init__()
        ff = ff or 4 * dim
        self.scale = math.sqrt(dim)
        self.embed = nn.Embedding(vocab, dim)
        self.source_pos = nn.Embedding(context, dim)
        self.target_pos = nn.Embedding(context, dim)
        self.encoder = nn.ModuleList([nn.TransformerEncoderLayer(dim, heads, ff, dropout, activation="relu",
                                                                 batch_first=True) for _ in range(depth)])
        self.decoder = nn.ModuleList([DecoderLayerTwin(dim, heads, ff, dropout) for _ in range(depth)])
        self.dropout = nn.Dropout(dropout)

    def _embed(self, tokens, pos):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.dropout(self.embed(tokens) * self.scale + pos(positions))

    def forward(self, source, target):
        memory = self._embed(source, self.source_pos)
        for layer in self.encoder:
            memory = layer(memory)
        h = self._embed(target, self.target_pos)
        for layer in self.decoder:
            h = layer(h, memory)
        return F.linear(h, self.embed.weight)  # the output projection is the embedding


def seq2seq_key(key: str) -> str:
    """A Seq2SeqTransformer state-dict key in Seq2SeqTransformerTwin's names."""
    key = key.replace(".causal_self_attention.fc1.", ".self_attn.qkv.")
    key = key.replace(".causal_self_attention.fc2.", ".self_attn.proj.")
    key = key.replace(".attn.", ".self_attn." if key.startswith("encoder.") else ".cross_attn.")
    return key.replace(".fc1.", ".linear1.").replace(".fc2.", ".linear2.")


# ====================================================================== autoencoders (specs/autoencoder.dl)


class AutoencoderTwin(nn.Module):
    """A fully connected autoencoder; `corruption` > 0 masks inputs while training (Vincent et al. 2008)."""

    def __init__(self, input_dim: int = 784, hidden: int = 256, latent: int = 32, corruption: float = 0.0):
        super().__init__()
        self.corrupt = nn.Dropout(corruption) if corruption > 0 else nn.Identity()
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, input_dim), nn.Sigmoid())

    def forward(self, x):
        code = self.encoder(self.corrupt(x))
        return self.decoder(code), code


def denoising_autoencoder_twin(input_dim: int = 784, hidden: int = 256, latent: int = 32,
                               corruption: float = 0.25) -> nn.Module:
    return AutoencoderTwin(input_dim, hidden, latent, corruption)


# ====================================================================== convolutional VAE (specs/conv_vae.dl)


class ConvVAETwin(nn.Module):
    """AntixK/PyTorch-VAE's VanillaVAE for 64×64 images (its reparameterization gives mu at inference here,
    as the VAE in tests/test_specs.py does)."""

    def __init__(self, channels: int = 3, latent: int = 128, hidden=(32, 64, 128, 256, 512)):
        super().__init__()
        hidden, modules, in_channels = list(hidden), [], channels
        for h_dim in hidden:
            modules.append(nn.Sequential(nn.Conv2d(in_channels, h_dim, kernel_size=3, stride=2, padding=1),
                                         nn.BatchNorm2d(h_dim), nn.LeakyReLU()))
            in_channels = h_dim
        self.encoder = nn.Sequential(*modules)
        self.fc_mu = nn.Linear(hidden[-1] * 4, latent)
        self.fc_var = nn.Linear(hidden[-1] * 4, latent)
        self.decoder_input = nn.Linear(latent, hidden[-1] * 4)
        hidden.reverse()
        self.decoder = nn.Sequential(*[
            nn.Sequential(nn.ConvTranspose2d(hidden[i], hidden[i + 1], kernel_size=3, stride=2, padding=1,
                                             output_padding=1), nn.BatchNorm2d(hidden[i + 1]), nn.LeakyReLU())
            for i in range(len(hidden) - 1)])
        self.final_layer = nn.Sequential(
            nn.ConvTranspose2d(hidden[-1], hidden[-1], kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(hidden[-1]), nn.LeakyReLU(),
            nn.Conv2d(hidden[-1], channels, kernel_size=3, padding=1), nn.Tanh())
        self.top = hidden[0]

    def forward(self, x):
        result = torch.flatten(self.encoder(x), start_dim=1)
        mu, log_var = self.fc_mu(result), self.fc_var(result)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if self.training else mu
        result = self.decoder_input(z).view(-1, self.top, 2, 2)
        return self.final_layer(self.decoder(result)), mu, log_var


# ====================================================================== GANs (specs/dcgan.dl)


class DCGANGeneratorTwin(nn.Module):
    """The PyTorch DCGAN example's generator (nz = latent, ngf = features, nc = channels)."""

    def __init__(self, latent: int = 100, features: int = 64, channels: int = 3):
        super().__init__()
        ngf = features
        self.main = nn.Sequential(
            nn.ConvTranspose2d(latent, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminatorTwin(nn.Module):
    """The PyTorch DCGAN example's discriminator (ndf = features); one probability per image, [B, 1]."""

    def __init__(self, features: int = 64, channels: int = 3):
        super().__init__()
        ndf = features
        self.main = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1)


class ConditionalGeneratorTwin(nn.Module):
    """eriklindernoren/PyTorch-GAN's cgan generator (batch norms with torch's default eps)."""

    def __init__(self, latent: int = 100, classes: int = 10, out: int = 784):
        super().__init__()
        self.label_emb = nn.Embedding(classes, classes)

        def block(in_feat, out_feat, normalize=True):
            layers = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat))
            return layers + [nn.LeakyReLU(0.2, inplace=True)]
        self.model = nn.Sequential(*block(latent + classes, 128, normalize=False), *block(128, 256),
                                   *block(256, 512), *block(512, 1024), nn.Linear(1024, out), nn.Tanh())

    def forward(self, noise, labels):
        return self.model(torch.cat((self.label_emb(labels), noise), -1))


class ConditionalDiscriminatorTwin(nn.Module):
    """eriklindernoren/PyTorch-GAN's cgan discriminator, with a sigmoid for the bce loss."""

    def __init__(self, inp: int = 784, classes: int = 10):
        super().__init__()
        self.label_embedding = nn.Embedding(classes, classes)
        self.model = nn.Sequential(
            nn.Linear(classes + inp, 512), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 512), nn.Dropout(0.4), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 512), nn.Dropout(0.4), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 1), nn.Sigmoid())

    def forward(self, img, labels):
        return self.model(torch.cat((img.view(img.size(0), -1), self.label_embedding(labels)), -1))


# ====================================================================== SimCLR (specs/simclr.dl)


class SimCLRTwin(nn.Module):
    """SimCLR: h = f(x), the ResNet's features; z = g(h), the projection head (sthalles/SimCLR's MLP)."""

    def __init__(self, proj: int = 128):
        super().__init__()
        self.backbone = CifarResNet18Twin(classes=None)
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, proj))

    def forward(self, x):
        h = self.backbone(x)
        return h, self.head(h)


# ====================================================================== distillation (specs/distill.dl)


def teacher_twin(hidden: int = 1200, input_dropout: float = 0.2, dropout: float = 0.5, classes: int = 10):
    """Hinton et al.'s MNIST teacher: 784-1200-1200-10 with dropout on the input and hidden layers."""
    return nn.Sequential(nn.Flatten(), nn.Dropout(input_dropout), nn.Linear(784, hidden), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, classes))


def student_twin(hidden: int = 800, classes: int = 10):
    """Hinton et al.'s MNIST student: 784-800-800-10, no regularization."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


# ====================================================================== the cases

SMALL_BERT = {"vocab": 100, "context": 16, "dim": 32, "depth": 2, "heads": 4}

CASES = [
    Case("rnn.dl", "RNNClassifier", RNNClassifierTwin, (TOKENS,), small={"hidden": 32}),
    Case("rnn.dl", "StackedLSTMClassifier", lambda **kw: StackedRNNClassifierTwin(nn.LSTM, **kw), (TOKENS,),
         small={"hidden": 32}),
    Case("rnn.dl", "StackedGRUClassifier", lambda **kw: StackedRNNClassifierTwin(nn.GRU, **kw), (TOKENS,),
         small={"hidden": 32, "layers": 3}),
    Case("rnn.dl", "SequenceTagger", SequenceTaggerTwin, (TOKENS,), small={"hidden": 32}),
    # the CPU run draws segment ids below 10, as it draws token ids
    Case("bert.dl", "BertClassifier", BertClassifierTwin, (TOKENS, TOKENS),
         names=("word_embed.weight", "pos_embed.weight", "segment_embed.weight", "embed_norm.weight",
                "pooler.weight", "classifier.weight"),
         small={**SMALL_BERT, "segments": 10}, rename=bert_key),
    Case("seq2seq.dl", "Seq2SeqTransformer", Seq2SeqTransformerTwin, (SOURCE, TOKENS),
         names=("embed.weight", "source_pos.weight", "target_pos.weight"),
         small={"vocab": 50, "context": 16, "dim": 32, "depth": 2, "heads": 4}, rename=seq2seq_key),
    # the encoder and decoder are nn.Sequential blocks, keyed as the twin's (loaded by name)
    Case("autoencoder.dl", "Autoencoder", AutoencoderTwin, (("B", 784),),
         names=("encoder.0.weight", "decoder.2.bias"), small={}, rename=lambda key: key),
    Case("autoencoder.dl", "DenoisingAutoencoder", denoising_autoencoder_twin, (("B", 784),),
         names=("encoder.0.weight", "decoder.2.bias"), small={}, rename=lambda key: key),
    Case("conv_vae.dl", "ConvVAE", ConvVAETwin, (("B", 3, 64, 64),),
         names=("fc_mu.weight", "fc_var.weight", "decoder_input.weight"),
         small={"latent": 16, "hidden": [8, 8, 16, 16, 24]}),
    Case("dcgan.dl", "DCGANGenerator", DCGANGeneratorTwin, (("B", 100),), small={"features": 8}),
    Case("dcgan.dl", "DCGANDiscriminator", DCGANDiscriminatorTwin, (("B", 3, 64, 64),), small={"features": 8}),
    Case("dcgan.dl", "ConditionalGenerator", ConditionalGeneratorTwin, (("B", 100), LABELS),
         names=("label_embed.weight",), small={}),
    Case("dcgan.dl", "ConditionalDiscriminator", ConditionalDiscriminatorTwin, (("B", 784), LABELS),
         names=("label_embed.weight",), small={}),
    Case("simclr.dl", "SimCLR", SimCLRTwin, (("B", 3, 32, 32),), names=("proj1.weight", "proj2.weight"),
         small={}),
    Case("simclr.dl", "ResNet18", CifarResNet18Twin, (("B", 3, 32, 32),)),  # imported from cifar_resnet.dl
    Case("distill.dl", "Teacher", teacher_twin, (("B", 1, 28, 28),), small={}, rename=lambda key: key),
    Case("distill.dl", "Student", student_twin, (("B", 1, 28, 28),), small={}, rename=lambda key: key),
]


# ====================================================================== tests of these specs

MODELS = sorted({(c.file, c.model) for c in CASES})


@pytest.mark.parametrize("file,model", MODELS, ids=[f"{f[:-3]}-{m}" for f, m in MODELS])
def test_render_and_summary(file, model, tmp_path):
    render_and_summary(file, model, tmp_path)


@pytest.mark.parametrize("file", sorted({f for f, _ in MODELS}))
def test_header_gives_each_models_parameter_count(file):
    check_header_counts(file)


def _forward_against_twin(file: str, model: str, twin: nn.Module, params: dict, rename, inputs: list):
    """dslc's module and `twin` with the same (livened) weights give the same outputs."""
    from test_specs import copy_weights, liven  # at run time: test_specs imports this module
    mine = dslc.load(os.path.join(SPECS, file)).build(model, **params).eval()
    liven(mine)
    copy_weights(mine, twin.eval(), rename)
    with torch.no_grad():
        got, want = mine(*inputs), twin(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    return mine


def test_bert_pre_norm_matches_twin():
    """pre_norm=true: each layer normalizes its input, and a final layer norm follows the last."""
    params = {**SMALL_BERT, "pre_norm": True}
    tokens = torch.randint(0, 100, (2, 7))
    mine = _forward_against_twin("bert.dl", "BertClassifier", BertClassifierTwin(**params), params, bert_key,
                                 [tokens, torch.randint(0, 2, (2, 7))])
    assert "final_norm.weight" in mine.state_dict()


def test_bert_base_encoder_is_bert_model_sized():
    """Without its 2-class head, BERT-base here has Hugging Face's BertModel's 109,482,240 parameters
    (its separate q, k, v projections are nn.MultiheadAttention's one in_proj: the same count)."""
    with torch.device("meta"):
        net = dslc.load(os.path.join(SPECS, "bert.dl")).build("BertClassifier")
    total = sum(p.numel() for p in net.parameters())
    assert total - sum(p.numel() for p in net.classifier.parameters()) == 109_482_240


def test_seq2seq_embedding_is_shared_and_tied():
    """Source, target and output projection share one vocab × dim matrix."""
    with torch.device("meta"):
        net = dslc.load(os.path.join(SPECS, "seq2seq.dl")).build("Seq2SeqTransformer")
    assert [k for k, p in net.named_parameters() if p.shape == (37000, 512)] == ["embed.weight"]


def test_seq2seq_decoder_is_causal():
    """Changing a later target token never changes the logits at earlier positions."""
    net = dslc.load(os.path.join(SPECS, "seq2seq.dl")).build(
        "Seq2SeqTransformer", vocab=50, context=16, dim=32, depth=2, heads=4).eval()
    source, target = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 5))
    changed = target.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 50
    with torch.no_grad():
        a, b = net(source, target), net(source, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_denoising_autoencoder_corrupts_only_while_training():
    net = dslc.load(os.path.join(SPECS, "autoencoder.dl")).build("DenoisingAutoencoder")
    x = torch.rand(4, 784)
    with torch.no_grad():
        net.eval()
        clean = net(x)[0]
        torch.testing.assert_close(net(x)[0], clean)
        net.train()
        torch.manual_seed(0)
        assert not torch.allclose(net(x)[0], clean)
