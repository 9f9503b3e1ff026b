"""Layers as pure ``(init, apply)`` pairs, and the differentiable ops they use.

Each op sits in the same file as its handwritten ``custom_vjp`` rule and the
layer constructor that calls it; ``kernels`` evaluates the products inside the
convolution and pooling rules, by one of ``FORMULATIONS``.
"""

from tinyfn.layers.activation import (
    LogSoftmax as LogSoftmax,
)
from tinyfn.layers.activation import (
    ReLU as ReLU,
)
from tinyfn.layers.activation import (
    Softmax as Softmax,
)
from tinyfn.layers.activation import (
    log_softmax as log_softmax,
)
from tinyfn.layers.activation import (
    relu as relu,
)
from tinyfn.layers.activation import (
    softmax as softmax,
)
from tinyfn.layers.attention import (
    ATTENTION_FORMULATIONS as ATTENTION_FORMULATIONS,
)
from tinyfn.layers.attention import (
    dot_product_attention as dot_product_attention,
)
from tinyfn.layers.avg_pool import (
    AvgPool2D as AvgPool2D,
)
from tinyfn.layers.avg_pool import (
    GlobalAvgPool2D as GlobalAvgPool2D,
)
from tinyfn.layers.avg_pool import (
    avg_pool2d as avg_pool2d,
)
from tinyfn.layers.avg_pool import (
    global_avg_pool2d as global_avg_pool2d,
)
from tinyfn.layers.base import (
    Layer as Layer,
)
from tinyfn.layers.base import (
    apply_with_state as apply_with_state,
)
from tinyfn.layers.base import (
    has_state as has_state,
)
from tinyfn.layers.base import (
    init_with_state as init_with_state,
)
from tinyfn.layers.base import (
    make_combinator as make_combinator,
)
from tinyfn.layers.base import (
    make_layer as make_layer,
)
from tinyfn.layers.base import (
    parameterless as parameterless,
)
from tinyfn.layers.base import (
    serial as serial,
)
from tinyfn.layers.combinators import (
    Add as Add,
)
from tinyfn.layers.combinators import (
    Concat as Concat,
)
from tinyfn.layers.combinators import (
    FanOut as FanOut,
)
from tinyfn.layers.combinators import (
    Identity as Identity,
)
from tinyfn.layers.combinators import add_arrays as add_arrays
from tinyfn.layers.combinators import (
    branch as branch,
)
from tinyfn.layers.combinators import concat_arrays as concat_arrays
from tinyfn.layers.combinators import (
    parallel as parallel,
)
from tinyfn.layers.combinators import (
    residual as residual,
)
from tinyfn.layers.conv import (
    Conv2D as Conv2D,
)
from tinyfn.layers.conv import (
    Deconv2D as Deconv2D,
)
from tinyfn.layers.conv import (
    conv2d as conv2d,
)
from tinyfn.layers.conv import (
    conv_output_size as conv_output_size,
)
from tinyfn.layers.conv import (
    deconv2d as deconv2d,
)
from tinyfn.layers.conv import (
    deconv_output_size as deconv_output_size,
)
from tinyfn.layers.conv_matrix import (
    conv2d_matrix as conv2d_matrix,
)
from tinyfn.layers.conv_matrix import (
    deconv2d_matrix as deconv2d_matrix,
)
from tinyfn.layers.conv_matrix import (
    unrolled_filter_matrix as unrolled_filter_matrix,
)
from tinyfn.layers.dropout import Dropout as Dropout
from tinyfn.layers.dropout import dropout as dropout
from tinyfn.layers.embedding import Embedding as Embedding
from tinyfn.layers.embedding import embedding as embedding
from tinyfn.layers.kernels import (
    FORMULATIONS as FORMULATIONS,
)
from tinyfn.layers.kernels import (
    default_formulation as default_formulation,
)
from tinyfn.layers.kernels import (
    formulation as formulation,
)
from tinyfn.layers.linear import Linear as Linear
from tinyfn.layers.linear import linear as linear
from tinyfn.layers.norm import (
    BatchNorm1D as BatchNorm1D,
)
from tinyfn.layers.norm import (
    BatchNorm2D as BatchNorm2D,
)
from tinyfn.layers.norm import (
    LayerNorm as LayerNorm,
)
from tinyfn.layers.norm import (
    batch_norm as batch_norm,
)
from tinyfn.layers.norm import (
    batch_norm_inference as batch_norm_inference,
)
from tinyfn.layers.norm import (
    batch_norm_with_stats as batch_norm_with_stats,
)
from tinyfn.layers.norm import (
    layer_norm as layer_norm,
)
from tinyfn.layers.pointwise import (
    GELU as GELU,
)
from tinyfn.layers.pointwise import (
    LeakyReLU as LeakyReLU,
)
from tinyfn.layers.pointwise import (
    Sigmoid as Sigmoid,
)
from tinyfn.layers.pointwise import (
    SiLU as SiLU,
)
from tinyfn.layers.pointwise import (
    Tanh as Tanh,
)
from tinyfn.layers.pointwise import (
    gelu as gelu,
)
from tinyfn.layers.pointwise import (
    leaky_relu as leaky_relu,
)
from tinyfn.layers.pointwise import (
    sigmoid as sigmoid,
)
from tinyfn.layers.pointwise import (
    silu as silu,
)
from tinyfn.layers.pointwise import (
    tanh as tanh,
)
from tinyfn.layers.pool import (
    MaxPool2D as MaxPool2D,
)
from tinyfn.layers.pool import (
    max_pool2d as max_pool2d,
)
from tinyfn.layers.pool import (
    max_pool2d_with_switches as max_pool2d_with_switches,
)
from tinyfn.layers.pool import (
    max_unpool2d as max_unpool2d,
)
from tinyfn.layers.precision import Float32 as Float32
from tinyfn.layers.reshape import Flatten as Flatten
from tinyfn.layers.reshape import flatten as flatten
from tinyfn.layers.spec import (
    LAYERS as LAYERS,
)
from tinyfn.layers.spec import (
    from_spec as from_spec,
)
from tinyfn.layers.spec import (
    register_layer as register_layer,
)
from tinyfn.layers.spec import (
    to_spec as to_spec,
)
from tinyfn.layers.tabulate import summary as summary
from tinyfn.layers.transformer import (
    MultiHeadAttention as MultiHeadAttention,
)
from tinyfn.layers.transformer import (
    PatchEmbedding as PatchEmbedding,
)
from tinyfn.layers.transformer import (
    PositionEmbedding as PositionEmbedding,
)
from tinyfn.layers.transformer import (
    TakeToken as TakeToken,
)
from tinyfn.layers.transformer import (
    TransformerBlock as TransformerBlock,
)
from tinyfn.layers.transformer import (
    attention_probabilities as attention_probabilities,
)
from tinyfn.layers.transformer import (
    multi_head_attention as multi_head_attention,
)
from tinyfn.layers.transformer import (
    take_token as take_token,
)
