"""Layers as pure ``(init, apply)`` pairs, and the differentiable ops they use.

Each op sits in the same file as its handwritten ``custom_vjp`` rule and the
layer constructor that calls it; ``kernels`` evaluates the products inside the
convolution and pooling rules, by one of ``FORMULATIONS``.
"""

from tinyfn.layers.activation import LogSoftmax, ReLU, Softmax, log_softmax, relu, softmax
from tinyfn.layers.base import Layer, parameterless, serial
from tinyfn.layers.conv import Conv2D, Deconv2D, conv2d, conv_output_size, deconv2d, deconv_output_size
from tinyfn.layers.conv_matrix import conv2d_matrix, deconv2d_matrix, unrolled_filter_matrix
from tinyfn.layers.dropout import Dropout, dropout
from tinyfn.layers.kernels import FORMULATIONS, default_formulation, formulation
from tinyfn.layers.linear import Linear, linear
from tinyfn.layers.pool import MaxPool2D, max_pool2d, max_pool2d_with_switches, max_unpool2d
from tinyfn.layers.precision import Float32
from tinyfn.layers.reshape import Flatten, flatten

__all__ = [
    # combinators
    "Layer",
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
]
