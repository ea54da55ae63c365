"""Next-item models: the next movie from the ordered list of the movies before it.

Three families share one estimator and differ only in the network that reads a history:

=================  =================================================================================
seq-pooling        the mean of the history's item embeddings (the CBOW idea, Spotlight's PoolNet)
seq-lstm           a recurrent network over the history (GRU by default, or LSTM: `cell`)
seq-transformer    causal self-attention with learned positions, in the spirit of SASRec
=================  =================================================================================

Every network is a pure `nn.Module` (`PoolingNetwork`, `RecurrentNetwork`, `TransformerNetwork`)
that maps a history to a vector h (d,); the next-item score of item i is

    score(i | history) = h . w_i + b_i

with w_i the output embedding of item i (the input embedding itself with `tie_weights`) and b_i a
learned item bias. A history without items gets h = 0, so its scores are the biases alone (a
learned popularity prior).

Histories are token windows as `recengine.data.sequences` makes them (item i is token i + 1, `PAD`
= 0 on the left). A network first *left-aligns* each window (real items first, padding after,
`left_align`) and reads it left to right; positions are counted from the first real item. Every
network is causal (the output at position t depends on items 0..t only: a cumulative mean, a
recurrent network, self-attention under a causal mask), so trailing padding can never reach a real
position, and the same history scores the same with any amount of padding.

Training (`SequenceModel.fit`): windows of `max_length + 1` items are cut from each training user's
time-ordered items every `window_step` items; every position of a window predicts the item after
it, and the window's first item is predicted from an empty history (h = 0, as Spotlight does), so
a full window gives `max_length + 1` predictions. The loss is the full softmax cross-entropy over
the catalogue (the default `loss="auto"` up to 5,000 items), or with `loss="sampled_softmax"`
(the default above 5,000 items) against `n_negatives` items drawn per batch in
proportion to ``(count + 1) ** sampling_exponent`` (logQ-corrected, accidental hits removed), for
catalogues too large for a full softmax. The loop is the shared
`recengine.training.train_loop`; with `valid` it reports the next-item MRR each epoch (see
`validation_windows`).

Evaluation, both with full ranking over all items (the two protocols of the benchmark):

* `evaluate_next_item(model, split)`: Spotlight's protocol on a user split: the test users'
  ratings are cut into windows of 10 (step 10) and each window's last item is ranked given the 9
  before it (`recengine.evaluation.sequence_metrics`, pessimistic ties, nothing excluded).
* `evaluate_last_item(model, history, test)`: leave-last-out: each user's held-out item is ranked
  given their latest history window, their history items excluded
  (`recengine.evaluation.ranking_metrics`).

Both take any model with `score_histories(windows)`, the popularity baseline included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recengine.data.dataset import Dataset
from recengine.data.sequences import PAD, from_token, last_window, last_windows, n_tokens, windows
from recengine.data.splits import Split
from recengine.evaluation import ranking_metrics, sequence_metrics
from recengine.models.base import (
    MAX_EMBEDDING_DIM,
    EpochCallback,
    NotFittedError,
    Recommender,
    check_range,
    register,
    top_k,
)
from recengine.training import check_training_config, train_loop

__all__ = [
    "AUTO_SOFTMAX_MAX_ITEMS",
    "LOSSES",
    "RECURRENT_CELLS",
    "LSTMConfig",
    "PoolingConfig",
    "PoolingModel",
    "PoolingNetwork",
    "RecurrentModel",
    "RecurrentNetwork",
    "SequenceModel",
    "SequenceNetwork",
    "TransformerConfig",
    "TransformerModel",
    "TransformerNetwork",
    "CausalSelfAttentionBlock",
    "evaluate_last_item",
    "evaluate_next_item",
    "left_align",
    "next_item_windows",
    "resolve_loss",
    "validation_windows",
]

#: Training losses: the full softmax over the catalogue, a sampled softmax, or "auto": the full
#: softmax up to AUTO_SOFTMAX_MAX_ITEMS items, the sampled softmax above (`resolve_loss`).
LOSSES = ("auto", "softmax", "sampled_softmax")
#: Largest catalogue that loss "auto" trains with the full softmax. Its cost per prediction is
#: O(n_items * d) against O(n_negatives * d) sampled: at 1M interactions and 3,706 items one
#: seq-pooling epoch takes 48 CPU s full and 19 s sampled, and the gap grows with the catalogue.
#: ml-100k (1,682 items, where the defaults were tuned) keeps the full softmax.
AUTO_SOFTMAX_MAX_ITEMS = 5000
#: Recurrent cells of seq-lstm.
RECURRENT_CELLS = ("lstm", "gru")
#: At most this many validation targets are scored per epoch (evenly spaced when there are more).
VALIDATION_TARGETS = 20_000
#: Window width and step of the classic next-item protocol (`evaluate_next_item`).
PROTOCOL_WINDOW = 10


# --- configs ----------------------------------------------------------------------------------
#: Upper bounds of the sequence Configs' sizes (each window scores the whole catalogue, so
#: batches stay far below MF's); embedding_dim, epochs and seed share the bounds in base.
MAX_SEQUENCE_LENGTH = 1024
MAX_WINDOW_STEP = 100_000
MAX_NEGATIVES = 2**20
MAX_SEQUENCE_BATCH = 65_536
MAX_LAYERS = 64
MAX_HEADS = 64
MAX_FEEDFORWARD_FACTOR = 64


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_number(
    name: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        bounds = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be a finite number in {bounds}, got {value!r}")


@dataclass(frozen=True)
class SequenceConfig:
    """Hyper-parameters every next-item model shares (each family's config adds its own and sets
    the defaults `benchmarks/sequence.py --tune` chose on validation users of ml-100k)."""

    #: Size d of the item embeddings and of the history vector h.
    embedding_dim: int = 64
    #: Most recent items a prediction reads; longer histories are cut to their last max_length.
    max_length: int = 10
    #: Distance between the ends of consecutive training windows (each max_length + 1 wide);
    #: below max_length + 1 the windows overlap, so every item is also seen at other positions
    #: and after other contexts (this helps the order-aware networks).
    window_step: int = 5
    #: Use the input embeddings as output embeddings (w_i = e_i).
    tie_weights: bool = False
    #: Dropout on the embeddings and between layers (training only).
    dropout: float = 0.2
    #: One of LOSSES; "auto": the full softmax up to AUTO_SOFTMAX_MAX_ITEMS (5,000) items, the
    #: sampled softmax above (the full one's cost grows with interactions x catalogue).
    loss: str = "auto"
    #: Negatives per batch for loss "sampled_softmax" (shared by the batch's predictions).
    n_negatives: int = 1024
    #: Negatives are drawn in proportion to (training count + 1) ** sampling_exponent.
    sampling_exponent: float = 0.75
    #: Interactions rated below this are left out of every history (training windows, known users'
    #: windows, fold-in); 0 keeps every interaction, whatever its rating.
    min_rating: float = 0.0
    #: Full passes over the training windows.
    epochs: int = 10
    #: Windows per optimiser step.
    batch_size: int = 128
    #: Peak learning rate (the schedule scales it).
    learning_rate: float = 0.005
    #: Optimiser weight decay (decoupled for adamw).
    weight_decay: float = 0.0
    #: One of recengine.training.OPTIMIZERS ("sparse_adam" is not supported).
    optimizer: str = "adamw"
    #: One of recengine.training.SCHEDULES.
    schedule: str = "one_cycle"
    #: Epochs without validation-MRR improvement before stopping (needs `valid`); 0 = off.
    early_stopping_patience: int = 0
    #: Seeds the initial weights, the window order and the negative samples.
    seed: int = 42

    def __post_init__(self) -> None:
        check_training_config(self, max_batch_size=MAX_SEQUENCE_BATCH)
        _check_int("embedding_dim", self.embedding_dim, 1)
        _check_int("max_length", self.max_length, 1)
        _check_int("window_step", self.window_step, 1)
        _check_int("n_negatives", self.n_negatives, 1)
        # upper bounds: beyond them a run never ends or cannot be allocated
        check_range("embedding_dim", self.embedding_dim, 1, MAX_EMBEDDING_DIM)
        check_range("max_length", self.max_length, 1, MAX_SEQUENCE_LENGTH)
        check_range("window_step", self.window_step, 1, MAX_WINDOW_STEP)
        check_range("n_negatives", self.n_negatives, 1, MAX_NEGATIVES)
        if not isinstance(self.tie_weights, bool):
            raise ValueError(f"tie_weights must be True or False, got {self.tie_weights!r}")
        _check_number("dropout", self.dropout, 0.0, 1.0, open_high=True)
        _check_number("sampling_exponent", self.sampling_exponent, 0.0, 1.0)
        _check_number("min_rating", self.min_rating, 0.0, math.inf, open_high=True)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.optimizer == "sparse_adam":
            raise ValueError(
                "optimizer 'sparse_adam' is not supported by sequence models (dense embeddings); use 'adam' or 'adamw'"
            )


@dataclass(frozen=True)
class PoolingConfig(SequenceConfig):
    """Hyper-parameters of seq-pooling (the mean of the history's embeddings)."""

    window_step: int = 11  # the mean ignores positions: overlapping windows add cost, not accuracy
    dropout: float = 0.0
    learning_rate: float = 0.01


@dataclass(frozen=True)
class LSTMConfig(SequenceConfig):
    """Hyper-parameters of seq-lstm (a GRU by default: it scored higher on validation users)."""

    #: One of RECURRENT_CELLS.
    cell: str = "gru"
    #: Stacked recurrent layers.
    n_layers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell not in RECURRENT_CELLS:
            raise ValueError(f"cell must be one of {RECURRENT_CELLS}, got {self.cell!r}")
        _check_int("n_layers", self.n_layers, 1)
        check_range("n_layers", self.n_layers, 1, MAX_LAYERS)


@dataclass(frozen=True)
class TransformerConfig(SequenceConfig):
    """Hyper-parameters of seq-transformer (pre-norm causal self-attention blocks)."""

    #: Self-attention blocks.
    n_layers: int = 2
    #: Attention heads per block; must divide embedding_dim.
    n_heads: int = 2
    #: Width of each block's feed-forward layer, as a multiple of embedding_dim.
    feedforward_factor: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("n_layers", self.n_layers, 1)
        _check_int("n_heads", self.n_heads, 1)
        _check_int("feedforward_factor", self.feedforward_factor, 1)
        check_range("n_layers", self.n_layers, 1, MAX_LAYERS)
        check_range("n_heads", self.n_heads, 1, MAX_HEADS)
        check_range("feedforward_factor", self.feedforward_factor, 1, MAX_FEEDFORWARD_FACTOR)
        if self.embedding_dim % self.n_heads:
            raise ValueError(
                f"n_heads must divide embedding_dim, got n_heads={self.n_heads} and embedding_dim={self.embedding_dim}"
            )


# --- networks ---------------------------------------------------------------------------------
def resolve_loss(loss: str, n_items: int) -> str:
    """The loss a model trains with: `loss` itself, or for "auto" "softmax" on catalogues of at
    most AUTO_SOFTMAX_MAX_ITEMS items and "sampled_softmax" on larger ones."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss != "auto":
        return loss
    return "softmax" if n_items <= AUTO_SOFTMAX_MAX_ITEMS else "sampled_softmax"


def left_align(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front, keeping their order, with `PAD` after them.

    windows: int64 (b, L) token windows padded anywhere (`recengine.data.sequences` pads on the left).
    Returns (aligned int64 (b, L), lengths int64 (b,)): row r holds its `lengths[r]` real tokens in
    columns 0..lengths[r]-1, in their original order.
    """
    real = windows != PAD
    lengths = real.sum(dim=1)
    # Stable sort on "is padding" puts the real tokens first in their order.
    order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
    return torch.gather(windows, 1, order), lengths


class SequenceNetwork(nn.Module):
    """Item embeddings, output weights and biases shared by the networks; subclasses implement `encode`.

    item_embeddings: (n_items + 1, d) with row `PAD` fixed at zero; output_embeddings: (n_items, d)
    or None with tied weights; output_bias: (n_items,). All float32.
    """

    def __init__(self, n_items: int, embedding_dim: int, max_length: int, tie_weights: bool, dropout: float) -> None:
        super().__init__()
        self.n_items, self.embedding_dim, self.max_length = n_items, embedding_dim, max_length
        self.item_embeddings = nn.Embedding(n_tokens(n_items), embedding_dim, padding_idx=PAD)
        self.output_embeddings = None if tie_weights else nn.Embedding(n_items, embedding_dim)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.dropout = nn.Dropout(dropout)

    def reset(self, generator: torch.Generator) -> None:
        """Seeded initialisation (nothing global): embeddings ~ N(0, 1/d), matrices Xavier-uniform,
        biases 0, layer-norm gains 1; the PAD row stays zero."""
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.endswith("embeddings.weight"):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(self.embedding_dim))
                elif parameter.dim() >= 2:
                    nn.init.xavier_uniform_(parameter, generator=generator)
                elif "norm" in name and name.endswith("weight"):
                    parameter.fill_(1.0)
                else:
                    parameter.zero_()
            self.item_embeddings.weight[PAD].zero_()

    def embed(self, aligned: torch.Tensor) -> torch.Tensor:
        """Input embeddings of aligned tokens (b, L) -> (b, L, d), dropout applied in training."""
        return self.dropout(self.item_embeddings(aligned))

    def encode(self, aligned: torch.Tensor) -> torch.Tensor:
        """Hidden vectors (b, L, d) float32 of left-aligned token rows (b, L), L <= max_length.

        Causal: position t depends on tokens 0..t only; positions holding `PAD` are meaningless.
        """
        raise NotImplementedError

    def output_weights(self) -> torch.Tensor:
        """w: (n_items, d), the output embedding of every item."""
        if self.output_embeddings is None:
            return self.item_embeddings.weight[1:]
        return self.output_embeddings.weight

    def represent(self, windows: torch.Tensor) -> torch.Tensor:
        """History vectors h (b, d) of token windows (b, L) padded anywhere; rows without items give 0.

        Only the last `max_length` real items of a row are read.
        """
        aligned, lengths = left_align(windows)
        if aligned.shape[1] > self.max_length:
            # keep each row's last max_length real items, still left-aligned
            start = torch.clamp(lengths - self.max_length, min=0)
            columns = start[:, None] + torch.arange(self.max_length, device=windows.device)[None, :]
            aligned = torch.gather(aligned, 1, columns)
            lengths = torch.clamp(lengths, max=self.max_length)
        if aligned.shape[1] == 0:
            return torch.zeros(len(windows), self.embedding_dim, device=windows.device)
        hidden = self.encode(aligned)
        last = hidden[torch.arange(len(windows), device=windows.device), torch.clamp(lengths - 1, min=0)]
        return torch.where((lengths > 0)[:, None], last, torch.zeros_like(last))

    def score(self, represented: torch.Tensor) -> torch.Tensor:
        """Next-item scores (b, n_items) of history vectors (b, d): h . w_i + b_i."""
        return represented @ self.output_weights().T + self.output_bias

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Next-item scores (b, n_items) float32 of token windows (b, L) int64."""
        return self.score(self.represent(windows))


class PoolingNetwork(SequenceNetwork):
    """h_t = mean of the input embeddings of items 0..t (a cumulative mean, CBOW-style)."""

    def encode(self, aligned: torch.Tensor) -> torch.Tensor:
        embedded = self.embed(aligned)  # PAD rows embed to zero
        counts = torch.arange(1, aligned.shape[1] + 1, device=aligned.device, dtype=embedded.dtype)
        return embedded.cumsum(dim=1) / counts[None, :, None]


class RecurrentNetwork(SequenceNetwork):
    """h_t = the top layer's output of an LSTM or GRU after reading items 0..t."""

    def __init__(self, n_items: int, embedding_dim: int, max_length: int, tie_weights: bool, dropout: float,
                 cell: str = "gru", n_layers: int = 1) -> None:
        super().__init__(n_items, embedding_dim, max_length, tie_weights, dropout)
        if cell not in RECURRENT_CELLS:
            raise ValueError(f"cell must be one of {RECURRENT_CELLS}, got {cell!r}")
        recurrent = nn.LSTM if cell == "lstm" else nn.GRU
        self.recurrent = recurrent(
            embedding_dim, embedding_dim, num_layers=n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0
        )

    def reset(self, generator: torch.Generator) -> None:
        super().reset(generator)
        with torch.no_grad():  # LSTM forget-gate bias 1 (Jozefowicz et al., 2015): remember by default
            if isinstance(self.recurrent, nn.LSTM):
                size = self.embedding_dim
                for name, parameter in self.recurrent.named_parameters():
                    if name.startswith("bias_ih"):
                        parameter[size : 2 * size].fill_(1.0)

    def encode(self, aligned: torch.Tensor) -> torch.Tensor:
        output, _ = self.recurrent(self.embed(aligned))
        return self.dropout(output)


class CausalSelfAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)) under a causal mask, then x + MLP(norm(x)).

    Dropout acts on the two residual branches only (training). x: (b, L, d) -> (b, L, d).
    """

    def __init__(self, embedding_dim: int, n_heads: int, feedforward_dim: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.attention_norm = nn.LayerNorm(embedding_dim)
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim)
        self.attention_out = nn.Linear(embedding_dim, embedding_dim)
        self.feedforward_norm = nn.LayerNorm(embedding_dim)
        self.feedforward = nn.Sequential(
            nn.Linear(embedding_dim, feedforward_dim), nn.GELU(), nn.Linear(feedforward_dim, embedding_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        heads = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.n_heads, dim // self.n_heads)
        q, k, v = heads.permute(2, 0, 3, 1, 4)  # each (b, n_heads, L, d / n_heads)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, length, dim)
        x = x + F.dropout(self.attention_out(attended), self.dropout, self.training)
        return x + F.dropout(self.feedforward(self.feedforward_norm(x)), self.dropout, self.training)


class TransformerNetwork(SequenceNetwork):
    """h_t from pre-norm causal self-attention blocks over items 0..t, with learned positions counted
    from the history's first item, and a final layer norm (SASRec's shape, nanoGPT's block)."""

    def __init__(self, n_items: int, embedding_dim: int, max_length: int, tie_weights: bool, dropout: float,
                 n_layers: int = 2, n_heads: int = 2, feedforward_factor: int = 2) -> None:
        super().__init__(n_items, embedding_dim, max_length, tie_weights, dropout)
        if embedding_dim % n_heads:
            raise ValueError(f"n_heads must divide embedding_dim, got n_heads={n_heads} and embedding_dim={embedding_dim}")
        self.position_embeddings = nn.Embedding(max_length, embedding_dim)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(embedding_dim, n_heads, feedforward_factor * embedding_dim, dropout)
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(embedding_dim)

    def encode(self, aligned: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(aligned.shape[1], device=aligned.device)
        x = self.dropout(self.item_embeddings(aligned) + self.position_embeddings(positions)[None])
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)


# --- the estimator ----------------------------------------------------------------------------
def _predicted_items(batch: tuple[torch.Tensor, ...], _targets: torch.Tensor) -> torch.Tensor:
    """How many predictions the loss of a batch of training windows averages over: its real
    (non-PAD) tokens. Weighs each rank's share of a global batch in distributed training."""
    return (batch[0] != PAD).sum()


class SequenceModel(Recommender):
    """Estimator shared by the next-item families: training, scoring, fold-in, persistence.

    A subclass sets `name`, `Config` and `_build_network`. See the module docstring for the model.
    Beyond the contract it offers `score_histories(windows)` (next-item scores of any token windows)
    and `recommend_for(history)` for an ordered list of item indices.
    """

    explicit: ClassVar[bool] = False
    sequential: ClassVar[bool] = True

    def __init__(self, config: SequenceConfig | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(config, device)
        self.network: SequenceNetwork | None = None
        self._user_windows: torch.Tensor | None = None  # (n_users, max_length) int64 on CPU

    def _build_network(self, n_items: int) -> SequenceNetwork:
        raise NotImplementedError

    # --- training -----------------------------------------------------------------------------
    def _kept(self, dataset: Dataset) -> Dataset:
        """The interactions that take part in histories (ratings >= min_rating)."""
        if self.config.min_rating <= 0:
            return dataset
        return dataset.subset(dataset.ratings >= self.config.min_rating, dataset.part)

    def _fit(self, train: Dataset, valid: Dataset | None, on_epoch: EpochCallback) -> None:
        config: SequenceConfig = self.config
        kept = self._kept(train)
        train_windows = windows(kept, config.max_length + 1, step=config.window_step, min_length=2)
        if len(train_windows) == 0:
            raise ValueError(
                f"{self.name} needs users with at least 2 interactions (rated >= min_rating={config.min_rating}) "
                f"to learn from, and {train!r} has none; use more data or lower min_rating"
            )
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        network = self._build_network(train.n_items)
        network.reset(generator)
        network.to(self.device)
        self.network = network
        self._user_windows = torch.from_numpy(last_windows(kept, config.max_length))

        tokens = torch.from_numpy(train_windows).to(self.device)
        loss_fn = self._loss_function(network, kept)

        validate = None
        if valid is not None and len(valid):
            histories, targets = validation_windows(kept, self._kept(valid), config.max_length)
            if len(targets) > VALIDATION_TARGETS:
                pick = np.linspace(0, len(targets) - 1, VALIDATION_TARGETS).round().astype(np.int64)
                histories, targets = histories[pick], targets[pick]
            if len(targets):

                def validate() -> dict[str, float]:
                    return sequence_metrics(self._score_windows, histories, targets, metrics=["mrr"])

        train_loop(network, (tokens,), tokens, loss_fn, config, on_epoch=on_epoch, validate=validate,
                   monitor="mrr", higher_is_better=True, loss_terms=_predicted_items)

    def _loss_function(
        self, network: SequenceNetwork, train: Dataset
    ) -> Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]:
        """The batch loss of token windows (b, max_length + 1): the mean cross-entropy of each item of
        each window given the items before it in the window (the first item given none)."""
        config: SequenceConfig = self.config
        sampler = None
        if resolve_loss(config.loss, network.n_items) == "sampled_softmax":
            weights = (torch.from_numpy(train.item_popularity()).double() + 1.0) ** config.sampling_exponent
            proposal = (weights / weights.sum()).to(self.device)
            log_proposal = proposal.log().float()
            sampler = torch.Generator(device=self.device).manual_seed(config.seed + 1)

        def loss_fn(batch: tuple[torch.Tensor, ...], _targets: torch.Tensor) -> torch.Tensor:
            aligned, _ = left_align(batch[0])  # (b, max_length + 1), real items first
            encoded = network.encode(aligned[:, :-1])  # (b, max_length, d): position t has read items 0..t
            # Row j of `hidden` predicts item j: from an empty history (h = 0, the biases alone) for
            # j = 0, else from the items before it.
            hidden = torch.cat([encoded.new_zeros(len(aligned), 1, network.embedding_dim), encoded], dim=1)
            target_items = aligned - 1  # item indices; PAD becomes -1, which is not predicted
            if sampler is None:
                return F.cross_entropy(network.score(hidden).flatten(0, 1), target_items.flatten(), ignore_index=-1)
            real = target_items >= 0
            hidden, target_items = hidden[real], target_items[real]  # (m, d), (m,)
            negatives = torch.multinomial(proposal, config.n_negatives, replacement=True, generator=sampler)
            out_weights, bias = network.output_weights(), network.output_bias
            positive = (hidden * out_weights[target_items]).sum(dim=1) + bias[target_items] - log_proposal[target_items]
            negative = hidden @ out_weights[negatives].T + (bias[negatives] - log_proposal[negatives])[None, :]
            negative = negative.masked_fill(negatives[None, :] == target_items[:, None], -math.inf)
            logits = torch.cat([positive[:, None], negative], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

        return loss_fn

    # --- scoring ------------------------------------------------------------------------------
    def _net(self) -> SequenceNetwork:
        if self.network is None or not self.is_fitted:
            raise NotFittedError(f"{self.name} model is not fitted: call fit(train) or Recommender.load(path) first")
        return self.network

    def _score_windows(self, windows_: np.ndarray | torch.Tensor) -> torch.Tensor:
        network = self._net()
        with torch.no_grad():
            return network(torch.as_tensor(windows_, dtype=torch.long).to(self.device)).float()

    def score_histories(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Next-item scores (n, n_items) float32 on `device` for token windows (n, L) int64.

        Windows follow `recengine.data.sequences` (item i is token i + 1, `PAD` = 0); any width and
        any padding position work, and only each row's last `max_length` items are read.
        """
        network = self._net()
        windows = torch.as_tensor(windows)
        if windows.ndim != 2 or windows.dtype.is_floating_point or windows.dtype == torch.bool:
            raise ValueError(
                "windows must be an integer array (n_windows, max_length) of tokens, "
                f"got {windows.dtype} {tuple(windows.shape)}"
            )
        if windows.numel() and (int(windows.min()) < PAD or int(windows.max()) > network.n_items):
            raise ValueError(
                f"windows must hold tokens in {PAD}..{network.n_items} (item index + 1, {PAD} = padding, see "
                f"recengine.data.sequences), got values from {int(windows.min())} to {int(windows.max())}"
            )
        network.eval()
        return self._score_windows(windows)

    def score_users(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Next-item scores (len(user_idx), n_items) float32 on `device`, given each known user's last
        training window (the last `max_length` items rated >= min_rating; none gives the biases)."""
        self._net()
        users = torch.as_tensor(np.asarray(user_idx), dtype=torch.long).reshape(-1)
        if users.numel() and (int(users.min()) < 0 or int(users.max()) >= self.n_users):
            raise IndexError(f"user indices must be in 0..{self.n_users - 1}, got {int(users.min())}..{int(users.max())}")
        return self.score_histories(self._user_windows[users])

    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Next-item score float32 (n,) of each (known user, item) pair (see `score_users`)."""
        users = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        items = np.asarray(item_idx, dtype=np.int64).reshape(-1)
        if users.shape != items.shape:
            raise ValueError(f"user_idx and item_idx must have the same length, got {users.shape[0]} and {items.shape[0]}")
        self._net()
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise IndexError(f"item indices must be in 0..{self.n_items - 1}, got {items.min()}..{items.max()}")
        distinct, row = np.unique(users, return_inverse=True)
        result = np.empty(len(users), dtype=np.float32)
        chunk = max(1, (1 << 24) // max(self.n_items, 1))  # bound the score matrix to 64 MiB
        for start in range(0, len(distinct), chunk):
            scores = self.score_users(distinct[start : start + chunk]).cpu().numpy()
            inside = (row >= start) & (row < start + chunk)
            result[inside] = scores[row[inside] - start, items[inside]]
        return result

    def item_factors(self) -> np.ndarray:
        """Input item embeddings (n_items, d) float32 (the PAD row left out)."""
        return self._net().item_embeddings.weight[1:].detach().float().cpu().numpy().copy()

    # --- new users ----------------------------------------------------------------------------
    def fold_in(self, ratings: Mapping[int, float]) -> np.ndarray:
        """A new user's history window (max_length,) int64 tokens from {item_idx: rating}.

        The dict's insertion order is the order the movies were rated (oldest first); ratings below
        `min_rating` are left out, and the last `max_length` remaining items form the window.
        """
        self._net()
        clean = self._validate_new_ratings(ratings)
        items = [item for item, rating in clean.items() if rating >= self.config.min_rating]
        return last_window(np.array(items, dtype=np.int64), self.config.max_length)

    def score_folded(self, user_repr: np.ndarray) -> torch.Tensor:
        """Next-item scores (n_items,) float32 on `device` for a window returned by `fold_in`."""
        window = np.asarray(user_repr)
        if window.ndim != 1 or not np.issubdtype(window.dtype, np.integer):
            raise ValueError(
                f"a fold-in representation of {self.name} is a 1-D token window (pass fold_in's result), "
                f"got {window.dtype} {window.shape}"
            )
        return self.score_histories(window[None, :])[0]

    def user_vector(self, user_repr: np.ndarray) -> np.ndarray | None:
        """The history vector h (d,) float32 of a `fold_in` window when it lives in the space of
        `item_factors()` (tied weights: scores are h . e_i + b_i); None otherwise."""
        network = self._net()
        if network.output_embeddings is not None:
            return None
        network.eval()
        with torch.no_grad():
            window = torch.as_tensor(np.asarray(user_repr, dtype=np.int64)[None, :], device=self.device)
            return network.represent(window)[0].float().cpu().numpy()

    def recommend_for(self, history: Mapping[int, float] | Sequence[int] | np.ndarray, k: int = 10,
                      exclude_rated: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k next items for a brand-new user: (item_idx int64, scores float32), best first.

        history: {item_idx: rating} in the order rated (see `fold_in`), or the ordered item indices
        the user watched, oldest first (every item counts). The history's items are excluded unless
        `exclude_rated` is False.
        """
        if isinstance(history, Mapping):
            return super().recommend_for(history, k, exclude_rated)
        self._net()
        items = np.asarray(history)
        if items.ndim != 1 or (items.size and not np.issubdtype(items.dtype, np.integer)):
            raise ValueError(f"history must be a 1-D list of item indices, oldest first, got {items.dtype} {items.shape}")
        items = items.astype(np.int64)
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"history items must be item indices in this model's catalogue (0..{self.n_items - 1}), "
                             f"got values from {items.min()} to {items.max()}")
        scores = self.score_histories(last_window(items, self.config.max_length)[None, :])[0]
        exclude = torch.from_numpy(np.unique(items)) if exclude_rated and items.size else None
        return top_k(scores, k, exclude)

    # --- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        state = dict(self._net().state_dict())
        state["_user_windows"] = self._user_windows
        return state

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self._user_windows = state.pop("_user_windows").to("cpu")
        n_items = state["output_bias"].shape[0]
        network = self._build_network(int(n_items)).to(self.device)
        network.load_state_dict(state)  # strict: shapes and names must match the config
        network.eval()
        self.network = network


@register
class PoolingModel(SequenceModel):
    """seq-pooling: the mean of the history's item embeddings."""

    name: ClassVar[str] = "seq-pooling"
    Config: ClassVar[type] = PoolingConfig

    def _build_network(self, n_items: int) -> SequenceNetwork:
        c: PoolingConfig = self.config
        return PoolingNetwork(n_items, c.embedding_dim, c.max_length, c.tie_weights, c.dropout)


@register
class RecurrentModel(SequenceModel):
    """seq-lstm: an LSTM (or GRU) over the history."""

    name: ClassVar[str] = "seq-lstm"
    Config: ClassVar[type] = LSTMConfig

    def _build_network(self, n_items: int) -> SequenceNetwork:
        c: LSTMConfig = self.config
        return RecurrentNetwork(n_items, c.embedding_dim, c.max_length, c.tie_weights, c.dropout, c.cell, c.n_layers)


@register
class TransformerModel(SequenceModel):
    """seq-transformer: causal self-attention with learned positions (SASRec-like)."""

    name: ClassVar[str] = "seq-transformer"
    Config: ClassVar[type] = TransformerConfig

    def _build_network(self, n_items: int) -> SequenceNetwork:
        c: TransformerConfig = self.config
        return TransformerNetwork(n_items, c.embedding_dim, c.max_length, c.tie_weights, c.dropout,
                                  c.n_layers, c.n_heads, c.feedforward_factor)


# --- evaluation protocols ---------------------------------------------------------------------
def next_item_windows(
    dataset: Dataset, length: int = PROTOCOL_WINDOW, step: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histories and targets of the classic next-item protocol.

    Every user's time-ordered items are cut into windows of `length` (`step` apart, default
    `length`; `recengine.data.sequences.windows`, windows with fewer than 2 items dropped); each
    window's last item is the target and the items before it the history.
    Returns (histories int64 (n, length - 1) tokens, targets int64 (n,) item indices).
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"length must be an int >= 2 (a history item and a target), got {length!r}")
    cut = windows(dataset, int(length), step=step, min_length=2)
    return cut[:, :-1], from_token(cut[:, -1])


def validation_windows(history: Dataset, valid: Dataset, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One next-item case per interaction of `valid`: its target item and the history before it.

    The history of a `valid` interaction is the up to `max_length` items the same user had before
    it, in `history` and `valid` together (time order; at equal times `history` first, then row
    order). This fits a held-out continuation (leave-last-out), held-out users (the history is
    their own earlier valid items) and random hold-outs alike. Cases in order of (user, time).
    Returns (histories int64 (n, max_length) tokens, left-padded; targets int64 (n,) item indices).
    """
    users = np.concatenate([history.users, valid.users]).astype(np.int64)
    items = np.concatenate([history.items, valid.items]).astype(np.int64)
    times = np.concatenate([history.timestamps, valid.timestamps])
    rows = np.arange(len(users))
    order = np.lexsort((rows, times, users))  # by user, then time, then row (history rows first)
    users, items, is_valid = users[order], items[order], order >= len(history)
    starts = np.searchsorted(users, users, side="left")  # first row of each row's user
    positions = np.flatnonzero(is_valid)
    offsets = positions[:, None] - max_length + np.arange(max_length)[None, :]
    real = offsets >= starts[positions][:, None]
    histories = np.where(real, items[np.where(real, offsets, 0)] + 1, PAD)
    return histories, items[positions]


def evaluate_next_item(model: Any, split: Split, k: int = 10, length: int = PROTOCOL_WINDOW) -> dict[str, float]:
    """Classic next-item protocol on a split by user: {"hit@k", "ndcg@k", "mrr"}.

    The test users' time-ordered ratings are cut into windows of `length` (step `length`), and
    each window's last item is ranked among all items given the `length - 1` before it
    (`sequence_metrics`, pessimistic ties, history items not excluded). `model` is anything with
    `score_histories(windows)` trained on `split.train` (a sequence model, `Popularity`).
    """
    histories, targets = next_item_windows(split.test, length)
    if len(targets) == 0:
        raise ValueError(f"no test window of at least 2 items in {split.test!r}; is the split's test part empty?")
    return sequence_metrics(model.score_histories, histories, targets, k=k)


def evaluate_last_item(model: Any, history: Dataset, test: Dataset, k: int = 10, max_length: int = 200) -> dict[str, float]:
    """Leave-last-out protocol: {"hit@k", "ndcg@k", "mrr"} of each user's held-out items.

    Each test user's items are ranked given the last `max_length` items of their `history`
    (time order) by `model.score_histories`; their history items are excluded from the ranking
    (`ranking_metrics`, full ranking, pessimistic ties). With `split_leave_last_out` the history is
    the split's train part; validating on the item before it means fitting on
    `split_leave_last_out(train).train` and passing `history=train`.
    """
    user_windows = torch.from_numpy(last_windows(history, max_length))

    def score_users(users: np.ndarray) -> torch.Tensor:
        return model.score_histories(user_windows[torch.as_tensor(users, dtype=torch.long)])

    return ranking_metrics(score_users, history, test, k=k, metrics=["hit", "ndcg", "mrr"])
