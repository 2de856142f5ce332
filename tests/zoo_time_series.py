"""The zoo's time-series model (issue #13): the LSTMCell sine-wave forecaster of pytorch/examples
(time_sequence_prediction), hand-written in PyTorch as that example writes it, and its cases.

The only difference from the example is where the cells live: dslc's `scan` runs a step block, so
the cells are the block's (`step.lstm1`, ...), and the twin keeps them in a `Step` module too."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_case import SPECS, Case

import dslc


class SineStep(nn.Module):
    def __init__(self, hidden: int = 51):
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)


class SineForecasterTwin(nn.Module):
    def __init__(self, hidden: int = 51, future: int = 0):
        super().__init__()
        self.step = SineStep(hidden)
        self.hidden, self.future = hidden, future

    def forward(self, input):
        outputs = []
        h_t = torch.zeros(input.size(0), self.hidden, dtype=input.dtype, device=input.device)
        c_t = torch.zeros(input.size(0), self.hidden, dtype=input.dtype, device=input.device)
        h_t2 = torch.zeros(input.size(0), self.hidden, dtype=input.dtype, device=input.device)
        c_t2 = torch.zeros(input.size(0), self.hidden, dtype=input.dtype, device=input.device)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.step.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.step.lstm2(h_t, (h_t2, c_t2))
            output = self.step.linear(h_t2)
            outputs += [output]
        for _ in range(self.future):  # feed its own output back
            h_t, c_t = self.step.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.step.lstm2(h_t, (h_t2, c_t2))
            output = self.step.linear(h_t2)
            outputs += [output]
        return torch.cat(outputs, dim=1)


CASES = [
    Case("sine_forecaster.dl", "SineForecaster", SineForecasterTwin, (("B", "T"),),
         names=("step.lstm1.weight_ih", "step.lstm2.bias_hh", "step.linear.weight"), small={"future": 2}),
]


def _program():
    return dslc.load(f"{SPECS}/sine_forecaster.dl")


@pytest.mark.parametrize("future", [0, 1, 5])
def test_sine_forecaster_is_bit_equal_to_its_twin(future):
    """State dicts load both ways, and the forward is bit-equal for several lengths."""
    prog = _program()
    mine, twin = prog.build("SineForecaster", seed=0, future=future), SineForecasterTwin(future=future)
    twin.load_state_dict(mine.state_dict())
    other = prog.build("SineForecaster", seed=3, future=future)
    other.load_state_dict(twin.state_dict())
    for T in (1, 2, 9, 30):
        x = torch.randn(3, T)
        with torch.no_grad():
            got, want, back = mine(x), twin(x), other(x)
        assert got.shape == (3, T + future)
        assert torch.equal(got, want) and torch.equal(back, want)


def test_sine_forecaster_is_one_loop_and_learns_through_it():
    """The body is written once (not unrolled per step), and gradients reach every weight."""
    prog = _program()
    source = prog.source(["SineForecaster"])
    assert source.count("self.step(") == 2 and "for x_t in x.split(1, dim=1):" in source
    assert "for _ in range(self.future):" in source and "torch.cat(outputs, dim=1)" in source
    net = prog.build("SineForecaster", seed=0, future=2)
    net(torch.randn(2, 6)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_sine_forecaster_summary_counts_the_steps():
    s = _program().summary("SineForecaster", sizes={"T": 10})
    per_step = 4 * 51 * (1 + 51) + 4 * 51 * (51 + 51) + 51
    assert s.total_params == 4 * 51 * (1 + 51) + 8 * 51 + 4 * 51 * 102 + 8 * 51 + 52
    assert s.macs == per_step * 10


def test_a_state_that_grows_is_a_clean_diagnostic(tmp_path):
    spec = tmp_path / "grow.dl"
    spec.write_text("block Grow {\n    input x_t\n    input h\n    output x_t, concat([h, h], dim=1)\n}\n\n"
                    "model M {\n    input x: [B, T, 4]\n    out, h = scan(Grow, x, zeros([B, 3]), dim=1)\n"
                    "    output out\n}\n")
    with pytest.raises(dslc.DslcError) as err:
        dslc.load(str(spec)).build("M")
    text = str(err.value)
    assert "grow.dl:9:28: error[E0403]" in text and "[B, 6] after a step but [B, 3] before it" in text
    assert "^^^^^^^^^^^^^" in text
