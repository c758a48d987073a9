"""Plain ``nn.Module`` architectures, each ending in ``embedding`` then ``head``.

Every net is built as ``Net(input_shape, num_classes, **options)`` so the Classifier
can inject the shape and class count of the data.
"""

from mia_bench.nets.bert import BERT
from mia_bench.nets.cnn import CNN
from mia_bench.nets.mlp import MLP
from mia_bench.nets.resnet import ResNet18
from mia_bench.nets.transformer import TextTransformer
from mia_bench.nets.vit import ViT

ALL_NETS = (MLP, CNN, ResNet18, ViT, BERT, TextTransformer)

__all__ = ["ALL_NETS", "BERT", "CNN", "MLP", "ResNet18", "TextTransformer", "ViT"]
