"""The sequence detector (MLAD-style, trained with torch; scored without it by detector.runtime.sequence).

MLAD (Yu et al.) reads a window of log lines as the sequence of its templates' sentence
embeddings, encodes it with a Transformer whose attention is alpha-entmax and whose feed-forward
layer is CeLU, and scores the window by the energy of a Gaussian mixture over the encoding
(DAGMM's head), trained on normal windows only. Here, on the same lines:

    x_i      the line's embedding, standardized and projected on the training lines' top
             `components` principal axes (fixed, part of the exported graph)
    h        Linear(x_i) + a learned position, then `layers` blocks of attention (entmax-1.5 or
             softmax, over the lines of the chunk only) and a CeLU feed-forward, each residual + LayerNorm
    z        Linear(masked mean of h): the chunk's code, `latent` numbers
    x^_i     a decoder's reconstruction of x_i from z and position i: the code must hold which
             lines come in which order, so a chunk whose order or content is unusual reconstructs badly
    energy   head "gmm": -log sum_k phi_k N(f | mu_k, Sigma_k) over f = (z, relative reconstruction
             error, the share of the window the chunk's lines fill), the mixture fitted on the training chunks (DAGMM, loss = reconstruction +
             lambda_E energy + lambda_P sum 1/diag Sigma); head "reconstruction": the relative
             reconstruction error itself.

Which parts pay (entmax or softmax, the mixture or the reconstruction error) is measured by
bench/sessions.py, not assumed. The model learns only from chunks the caller calls normal.
"""
from __future__ import annotations

import io
import math
import warnings
from typing import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from detector.core import LogdistillError
from detector.runtime.sequence import (EMBEDDINGS_INPUT, ENERGY_OUTPUT, MASK_INPUT, EnergyCalibration, chunk_bounds,
                                       padded)

ATTENTIONS = ("entmax", "softmax")
HEADS = ("gmm", "reconstruction")
ONNX_OPSET = 17
_MASKED = -1e4  # the attention score of a padding position (exp or entmax gives it no weight)


def entmax15(scores: torch.Tensor) -> torch.Tensor:
    """1.5-entmax over the last axis (Peters et al. 2019, the exact sort-based threshold): like
    softmax, but low scores get exactly zero weight. Written with plain tensor ops so that it
    exports to ONNX (TopK, CumSum, GatherElements)."""
    x = scores / 2
    x = x - x.amax(dim=-1, keepdim=True)
    ordered, _ = torch.sort(x, dim=-1, descending=True)
    rank = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    mean = ordered.cumsum(-1) / rank
    mean_square = (ordered * ordered).cumsum(-1) / rank
    spread = rank * (mean_square - mean * mean)
    # the floor keeps sqrt's gradient finite: at exactly 0 it is infinite and turns the weights NaN (seen)
    tau = mean - torch.sqrt(torch.clamp((1 - spread) / rank, min=1e-12))
    support = (tau <= ordered).sum(dim=-1, keepdim=True).clamp(min=1)  # NaN scores: NaN out, not a bad index
    return torch.clamp(x - tau.gather(-1, support - 1), min=0) ** 2


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, attention: str):
        super().__init__()
        self.heads = heads
        self.attention = attention
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.CELU(), nn.Linear(2 * width, width))
        self.norm2 = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, w, width = h.shape
        q, k, v = self.qkv(h).reshape(n, w, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, _MASKED)
        weights = entmax15(scores) if self.attention == "entmax" else torch.softmax(scores, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, w, width)
        h = self.norm1(h + self.out(attended))
        return self.norm2(h + self.ff(h))


class SequenceNet(nn.Module):
    """Embeddings (n, window, dim) and mask (n, window) -> energy (n,); see the module docstring."""

    def __init__(self, dim: int, window: int, *, components: int, width: int, heads: int, layers: int,
                 latent: int, mixtures: int, attention: str, head: str):
        super().__init__()
        self.head = head
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("projection", torch.zeros(dim, components))
        self.embed = nn.Linear(components, width)
        self.position = nn.Parameter(torch.randn(window, width) * 0.02)
        self.blocks = nn.ModuleList(_Block(width, heads, attention) for _ in range(layers))
        self.code = nn.Linear(width, latent)
        self.decode = nn.Sequential(nn.Linear(latent + width, width), nn.CELU(), nn.Linear(width, components))
        self.membership = nn.Sequential(nn.Linear(latent + 2, 16), nn.Tanh(), nn.Linear(16, mixtures))
        features = latent + 2
        self.register_buffer("log_phi", torch.zeros(mixtures))
        self.register_buffer("mu", torch.zeros(mixtures, features))
        self.register_buffer("precision", torch.eye(features).repeat(mixtures, 1, 1))
        self.register_buffer("log_norm", torch.zeros(mixtures))

    def parts(self, embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, per-chunk relative reconstruction error) with f = (z, that error, the share of the window
        the chunk fills: a session that stops early is shorter than the normal ones)."""
        x = (embeddings - self.center) @ self.projection
        w = x.shape[1]
        h = self.embed(x) + self.position[:w]
        for block in self.blocks:
            h = block(h, mask)
        lines = mask.sum(1, keepdim=True).clamp(min=1)
        z = self.code((h * mask[..., None]).sum(1) / lines)
        position = self.position[:w].expand(x.shape[0], w, -1)
        rebuilt = self.decode(torch.cat([z[:, None, :].expand(-1, w, -1), position], dim=-1))
        error = (((rebuilt - x) ** 2).sum(-1) * mask).sum(1) / lines[:, 0]
        size = ((x ** 2).sum(-1) * mask).sum(1) / lines[:, 0]
        relative = error / (size + 1e-6)
        return torch.cat([z, relative[:, None], lines / self.position.shape[0]], dim=1), relative

    def mixture_energy(self, f: torch.Tensor) -> torch.Tensor:
        return _energy(f, self.log_phi, self.mu, self.precision, self.log_norm)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f, relative = self.parts(embeddings, mask)
        return self.mixture_energy(f) if self.head == "gmm" else relative


def _mixture(f: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-3) -> dict[str, torch.Tensor]:
    """DAGMM's mixture from memberships gamma: each component's log phi, mean, precision and log
    normalizer, and its covariance (for the loss's penalty on small variances)."""
    weight = gamma.sum(0) + 1e-9
    mu = (gamma.T @ f) / weight[:, None]
    diff = f[:, None, :] - mu[None]
    covariance = torch.einsum("nk,nki,nkj->kij", gamma, diff, diff) / weight[:, None, None]
    covariance = covariance + eps * torch.eye(f.shape[1])
    _, logdet = torch.linalg.slogdet(covariance)
    return {"log_phi": torch.log(weight / len(f)), "mu": mu, "precision": torch.linalg.inv(covariance),
            "log_norm": -0.5 * (logdet + f.shape[1] * math.log(2 * math.pi)), "covariance": covariance}


def _energy(f, log_phi, mu, precision, log_norm) -> torch.Tensor:
    """-log sum_k phi_k N(f | mu_k, Sigma_k) of each row of f."""
    diff = f[:, None, :] - mu[None]  # (n, K, d)
    mahalanobis = ((diff[:, :, None, :] @ precision[None]).squeeze(2) * diff).sum(-1)
    return -torch.logsumexp(log_phi + log_norm - 0.5 * mahalanobis, dim=1)


class SequenceDetector(BaseEstimator):
    """fit on normal sessions (each a (lines, dim) array of embeddings in order), score any session.

    Parameters are explicit with defaults; `attention` and `head` select the parts of MLAD that
    bench/sessions.py compares."""

    kind = "sequence"

    def __init__(self, *, window: int = 20, components: int = 32, width: int = 64, heads: int = 4,
                 layers: int = 1, latent: int = 8, mixtures: int = 4, attention: str = "entmax",
                 head: str = "gmm", epochs: int = 40, batch_size: int = 64, learning_rate: float = 1e-3,
                 lambda_energy: float = 0.1, lambda_covariance: float = 0.005, seed: int = 0):
        if attention not in ATTENTIONS:
            raise LogdistillError(f"unknown attention {attention!r}; choose one of: {', '.join(ATTENTIONS)}")
        if head not in HEADS:
            raise LogdistillError(f"unknown energy head {head!r}; choose one of: {', '.join(HEADS)}")
        if window < 1:
            raise LogdistillError(f"--window must be at least 1 line, got {window}")
        if width % heads:
            raise LogdistillError(f"width {width} must be a multiple of heads {heads}")
        self.window, self.components, self.width, self.heads = window, components, width, heads
        self.layers, self.latent, self.mixtures = layers, latent, mixtures
        self.attention, self.head = attention, head
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.lambda_energy, self.lambda_covariance, self.seed = lambda_energy, lambda_covariance, seed
        self.net_: SequenceNet | None = None
        self.calibration_: EnergyCalibration | None = None

    def _chunks(self, sessions: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = [s[a:b] for s in sessions for a, b in chunk_bounds(len(s), self.window)]
        X, mask = padded(chunks, self.window)
        return torch.from_numpy(X), torch.from_numpy(mask)

    def fit(self, sessions: list[np.ndarray], on_epoch: Callable[[int, int, float], None] | None = None
            ) -> "SequenceDetector":
        sessions = [np.asarray(s, dtype=np.float32) for s in sessions if len(s)]
        if not sessions:
            raise LogdistillError("no normal session or window to train the sequence detector on")
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        X, mask = self._chunks(sessions)
        lines = np.concatenate(sessions)
        dim = lines.shape[1]
        components = min(self.components, dim, len(lines))
        net = SequenceNet(dim, self.window, components=components, width=self.width, heads=self.heads,
                          layers=self.layers, latent=self.latent, mixtures=self.mixtures,
                          attention=self.attention, head=self.head)
        center = lines.mean(0)
        _, singular, axes = np.linalg.svd(lines - center, full_matrices=False)
        # one scale for all axes (unit mean variance): whitening each axis would blow the noise axes up to
        # the size of the few that tell templates apart
        scale = math.sqrt((singular[:components] ** 2).mean() / max(len(lines) - 1, 1)) + 1e-6
        net.center.copy_(torch.from_numpy(center))
        net.projection.copy_(torch.from_numpy((axes[:components].T / scale).astype(np.float32)))
        optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        n = len(X)
        for epoch in range(self.epochs):
            net.train()
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, self.batch_size):
                batch = order[start:start + self.batch_size]
                f, relative = net.parts(X[batch], mask[batch])
                loss = relative.mean()
                if self.head == "gmm" and len(batch) > 1:
                    mixture = _mixture(f, torch.softmax(net.membership(f), dim=1))
                    energy = _energy(f, mixture["log_phi"], mixture["mu"], mixture["precision"], mixture["log_norm"])
                    penalty = (1 / torch.diagonal(mixture["covariance"], dim1=1, dim2=2)).sum()
                    loss = loss + self.lambda_energy * energy.mean() + self.lambda_covariance * penalty
                if not math.isfinite(loss.item()):
                    raise LogdistillError(f"the sequence detector's training diverged (loss {loss.item()} in epoch "
                                          f"{epoch + 1}): train again with another --seed or a lower learning rate")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            if on_epoch is not None:
                on_epoch(epoch + 1, self.epochs, total / n)
        net.eval()
        with torch.no_grad():
            f, _ = net.parts(X, mask)
            if self.head == "gmm":
                mixture = _mixture(f, torch.softmax(net.membership(f), dim=1))
                for name in ("log_phi", "mu", "precision", "log_norm"):
                    getattr(net, name).copy_(mixture[name])
            self.net_ = net
            self.calibration_ = EnergyCalibration.fit(net(X, mask).numpy())
        return self

    def _check_fitted(self) -> SequenceNet:
        if self.net_ is None:
            raise LogdistillError("the sequence detector is not fitted")
        return self.net_

    def energies(self, sessions: list[np.ndarray]) -> np.ndarray:
        """Energy of each chunk of each session, in order (as the ONNX graph gives it)."""
        net = self._check_fitted()
        X, mask = self._chunks([np.asarray(s, dtype=np.float32) for s in sessions])
        with torch.no_grad():
            return net(X, mask).numpy()

    def onnx_graph(self) -> bytes:
        """The energy graph: embeddings (n, window, dim) and mask (n, window) in, energy (n,) out."""
        net = self._check_fitted()
        dim = net.center.shape[0]
        example = (torch.zeros(2, self.window, dim), torch.ones(2, self.window))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing: the graph is checked below
            torch.onnx.export(net, example, buffer, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=[EMBEDDINGS_INPUT, MASK_INPUT], output_names=[ENERGY_OUTPUT],
                              dynamic_axes={EMBEDDINGS_INPUT: {0: "n"}, MASK_INPUT: {0: "n"}, ENERGY_OUTPUT: {0: "n"}})
        return buffer.getvalue()

    def meta(self) -> dict:
        """What the runtime needs beside the graph (detector.runtime.sequence.SequenceScorer)."""
        net = self._check_fitted()
        return {"window": self.window, "dim": int(net.center.shape[0]), "params": self.get_params(),
                "calibration": self.calibration_.to_dict(),
                "n_parameters": sum(p.numel() for p in net.parameters())}

