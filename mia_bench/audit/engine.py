"""Audits: attacks + metrics for one target at one epoch, and leave-one-out over a group.

The target's keep row is the membership truth: only the metrics in :func:`audit_target` see it.
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
from mia_bench.attacks.neighbourhood import neighbourhood_attack
from mia_bench.audit.gmia import gmia_reports
from mia_bench.console import tqdm_disable
from mia_bench.empirical_privacy import DELTA, epsilon_lower_bound
from mia_bench.errors import UserError
from mia_bench.intervals import interval_metrics
from mia_bench.metrics import DEFAULT_FPRS, summarize
from mia_bench.store.artifacts import EpochSignals
from mia_bench.store.groups import GroupRun
from mia_bench.store.references import (
    LoadedRun,
    ReferenceNeeds,
    References,
    load_runs,
    open_pool,
)


def needs_embeddings(attacks: Sequence[Attack]) -> bool:
    """Whether any attack reads layer embeddings (so the harness loads them)."""
    return any(a.needs_embeddings for a in attacks)


def needs_of(attacks: Sequence[Attack], layers: Sequence[str] = ()) -> ReferenceNeeds:
    """What ``attacks`` read of the references: their statistics, full logits only for
    the attacks that declare it, and ``layers`` when an attack reads embeddings.

    >>> from mia_bench.attacks import get_attack
    >>> needs_of([get_attack("lira_online"), get_attack("loss")])
    ReferenceNeeds(statistics=('scaled_logit',), logits=False, layers=())
    """
    refs = [a for a in attacks if a.needs_references]
    names = tuple(dict.fromkeys(n for a in refs for n in a.statistics))
    return ReferenceNeeds(
        statistics=names,
        logits=any(a.needs_ref_logits for a in refs),
        layers=tuple(layers) if needs_embeddings(attacks) else (),
    )


def build_inputs(
    target: EpochSignals, refs: References | None, target_keep: np.ndarray
) -> AttackInputs:
    """The attacker's view of one target, with references when there are any."""
    if refs is None:
        return AttackInputs(
            target.logits, target.labels, dict(target.embeddings), stats=target.stats
        )
    return AttackInputs(
        logits=target.logits,
        labels=target.labels,
        embeddings=dict(target.embeddings),
        ref_logits=refs.logits,
        ref_keep=refs.keep,
        ref_embeddings={k: v for k, v in refs.embeddings.items() if k in target.embeddings},
        population=~np.asarray(target_keep, dtype=bool),
        stats=target.stats,
        ref_stats=refs.stats,
    )


def score_attacks(
    attacks: Sequence[Attack], inputs: AttackInputs, sweep_layers: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Scores of every attack that can run.

    Reference attacks need references, and attacks comparing query views
    (``min_views``) need that many views; the others are left out.

    With ``nn_embedding`` (or ``neighbourhood``) among the attacks and more layers in
    ``sweep_layers``, the attack also runs on each other layer, as
    ``nn_embedding_<layer>`` (``neighbourhood_<layer>``): the Embedding Attack Project's
    per-layer sweep, which depth leaks the most membership.
    """
    views = inputs.logits.shape[1]
    usable = [
        a
        for a in attacks
        if (inputs.has_references or not a.needs_references)
        and (inputs.ref_logits is not None or not a.needs_ref_logits)
        and views >= a.min_views
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


@dataclass(frozen=True)
class TargetAudit:
    """The audit of one target at one epoch.

    Attributes:
        metrics: attack -> metric -> value (see :func:`mia_bench.metrics.summarize`).
        reports: GMIA's reports on its vulnerable records, report -> metric -> value.
        scores: attack -> ``float64[N]`` score per pool example (higher = member).
        references: ``(run_id, epoch)`` of every reference used.
        vulnerable: pool indices of the records GMIA selected as vulnerable (None when
            GMIA did not run).
    """

    metrics: dict[str, dict[str, float]]
    reports: dict[str, dict[str, float]]
    scores: dict[str, np.ndarray]
    references: list[tuple[str, int]]
    vulnerable: np.ndarray | None = None

    def flat(self) -> dict[str, float]:
        """``<attack>/<metric>`` numbers, reports included (see :func:`flatten`)."""
        return flatten(self.metrics) | flatten(self.reports)


def flatten(nested: Mapping[str, Mapping[str, float]], prefix: str = "") -> dict[str, float]:
    """``{attack: {metric: v}}`` as ``{"<prefix><attack>/<metric>": v}``: the one place
    nested results become flat names (for MLflow and the audit documents).

    >>> flatten({"loss": {"auc": 0.6}}, prefix="mia/")
    {'mia/loss/auc': 0.6}
    """
    return {f"{prefix}{name}/{key}": v for name, d in nested.items() for key, v in d.items()}


def audit_target(
    signals: EpochSignals,
    keep: np.ndarray,
    refs: References | None,
    attacks: Sequence[Attack],
    fprs: Sequence[float] = DEFAULT_FPRS,
    sweep_layers: Sequence[str] = (),
    bootstrap: int = 0,
    delta: float = DELTA,
) -> TargetAudit:
    """Attack one target at one epoch and score the attacks: the one audit engine.

    ``AttackMonitor`` (as training goes), group audits and checkpoint audits all call
    this. The target's ``keep`` row (membership truth) is used only to score the attacks
    and to choose RMIA's population among the target's non-members.

    Args:
        signals: the target's signals (logits ``[N, A, C]``, embeddings).
        keep: ``bool[N]``, the target's keep row.
        refs: reference runs' signals, or None (reference attacks are left out).
        attacks: the attacks to run.
        fprs: FPRs of the TPR metrics.
        sweep_layers: layers for the per-layer embedding sweep (see :func:`score_attacks`).
        bootstrap: resamples of the bootstrap intervals of AUC and TPR (0: none; the
            exact Clopper-Pearson intervals of the TPR and FPR are always computed).
        delta: the delta of each attack's ``epsilon_lower_bound``.
    """
    inputs = build_inputs(signals, refs, keep)
    scores = score_attacks(attacks, inputs, sweep_layers)
    metrics = {name: score_metrics(s, keep, fprs, bootstrap, delta) for name, s in scores.items()}
    used = [] if refs is None else list(zip(refs.run_ids, refs.epochs, strict=True))
    reports, vulnerable = gmia_reports(scores, inputs, keep)
    return TargetAudit(metrics, reports, scores, used, vulnerable)


def score_metrics(
    scores: np.ndarray,
    keep: np.ndarray,
    fprs: Sequence[float] = DEFAULT_FPRS,
    bootstrap: int = 0,
    delta: float = DELTA,
) -> dict[str, float]:
    """One attack's numbers on one target: :func:`~mia_bench.metrics.summarize`'s, their
    intervals (:func:`~mia_bench.intervals.interval_metrics`) and the empirical epsilon
    (:func:`~mia_bench.empirical_privacy.epsilon_lower_bound` at ``delta``)."""
    out = summarize(scores, keep, tuple(fprs))
    out |= interval_metrics(scores, keep, fprs, resamples=bootstrap)
    out["epsilon_lower_bound"] = epsilon_lower_bound(scores, keep, delta).epsilon
    return out


@dataclass
class AuditResult:
    """Leave-one-out results of one epoch.

    Attributes:
        epoch: the epoch audited (``"last"`` resolves per run).
        per_target: run index -> the target's audit.
        run_ids: run index -> the target's MLflow run id.
        target_epochs: run index -> the epoch its signals came from.
        keep: the first target's keep row (for ROC plots).
        keeps: run index -> the target's keep row (for the records that leak).
        labels: the pool's class labels.
    """

    epoch: int | str
    per_target: dict[int, TargetAudit] = field(default_factory=dict)
    run_ids: dict[int, str] = field(default_factory=dict)
    target_epochs: dict[int, int] = field(default_factory=dict)
    keep: np.ndarray | None = None
    keeps: dict[int, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """The first target's scores per attack."""
        first = min(self.per_target, default=None)
        return {} if first is None else self.per_target[first].scores

    def flat(self) -> dict[int, dict[str, float]]:
        """run index -> ``<attack>/<metric>`` -> value."""
        return {i: t.flat() for i, t in self.per_target.items()}

    def num_references(self) -> dict[int, int]:
        """run index -> how many references it was attacked with."""
        return {i: len(t.references) for i, t in self.per_target.items()}

    def used(self) -> dict[int, dict]:
        """run index -> the target's run id and epoch and its references' (the record)."""
        return {
            i: {
                "run_id": self.run_ids.get(i),
                "epoch": self.target_epochs[i],
                "references": [list(r) for r in t.references],
            }
            for i, t in self.per_target.items()
        }

    def aggregate(self) -> dict[str, dict[str, float]]:
        """``<attack>/<metric>`` -> mean, std (over targets) and num_targets."""
        flat = self.flat().values()
        keys = sorted({k for m in flat for k in m})
        out = {}
        for key in keys:
            values = np.array([m[key] for m in flat if key in m])
            out[key] = {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "num_targets": int(len(values)),
            }
        return out


def audit_group(
    targets: Sequence[GroupRun],
    attacks: Sequence[Attack],
    epoch: int | str = "last",
    reference_runs: Sequence[GroupRun] | None = None,
    layers: Sequence[str] = ("embedding",),
    fprs: Sequence[float] = DEFAULT_FPRS,
    min_references: int = 1,
    progress: bool | None = None,
    allow_partial: bool = False,
    bootstrap: int = 0,
) -> AuditResult:
    """Leave-one-out audit at one epoch: each run of ``targets`` is the target in turn.

    Every run's keep row and statistics of the epoch are loaded once (not once per
    target), the statistics stacked as ``[M, N, A]`` memmaps; each target's references
    are their rows other than its own. Full signals of the references are loaded only for
    attacks that read full logits or embeddings; a target's own signals, one at a time.

    Args:
        targets: the runs to attack (members of their group).
        attacks: attacks to run.
        epoch: epoch to audit, or ``"last"`` (each run's last recorded epoch).
        reference_runs: the reference pool (default: ``targets`` themselves), usually
            every member of the targets' group. From another group they model an
            attacker who did not know the recipe; the target's own run is never its
            reference.
        layers: embedding layers to load when an attack needs embeddings.
        fprs: FPRs of the TPR metrics.
        min_references: fewest references a target is attacked with, else an error.
        progress: show a progress bar over the targets (on stderr); None: only when
            stderr is a terminal.
        allow_partial: leave out (with a warning) a reference whose files are damaged,
            instead of stopping.
        bootstrap: resamples of each target's bootstrap intervals (see :func:`audit_target`).

    Raises:
        UserError: a target lacks the epoch, has fewer than ``min_references``, or a
            run's files are damaged (without ``allow_partial``).
    """
    needs = needs_of(attacks, layers)
    layers = needs.layers
    needs_refs = any(a.needs_references for a in attacks)
    runs = reference_runs if reference_runs is not None else targets
    pool = open_pool(runs if needs_refs else [], epoch, needs, skip_corrupt=allow_partial)
    result = AuditResult(epoch=epoch)
    for target in tqdm(
        targets, desc=f"audit epoch {epoch}", unit="target", disable=tqdm_disable(progress)
    ):
        in_pool = pool.get(target.run_id)
        own = in_pool if in_pool and in_pool.signals else _load_target(target, epoch, layers)
        refs = pool.references(target.run_id, own.keep) if needs_refs else None
        count = 0 if refs is None else len(refs.run_ids)
        if needs_refs and count < min_references:
            raise UserError(
                f"run {target.run_index} of group {target.group!r} has {count} references "
                f"with signals of epoch {own.epoch} (needs {min_references}): train more "
                "reference runs, or audit another --epoch"
            )
        result.per_target[target.run_index] = audit_target(
            own.signals, own.keep, refs, attacks, fprs, layers, bootstrap
        )
        result.keeps[target.run_index] = np.asarray(own.keep, dtype=bool)
        result.run_ids[target.run_index] = target.run_id
        result.target_epochs[target.run_index] = own.epoch
        if result.keep is None:
            result.keep, result.labels = own.keep, np.asarray(own.signals.labels)
    return result


def _load_target(target: GroupRun, epoch: int | str, layers: Sequence[str]) -> LoadedRun:
    """The target's signals at ``epoch`` (a damaged file stops the audit), or an error
    naming the epochs it recorded."""
    loaded = load_runs([target], epoch, layers, skip_corrupt=False)
    if not loaded:
        raise UserError(
            f"run {target.run_index} of group {target.group!r} recorded no signals at epoch "
            f"{epoch}; it recorded epochs {target.epochs()}: pass one of them to --epoch"
        )
    return loaded[0]
