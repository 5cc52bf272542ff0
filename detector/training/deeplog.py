"""DeepLog's next-template model (Du et al. 2017), a label-free baseline for sessions and windows.

An LSTM reads the last `history` template ids before each line and predicts the line's template.
At test time a step is abnormal when its actual template is not among the `top_g` the model finds
most likely (normal logs branch, so more than one next template is allowed); a sequence is anomalous
when any of its steps is. It learns only from sequences the caller calls normal (bench/sessions.py:
the windows or sessions the calibrated labels call normal) and knows nothing of the lines' text.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from detector.core import LogdistillError

_PAD, _UNSEEN, _FIRST = 0, 1, 2  # input slots: before the start, a template never seen, the first seen one
MIN_STEPS_PER_EPOCH = 32  # a small training set gets smaller batches (see NextTemplateModel)
_SCORE_BATCH = 4096  # steps scored at once: bounds the (steps, templates) probabilities held


class _NextTemplateNet(nn.Module):
    """Embedding of the history's slots -> LSTM -> logits over the templates seen in training."""

    def __init__(self, slots: int, templates: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(slots, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, templates)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embed(history))
        return self.out(states[:, -1])


class NextTemplateModel:
    """fit on normal sequences of template ids (any ints), then `predict` (DeepLog's top-g rule) or
    `session_scores` (a continuous score for AUROC) per sequence.

    Defaults are DeepLog's (h = 10, g = 9, 2 LSTM layers of 64 units); epochs, batch size and learning
    rate are ours: 2,000 windows of 20 lines (BGL-2k, 9k distinct steps; a synthetic system, 25k) train in
    seconds on 2 idle CPU cores, and a hundred windows still get enough optimizer steps.
    Each line after a sequence's first is a step, predicted from the up to `history` lines before it,
    padded at the start, so sequences shorter than `history` still train. The first line has no history:
    predicting it would judge it by its frequency alone, and windows start at arbitrary lines: in the normal
    windows of 20 lines of BGL-2k, 15% start with a template outside the 9 most frequent starts (52% in a
    synthetic system of 60 templates). It counts only when its template was never seen.
    Training steps that recur (a system's windows repeat) are trained once an epoch, weighted by their count;
    an epoch takes at least MIN_STEPS_PER_EPOCH optimizer steps, so `batch_size` is a maximum. Seeded;
    deterministic on CPU.
    """

    def __init__(self, *, history: int = 10, top_g: int = 9, hidden: int = 64, layers: int = 2,
                 epochs: int = 8, batch_size: int = 256, learning_rate: float = 1e-2, seed: int = 0):
        if history < 1:
            raise LogdistillError(f"DeepLog's history must be at least 1 template, got {history}")
        if top_g < 1:
            raise LogdistillError(f"DeepLog's top_g must be at least 1 candidate, got {top_g}")
        self.history, self.top_g, self.hidden, self.layers = history, top_g, hidden, layers
        self.epochs, self.batch_size, self.learning_rate, self.seed = epochs, batch_size, learning_rate, seed
        self.slots_: dict[int, int] | None = None
        self.net_: _NextTemplateNet | None = None

    def _steps(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Every line after a sequence's first: (the slots of the `history` lines before it, padded at the
        start, (steps, history); its template's class, -1 if never seen in training; its sequence)."""
        histories = [np.empty((0, self.history), dtype=np.int64)]
        targets, owners = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
        for i, sequence in enumerate(sequences):
            slots = np.array([self.slots_.get(t, _UNSEEN) for t in sequence], dtype=np.int64)
            padded = np.concatenate([np.full(self.history, _PAD, dtype=np.int64), slots])
            histories.append(np.lib.stride_tricks.sliding_window_view(padded, self.history)[1:len(slots)])
            targets.append(np.where(slots[1:] == _UNSEEN, -1, slots[1:] - _FIRST))
            owners.append(np.full(len(slots[1:]), i, dtype=np.int64))
        return (torch.from_numpy(np.concatenate(histories)), torch.from_numpy(np.concatenate(targets)),
                np.concatenate(owners))

    def fit(self, sequences: Sequence[Iterable[int]]) -> "NextTemplateModel":
        sequences = _id_lists(sequences)
        templates = sorted({t for s in sequences for t in s})
        self.slots_ = {t: _FIRST + k for k, t in enumerate(templates)}
        history, target, _ = self._steps(sequences)
        if not len(target):
            raise LogdistillError("DeepLog learns from normal sequences of 2 or more templates, and got none")
        distinct, counts = np.unique(torch.cat([history, target[:, None]], dim=1).numpy(), axis=0, return_counts=True)
        history, target = torch.from_numpy(distinct[:, :-1]), torch.from_numpy(distinct[:, -1])
        # counts over their mean: any batch's weighted mean loss is then an unbiased sample of the whole set's
        weight = torch.from_numpy((counts / counts.mean()).astype(np.float32))
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        net = _NextTemplateNet(_FIRST + len(templates), len(templates), self.hidden, self.layers)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        batch_size = min(self.batch_size, -(-len(target) // MIN_STEPS_PER_EPOCH))
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(target), generator=generator)
            for start in range(0, len(target), batch_size):
                batch = order[start:start + batch_size]
                loss = (F.cross_entropy(net(history[batch]), target[batch], reduction="none") * weight[batch]).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        net.eval()
        self.net_ = net
        return self

    def _verdicts(self, sequences: Sequence[Iterable[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sequence, over the lines after its first: (the largest probability mass the model gives to
        templates likelier than a line's own, 1 if the sequence holds a template never seen in training;
        the most templates likelier than a line's own; whether it holds a template never seen)."""
        if self.net_ is None:
            raise LogdistillError("DeepLog is not fitted; call fit() first")
        sequences = _id_lists(sequences)
        history, target, owners = self._steps(sequences)
        above, ahead = np.zeros(len(sequences)), np.zeros(len(sequences), dtype=np.int64)
        with torch.no_grad():
            for start in range(0, len(target), _SCORE_BATCH):
                rows = slice(start, start + _SCORE_BATCH)
                seen = target[rows] >= 0
                p = torch.softmax(self.net_(history[rows][seen]), dim=1)
                likelier = p > p.gather(1, target[rows][seen, None])
                np.maximum.at(above, owners[rows][seen.numpy()], (p * likelier).sum(dim=1).numpy())
                np.maximum.at(ahead, owners[rows][seen.numpy()], likelier.sum(dim=1).numpy())
        unseen = np.array([any(t not in self.slots_ for t in s) for s in sequences], dtype=bool)
        above[unseen] = 1.0
        return above, ahead, unseen

    def session_scores(self, sequences: Sequence[Iterable[int]]) -> np.ndarray:
        """Per sequence, in [0, 1]: the largest, over its lines after the first, of the probability mass the
        model gives to templates it finds likelier than the line's own. DeepLog's rank made continuous: 0
        when every line is the model's first choice, growing as likelier alternatives push a line down the
        ranking, 1 for a sequence with a template never seen in training. Unlike 1 - P(actual), a line that is
        the likeliest of several that may follow scores 0 however the probability is spread (on synthetic
        windows with one misplaced template, the two rank alike over three seeds)."""
        return self._verdicts(sequences)[0]

    def predict(self, sequences: Sequence[Iterable[int]]) -> np.ndarray:
        """Per sequence, 1 if any line after the first is outside the model's top `top_g` (top_g or more
        templates strictly likelier, so ties count in its favor) or any template was never seen in
        training, else 0. With `top_g` templates or fewer in training, only a template never seen flags."""
        _, ahead, unseen = self._verdicts(sequences)
        return ((ahead >= self.top_g) | unseen).astype(np.int64)


def _id_lists(sequences: Sequence[Iterable[int]]) -> list[list[int]]:
    return [[int(t) for t in s] for s in sequences]
