"""Plain ``nn.Module`` architectures, each ending in ``embedding`` then ``head``.

Every net is built as ``Net(input_shape, num_classes, **options)`` so the Classifier
can inject the shape and class count of the data.
"""

from mia_bench.nets.cnn import CNN
from mia_bench.nets.mlp import MLP
from mia_bench.nets.resnet import ResNet18

ALL_NETS = (MLP, CNN, ResNet18)

__all__ = ["ALL_NETS", "CNN", "MLP", "ResNet18"]
