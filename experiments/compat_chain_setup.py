"""The compat_chain experiment's setting, models and scoring: what every family trains on.

Shared by experiments/compat_chain.py (the chain and new-class studies, the L2 sweep) and
experiments/compat_chain_contrastive.py (the cross-model contrastive families).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from regfree.compat import (
    BackwardCompatibleLoss,
    CompatibilityReport,
    CosineClassifier,
    CrossModelContrastiveLoss,
    CrossModelNCALoss,
    EmbeddingRegressionLoss,
    ProjectedModel,
    embedder,
    simplex_head,
)
from regfree.data import DataSplit, load_digits_split, load_mnist1d, load_mnist5k
from regfree.models import MLP, ConvNet1D, ConvNet2D
from regfree.retrieval import retrieval_matrix
from regfree.training import fit_adam_cosine

RESULTS = Path(__file__).parent / "results"
MAP_K = 100  # mAP over each query's 100 nearest gallery items (the full ranking is slow)
VALIDATION_SHARE = 0.2  # of the training split, held out as queries by --split val
HEAD_WEIGHTINGS = ("equal", "oldest")

@dataclass(frozen=True)
class Setting:
    dataset: str
    widths: tuple[int, ...]  # capacity of v1 .. v4
    epochs: int
    shares: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # share of the training split, v1 .. v4
    dim: int = 32
    lr: float = 3e-3
    batch_size: int = 128
    scale: float = 16.0  # cosine heads' temperature
    bct_weight: float = 1.0
    l2_weight: float = 1.0
    contrastive_weight: float = 1.0
    temperature: float = 0.1  # CrossModelContrastiveLoss'
    margin: float = 2.0  # NewClassMargin's offset (logit units, scale 16)
    seen_classes: int = 5
    num_samples: int = 12000  # mnist1d only


SETTINGS = {
    "mnist1d": Setting("mnist1d", widths=(16, 24, 32, 48), epochs=20),
    "digits": Setting("digits", widths=(16, 32, 64, 128), epochs=40),
    "mnist5k": Setting("mnist5k", widths=(4, 6, 8, 12), epochs=20),
}


def load(setting: Setting) -> DataSplit:
    if setting.dataset == "mnist1d":
        return load_mnist1d(num_samples=setting.num_samples, seed=42)
    if setting.dataset == "digits":
        return load_digits_split(seed=0)
    return load_mnist5k(seed=0)


def validation_split(data: DataSplit, seed: int) -> DataSplit:
    """``data`` with a stratified share of its training split as the "test" (query) part and
    the rest as the training part; the real test split is dropped, so nothing tuned on the
    result has seen it."""
    rest, held = train_test_split(np.arange(len(data.y_train)), test_size=VALIDATION_SHARE,
                                  stratify=data.y_train, random_state=seed)
    rest, held = np.sort(rest), np.sort(held)
    return DataSplit(data.x_train[rest], data.y_train[rest], data.x_train[held],
                     data.y_train[held], data.num_classes)


def head_weights(heads: int, weighting: str) -> Optional[list[float]]:
    """BackwardCompatibleLoss' head_weights for ``heads`` earlier heads, oldest first."""
    return None if weighting == "equal" else [float(heads - h) for h in range(heads)]


def build(setting: Setting, version: int, classes: int, seed: int, head: str = "cosine"
          ) -> nn.Module:
    """Version ``version`` (0-based) of the dataset's model, cosine or fixed simplex head."""
    torch.manual_seed(seed)
    # the simplex spans num_classes - 1 directions: a wider embedding would leave free
    # directions that each version fills its own way (CoReS uses d = K - 1)
    width, dim = setting.widths[version], (9 if head == "simplex" else setting.dim)
    if setting.dataset == "mnist1d":
        model = ConvNet1D(width=width, embedding_dim=dim, return_embeddings=True)
    elif setting.dataset == "digits":
        model = MLP(64, hidden=width, embedding_dim=dim, return_embeddings=True)
    else:
        model = ConvNet2D(width=width, embedding_dim=dim, return_embeddings=True)
    if head == "simplex":  # every row exists from v1 on, also for classes not yet trained
        model.head = simplex_head(dim, 10, scale=setting.scale)
    else:
        model.head = CosineClassifier(dim, classes, scale=setting.scale)
    return model


class Seed:
    """Everything one seed trains: data parts, models, and the terms that tie them."""

    def __init__(self, setting: Setting, data: DataSplit, seed: int) -> None:
        self.setting, self.data, self.seed = setting, data, seed
        order = np.random.default_rng(seed).permutation(len(data.y_train))
        self.parts = [np.sort(order[:round(share * len(order))]) for share in setting.shares]

    def train(self, version: int, terms=(), *, head: str = "cosine", classes: int = 10,
              part: Optional[np.ndarray] = None, projected: bool = False) -> nn.Module:
        """``projected``: the model wrapped in a ProjectedModel with a linear projection
        (the terms see its projected embeddings, its head the native ones)."""
        s = self.setting
        seed = self.seed + 1000 * version
        model = build(s, version, classes, seed, head)
        if projected:
            model = ProjectedModel(model, s.dim)
        pick = self.parts[version] if part is None else part
        fit_adam_cosine(model, (self.data.x_train[pick], self.data.y_train[pick]),
                        loss_terms=list(terms), epochs=s.epochs, lr=s.lr,
                        batch_size=s.batch_size, seed=seed, progress=False)
        return model

    def bct(self, heads, **options) -> BackwardCompatibleLoss:
        return BackwardCompatibleLoss(heads, weight=self.setting.bct_weight, **options)

    def l2(self, previous: nn.Module, version: int, weight: Optional[float] = None
           ) -> EmbeddingRegressionLoss:
        """L2 to ``previous``'s embeddings of ``version``'s training data (cached by position);
        ``weight`` defaults to the setting's."""
        cache = embedder(previous)(self.data.x_train[self.parts[version]])
        weight = self.setting.l2_weight if weight is None else weight
        return EmbeddingRegressionLoss(cache, weight=weight, normalize=True)

    def contrastive(self, earlier: list[nn.Module], version: int, weight: float
                    ) -> CrossModelContrastiveLoss:
        """The cross-model contrastive term onto every model in ``earlier`` (oldest first):
        their embeddings of ``version``'s training data, cached by position, equal weights."""
        x = self.data.x_train[self.parts[version]]
        caches = [embedder(model)(x) for model in earlier]
        return CrossModelContrastiveLoss(caches, weight=weight,
                                         temperature=self.setting.temperature)

    def nca(self, earlier: list[nn.Module], version: int, weight: float) -> CrossModelNCALoss:
        """The cross-model NCA term onto every model in ``earlier`` (oldest first): their
        embeddings of ``version``'s training data as the memory, equal weights."""
        x, y = self.data.x_train[self.parts[version]], self.data.y_train[self.parts[version]]
        return CrossModelNCALoss([embedder(model)(x) for model in earlier], y, weight=weight,
                                 temperature=self.setting.temperature)

    def pulled(self, v1: nn.Module, weight: float, weighting: str = "equal",
               v2: Optional[nn.Module] = None) -> list[nn.Module]:
        """The all heads + L2 chain: v_k through every earlier head, pulled onto v_(k-1).
        ``v2`` reuses a v2 trained with the same weight (one earlier head: weighting is moot)."""
        if v2 is None:
            v2 = self.train(1, [self.bct(v1.head), self.l2(v1, 1, weight)])
        chain = [v1, v2]
        for k in (2, 3):
            bct = self.bct([m.head for m in chain], head_weights=head_weights(k, weighting))
            chain.append(self.train(k, [bct, self.l2(chain[-1], k, weight)]))
        return chain

    def report(self, models: list[nn.Module]) -> dict:
        return scores(self.data, {f"v{k + 1}": embedder(m) for k, m in enumerate(models)})


def scores(data: DataSplit, embedders: dict[str, Callable], queries: Optional[np.ndarray] = None
           ) -> dict:
    """The compatibility report (top-1, mAP@100) of ``embedders`` on test queries (all, or the
    boolean mask ``queries``) against the training split as gallery."""
    pick = slice(None) if queries is None else queries
    x_query = data.x_test[pick]
    matrix = retrieval_matrix({name: f(x_query) for name, f in embedders.items()},
                              data.y_test[pick],
                              {name: f(data.x_train) for name, f in embedders.items()},
                              data.y_train, ks=(1,), map_k=MAP_K)
    return CompatibilityReport(matrix).to_dict()


def group_scores(run: Seed, old: Callable, new: Callable, seen: int,
                 new_on_old: Optional[Callable] = None) -> dict:
    """old/old, new/old and new/new (top-1, mAP) for seen and unseen queries apart;
    ``new_on_old`` embeds the new model's queries for the old gallery when they differ from
    ``new`` (a ProjectedModel's compatible space, an adapter)."""
    d = run.data
    galleries = {"v1": old(d.x_train), "v2": new(d.x_train)}
    out = {}
    for group, mask in (("seen", d.y_test < seen), ("unseen", d.y_test >= seen)):
        x_query = d.x_test[mask]
        new_queries = new(x_query) if new_on_old is None else {"v1": new_on_old(x_query),
                                                               "v2": new(x_query)}
        matrix = retrieval_matrix({"v1": old(x_query), "v2": new_queries}, d.y_test[mask],
                                  galleries, d.y_train, ks=(1,), map_k=MAP_K)
        matrices = CompatibilityReport(matrix).to_dict()["matrices"]
        out[group] = {f"{a}/{b} {m}": matrices[m][i][j]
                      for a, b, i, j in (("old", "old", 0, 0), ("new", "old", 1, 0),
                                         ("new", "new", 1, 1))
                      for m in ("top1", "mAP")}
    return out


def seed_path(name: str, seed: int) -> Path:
    return RESULTS / f"compat_chain_{name}.seed{seed}.json"
