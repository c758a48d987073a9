"""Training recipes that change how the Classifier learns (``model.defense`` in YAML).

Each is a :class:`mia_bench.classifier.Defense`; configs in ``lightning_configs/defense/``
add one to any base config (``mia-bench fit -c BASE.yaml -c defense/dp_sgd.yaml``).
Label smoothing, weight decay and dropout need no class: they are options of the
Classifier, its optimizer and the nets.
"""

from mia_bench.defenses.dp_sgd import DPSGD
from mia_bench.defenses.relaxloss import RelaxLoss
from mia_bench.defenses.self_distillation import NoisySelfDistillation

__all__ = ["DPSGD", "NoisySelfDistillation", "RelaxLoss"]
