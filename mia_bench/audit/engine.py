"""Audits: attacks + metrics for one target at one epoch, and leave-one-out over a group.

The target's keep row is the membership truth: only :func:`summarize_scores` sees it.
The harness also derives RMIA's population from it (the pool examples outside the
target's training set, as RMIA's evaluation does); attacks never compare an example
with itself, so that choice cannot move an example's own score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from mia_bench.attacks import Attack, AttackInputs
from mia_bench.attacks.embedding import layer_sweep_scores
from mia_bench.attacks.gmia import (
    gmia_report,
    indirect_log_pvalues,
    reference_features,
    select_vulnerable,
)
from mia_bench.attacks.neighbourhood import neighbourhood_attack
from mia_bench.metrics import summarize
from mia_bench.store.artifacts import EpochSignals, load_keep, load_signals
from mia_bench.store.groups import GroupRun
from mia_bench.store.references import References, load_references

GMIA_ALPHA = 0.01  # significance level of GMIA's direct test
GMIA_TOP_K = 50  # vulnerable records GMIA attacks per target
GMIA_THRESHOLD = 0.8  # cosine similarity of a neighbour in the references' embedding space


def needs_embeddings(attacks: Sequence[Attack]) -> bool:
    """Whether any attack reads layer embeddings (so the harness loads them)."""
    return any(a.needs_embeddings for a in attacks)


def build_inputs(
    target: EpochSignals, refs: References | None, target_keep: np.ndarray
) -> AttackInputs:
    """The attacker's view of one target, with references when there are any."""
    if refs is None:
        return AttackInputs(target.logits, target.labels, dict(target.embeddings))
    return AttackInputs(
        logits=target.logits,
        labels=target.labels,
        embeddings=dict(target.embeddings),
        ref_logits=refs.logits,
        ref_keep=refs.keep,
        ref_embeddings={k: v for k, v in refs.embeddings.items() if k in target.embeddings},
        population=~np.asarray(target_keep, dtype=bool),
    )


def score_attacks(
    attacks: Sequence[Attack], inputs: AttackInputs, sweep_layers: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Scores of every attack that can run.

    Reference attacks need references, and attacks comparing query views
    (``min_views``) need that many views; the others are left out.

    With ``nn_embedding`` (or ``neighbourhood``) among the attacks and more layers in
    ``sweep_layers``, the attack also runs on each other layer, as
    ``nn_embedding_<layer>`` (``neighbourhood_<layer>``): seed 000's per-layer sweep,
    which depth leaks the most membership.
    """
    views = inputs.logits.shape[1]
    usable = [
        a
        for a in attacks
        if (inputs.ref_logits is not None or not a.needs_references) and views >= a.min_views
    ]
    scores = {a.name: a(inputs) for a in usable}
    others = [layer for layer in sweep_layers if layer != "embedding"]
    if "nn_embedding" in scores and others:
        for layer, s in layer_sweep_scores(inputs, others).items():
            scores[layer_attack_name(layer)] = s
    if "neighbourhood" in scores:
        for layer in others:
            scores[layer_attack_name(layer, "neighbourhood")] = neighbourhood_attack(
                inputs, layer=layer
            )
    return scores


def layer_attack_name(layer: str, attack: str = "nn_embedding") -> str:
    """The name ``attack`` on ``layer`` is reported under.

    >>> layer_attack_name("embedding"), layer_attack_name("bert.encoder.layer.0")
    ('nn_embedding', 'nn_embedding_bert_encoder_layer_0')
    >>> layer_attack_name("fc0", "neighbourhood")
    'neighbourhood_fc0'
    """
    return attack if layer == "embedding" else f"{attack}_{layer.replace('.', '_')}"


def layer_depth_curve(
    metrics: Mapping[str, float], layers: Sequence[str], key: str = "auc", prefix: str = ""
) -> dict[str, float]:
    """``{layer: metric}`` of the embedding attack at each layer, in the order given.

    Layers the metrics lack are left out.

    Args:
        metrics: flat ``<prefix><attack>/<key>`` numbers (as :func:`summarize_scores`).
        layers: the layers, shallow to deep.
        key: which metric.
        prefix: the names' prefix, e.g. ``"mia/"``.

    >>> layer_depth_curve({"mia/nn_embedding/auc": 0.6, "mia/nn_embedding_fc0/auc": 0.5},
    ...                   ["fc0", "embedding"], prefix="mia/")
    {'fc0': 0.5, 'embedding': 0.6}
    """
    names = {layer: f"{prefix}{layer_attack_name(layer)}/{key}" for layer in layers}
    return {layer: metrics[name] for layer, name in names.items() if name in metrics}


def summarize_scores(
    scores: Mapping[str, np.ndarray],
    keep: np.ndarray,
    fprs: Sequence[float],
    inputs: AttackInputs | None = None,
) -> dict[str, float]:
    """Flat ``<attack>/<metric>`` numbers of every attack's scores.

    With ``gmia_direct`` among the scores and the references' ``embedding`` layer in
    ``inputs``, GMIA's judgement on its vulnerable records joins them
    (``gmia_direct/num_selected``, ``.../precision``, ``.../loss_precision``...: see
    :func:`gmia_metrics`).
    """
    out = {
        f"{name}/{key}": value
        for name, s in scores.items()
        for key, value in summarize(s, keep, tuple(fprs)).items()
    }
    if inputs is not None:
        out |= gmia_metrics(scores, inputs, keep)
    return out


def gmia_metrics(
    scores: Mapping[str, np.ndarray],
    inputs: AttackInputs,
    keep: np.ndarray,
    alpha: float = GMIA_ALPHA,
    top_k: int = GMIA_TOP_K,
    threshold: float = GMIA_THRESHOLD,
) -> dict[str, float]:
    """GMIA on its vulnerable records, other attacks at as many predictions.

    The ``top_k`` records with the fewest neighbours (cosine similarity >= ``threshold``
    among all pool records, in the references' mean ``embedding`` space) are attacked
    with the direct test at significance ``alpha``. Empty without ``gmia_direct`` scores
    or the references' ``embedding`` layer.
    """
    if "gmia_direct" not in scores or "embedding" not in inputs.ref_embeddings:
        return {}
    features = reference_features(inputs, "embedding")
    everyone = np.ones(len(features), dtype=bool)
    selected = select_vulnerable(features, everyone, threshold, top_k=top_k)
    log_p = -scores["gmia_direct"] * np.log(10.0)
    others = {name: s for name, s in scores.items() if name != "gmia_direct"}
    report = gmia_report(log_p, selected, keep, alpha, others)
    pool = gmia_report(log_p, everyone, keep, alpha, others)  # the test on every record
    metrics = report.as_metrics(prefix="gmia_direct") | pool.as_metrics("gmia_direct_pool")
    if inputs.population is not None:  # indirect: only the enhancing records are queried
        indirect = indirect_log_pvalues(inputs, selected, features)
        metrics |= gmia_report(indirect, selected, keep, alpha).as_metrics("gmia_indirect")
    return metrics


@dataclass
class AuditResult:
    """Leave-one-out results of one epoch.

    Attributes:
        epoch: the epoch audited (``"last"`` resolves per run).
        per_target: run index -> ``<attack>/<metric>`` -> value.
        scores: the first target's scores per attack (for ROC plots).
        keep: the first target's keep row.
        num_references: run index -> how many references it was attacked with.
        run_ids: run index -> the target's MLflow run id.
        target_epochs: run index -> the epoch its signals came from.
    """

    epoch: int | str
    per_target: dict[int, dict[str, float]] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    keep: np.ndarray | None = None
    num_references: dict[int, int] = field(default_factory=dict)
    run_ids: dict[int, str] = field(default_factory=dict)
    target_epochs: dict[int, int] = field(default_factory=dict)

    def aggregate(self) -> dict[str, dict[str, float]]:
        """``<attack>/<metric>`` -> mean, std (over targets) and num_targets."""
        keys = sorted({k for m in self.per_target.values() for k in m})
        out = {}
        for key in keys:
            values = np.array([m[key] for m in self.per_target.values() if key in m])
            out[key] = {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "num_targets": int(len(values)),
            }
        return out


def audit_group(
    runs: Sequence[GroupRun],
    attacks: Sequence[Attack],
    epoch: int | str = "last",
    num_targets: int = 4,
    reference_runs: Sequence[GroupRun] | None = None,
    layers: Sequence[str] = ("embedding",),
    fprs: Sequence[float] = (0.001, 0.01),
    progress: bool = True,
) -> AuditResult:
    """Leave-one-out audit: each of the first ``num_targets`` runs is the target.

    Args:
        runs: the group's runs (one per run index).
        attacks: attacks to run.
        epoch: epoch to audit, or ``"last"`` (each run's last recorded epoch).
        num_targets: how many runs (lowest run indices first) to attack.
        reference_runs: references; default the group's other runs. From another
            group, they model an attacker who did not know the target's recipe; a
            reference with the target's run id is always left out.
        layers: embedding layers to load when an embedding attack is configured.
        fprs: FPRs of the TPR metrics.
        progress: show a progress bar over the targets (on stderr).
    """
    layers = tuple(layers) if needs_embeddings(attacks) else ()
    result = AuditResult(epoch=epoch)
    targets = list(runs)[:num_targets]
    for target in tqdm(targets, desc=f"audit epoch {epoch}", unit="target", disable=not progress):
        target_epoch = target.resolve_epoch(epoch)
        if target_epoch is None:
            continue
        others = [r for r in (reference_runs or runs) if r.run_id != target.run_id]
        keep = load_keep(target.artifact_dir)
        wanted = target_epoch if epoch != "last" else "last"
        refs = load_references(others, wanted, layers, target_keep=keep)
        signals = load_signals(target.artifact_dir, target_epoch, layers)
        inputs = build_inputs(signals, refs, keep)
        scores = score_attacks(attacks, inputs, layers)
        result.per_target[target.run_index] = summarize_scores(scores, keep, fprs, inputs)
        result.num_references[target.run_index] = 0 if refs is None else len(refs.run_ids)
        result.run_ids[target.run_index] = target.run_id
        result.target_epochs[target.run_index] = target_epoch
        if result.keep is None:
            result.scores, result.keep = scores, keep
    return result
