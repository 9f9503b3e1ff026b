"""Layers as pure ``(init, apply)`` pairs, and the differentiable ops they use.

Each op sits in the same file as its handwritten ``custom_vjp`` rule and the
layer constructor that calls it; ``kernels`` evaluates the products inside the
convolution and pooling rules, by one of ``FORMULATIONS``.
"""

from tinyfn.layers.activation import LogSoftmax, ReLU, Softmax, log_softmax, relu, softmax
from tinyfn.layers.base import Layer, make_combinator, make_layer, parameterless, serial
from tinyfn.layers.conv import Conv2D, Deconv2D, conv2d, conv_output_size, deconv2d, deconv_output_size
from tinyfn.layers.conv_matrix import conv2d_matrix, deconv2d_matrix, unrolled_filter_matrix
from tinyfn.layers.dropout import Dropout, dropout
from tinyfn.layers.kernels import FORMULATIONS, default_formulation, formulation
from tinyfn.layers.linear import Linear, linear
from tinyfn.layers.pool import MaxPool2D, max_pool2d, max_pool2d_with_switches, max_unpool2d
from tinyfn.layers.precision import Float32
from tinyfn.layers.reshape import Flatten, flatten
from tinyfn.layers.base import apply_with_state, has_state, init_with_state
from tinyfn.layers.combinators import Add, Concat, FanOut, Identity, branch, parallel, residual
from tinyfn.layers.combinators import add_arrays, concat_arrays
from tinyfn.layers.norm import BatchNorm1D, BatchNorm2D, LayerNorm, batch_norm, batch_norm_inference, batch_norm_with_stats, layer_norm
from tinyfn.layers.spec import LAYERS, from_spec, register_layer, to_spec
from tinyfn.layers.tabulate import summary
from tinyfn.layers.avg_pool import AvgPool2D, GlobalAvgPool2D, avg_pool2d, global_avg_pool2d
from tinyfn.layers.pointwise import GELU, LeakyReLU, Sigmoid, SiLU, Tanh, gelu, leaky_relu, sigmoid, silu, tanh
from tinyfn.layers.embedding import Embedding, embedding
from tinyfn.layers.attention import ATTENTION_FORMULATIONS, dot_product_attention
from tinyfn.layers.transformer import (
    MultiHeadAttention, PatchEmbedding, PositionEmbedding, TakeToken, TransformerBlock, attention_probabilities,
    multi_head_attention, take_token,
)  # fmt: skip

__all__ = [
    # combinators
    "Layer",
    "make_layer",
    "make_combinator",
    "serial",
    "parameterless",
    # layers
    "Linear",
    "Conv2D",
    "Deconv2D",
    "MaxPool2D",
    "ReLU",
    "Softmax",
    "LogSoftmax",
    "Flatten",
    "Dropout",
    "Float32",
    # ops
    "linear",
    "conv2d",
    "deconv2d",
    "max_pool2d",
    "max_pool2d_with_switches",
    "max_unpool2d",
    "relu",
    "softmax",
    "log_softmax",
    "flatten",
    "dropout",
    # how the conv and pool products are evaluated
    "FORMULATIONS",
    "formulation",
    "default_formulation",
    # shapes and the teaching matrix form
    "conv_output_size",
    "deconv_output_size",
    "unrolled_filter_matrix",
    "conv2d_matrix",
    "deconv2d_matrix",
    # state
    "has_state",
    "init_with_state",
    "apply_with_state",
    # more combinators
    "branch",
    "parallel",
    "residual",
    "FanOut",
    "Add",
    "Concat",
    "Identity",
    # normalisation and average pooling
    "BatchNorm1D",
    "BatchNorm2D",
    "LayerNorm",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "batch_norm",
    "batch_norm_inference",
    "batch_norm_with_stats",
    "layer_norm",
    "avg_pool2d",
    "global_avg_pool2d",
    "add_arrays",
    "concat_arrays",
    # architecture as data
    "summary",
    "to_spec",
    "from_spec",
    "register_layer",
    "LAYERS",
    # smooth activations, embedding, attention
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "SiLU",
    "GELU",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "silu",
    "gelu",
    "Embedding",
    "embedding",
    "dot_product_attention",
    "ATTENTION_FORMULATIONS",
    # transformer layers
    "MultiHeadAttention",
    "PatchEmbedding",
    "PositionEmbedding",
    "TransformerBlock",
    "TakeToken",
    "multi_head_attention",
    "attention_probabilities",
    "take_token",
]
