"""MaidLog's network (paper section III-C) in torch: a domain-adversarial MLP and its losses.

    encoder g          embedding -> shared features (small MLP)
    discriminator d    g(e) -> which source domain, trained through a gradient reversal layer,
                       so that g learns features that do not tell the domains apart
    heads f_j          g(e) -> P(anomalous), one head per source domain

Loss (eq. 10) = focal loss (eq. 7, per-domain class weights of eq. 12; gamma 0 by default, which is
cross-entropy, MaidLog's 2 one parameter away) of the head of each sample's own domain against its
soft label + beta * focal domain loss through the GRL. Inference (eq. 11): P(anomalous | e) =
sum_j P_f_j(anomalous | e) * P_d(j | e), which needs no domain label, so the model scores lines of
systems it never saw.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ReverseGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -lambda backward (Ganin & Lempitsky's GRL)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lam * grad, None


def grl_lambda(progress: float, gamma: float = 30.0) -> float:
    """GRL strength at training progress k in [0, 1]: the DANN ramp 2 / (1 + exp(-gamma k)) - 1.

    MaidLog prints `1 - 2 / (1 + exp(30 k))`, which is 0 at k = 0 and about -1 afterwards,
    i.e. a sign slip: the text calls it the DANN schedule, tanh(gamma k / 2), which rises
    from 0 to ~1. We implement the ramp that rises, so the reversal starts gently.
    """
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def _mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU (+ dropout) for every step of `sizes`; the ONNX writer walks these layers."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class DomainHeads(nn.Module):
    """n_heads classification heads f_j (Linear, ReLU, dropout, Linear to one logit each), their
    weights stacked so that all heads run as one matrix product: with a dozen source domains, one
    small module per head made two thirds of the training time."""

    def __init__(self, n_heads: int, width: int, hidden: int, dropout: float):
        super().__init__()
        bound1, bound2 = 1 / math.sqrt(width), 1 / math.sqrt(hidden)  # nn.Linear's initialization
        self.w1 = nn.Parameter(torch.empty(n_heads, width, hidden).uniform_(-bound1, bound1))
        self.b1 = nn.Parameter(torch.empty(n_heads, hidden).uniform_(-bound1, bound1))
        self.w2 = nn.Parameter(torch.empty(n_heads, hidden).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.empty(n_heads).uniform_(-bound2, bound2))
        self.dropout = nn.Dropout(dropout)

    @property
    def n_heads(self) -> int:
        return self.w1.shape[0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(n, n_heads): every head's logit for every row (one matrix product for all first layers)."""
        n_heads, width, hidden = self.w1.shape
        first = features @ self.w1.permute(1, 0, 2).reshape(width, n_heads * hidden)
        hidden_units = self.dropout(torch.relu(first.view(-1, n_heads, hidden) + self.b1))
        return (hidden_units * self.w2).sum(dim=2) + self.b2


def standardization(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per input column, float32: a detector reads (x - mean) * scale.

    fastText sentence vectors are unit-normalized and share a large common component:
    on a small corpus each dimension varies by ~1e-4 around ~5e-2, far too little for
    the first layer to learn from at lr 4e-4. The floor keeps nearly constant dimensions finite.
    A column constant in training (a level no source has) carries nothing the model learned
    from: scale 0, else an unseen value would enter as (value - mean) / floor, a huge input.
    """
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
    floor = max(float(std.mean()) * 1e-2, 1e-12)
    scale = np.where(std > 0, 1.0 / np.maximum(std, floor), 0.0)
    return X.mean(axis=0).astype(np.float32), scale.astype(np.float32)


class MaidLogNet(nn.Module):
    """The network; `DomainAdversarialDetector` is the estimator around it."""

    def __init__(self, input_dim: int, n_domains: int, n_heads: int, hidden: Sequence[int],
                 head_hidden: int, discriminator_hidden: int, dropout: float):
        super().__init__()
        # Per-dimension standardization, fitted on the training rows (see `standardize`).
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_scale", torch.ones(input_dim))
        self.encoder = _mlp([input_dim, *hidden], dropout)
        width = hidden[-1]
        self.discriminator = nn.Sequential(_mlp([width, discriminator_hidden], dropout),
                                           nn.Linear(discriminator_hidden, n_domains))
        self.heads = DomainHeads(n_heads, width, head_hidden, dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder((x - self.input_mean) * self.input_scale)

    def forward(self, x: torch.Tensor, lam: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(head logits (n, n_heads), domain logits (n, n_domains)); `lam` only shapes gradients."""
        features = self.features(x)
        return self.heads(features), self.discriminator(ReverseGradient.apply(features, lam))

    def standardize(self, X: torch.Tensor) -> None:
        """Fit the input standardization to X (`standardization`)."""
        mean, scale = standardization(X.numpy())
        self.input_mean.copy_(torch.from_numpy(mean))
        self.input_scale.copy_(torch.from_numpy(scale))

    def anomaly_probability(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 11: heads' P(anomalous) weighted by the discriminator's domain posterior over the
        labeled domains (the first n_heads classes; `--adapt` domains after them have no head)."""
        head_logits, domain_logits = self(x)
        heads = torch.sigmoid(head_logits)
        if heads.shape[1] == 1:  # single-head ablation: the posterior weights one head and sums to 1
            return heads[:, 0]
        domains = torch.softmax(domain_logits[:, :heads.shape[1]], dim=1)
        return (heads * domains).sum(dim=1)


def focal_binary_loss(logits: torch.Tensor, target: torch.Tensor, alpha0: torch.Tensor,
                      gamma: float) -> torch.Tensor:
    """Eq. 7 on soft targets: each class term weighted by its alpha and its target mass."""
    log_p = F.logsigmoid(logits)
    log_q = F.logsigmoid(-logits)
    p = log_p.exp()
    anomalous = (1 - alpha0) * target * (1 - p).pow(gamma) * log_p
    normal = alpha0 * (1 - target) * p.pow(gamma) * log_q
    return -(anomalous + normal)


def focal_multiclass_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    return -(1 - log_p.exp()).pow(gamma) * log_p


def stacked_heads(weights: dict) -> dict:
    """A state dict with the heads as DomainHeads holds them: models saved before the heads were
    stacked kept one `heads.J.0` (hidden) and `heads.J.3` (logit) Linear per head."""
    if "heads.0.0.weight" not in weights:
        return weights
    count = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("heads."))
    head = [{k.split(".", 2)[2]: v for k, v in weights.items() if k.startswith(f"heads.{j}.")} for j in range(count)]
    rest = {k: v for k, v in weights.items() if not k.startswith("heads.")}
    return {**rest, "heads.w1": torch.stack([h["0.weight"].T for h in head]),
            "heads.b1": torch.stack([h["0.bias"] for h in head]),
            "heads.w2": torch.stack([h["3.weight"][0] for h in head]),
            "heads.b2": torch.stack([h["3.bias"][0] for h in head])}
