"""Layers as pure ``(init, apply)`` pairs, and the differentiable ops they use.

Each op sits in the same file as its handwritten ``custom_vjp`` rule and the
layer constructor that calls it; ``kernels`` evaluates the products inside the
convolution and pooling rules, by one of ``FORMULATIONS``.
"""

from tinyfn.layers.activation import (
    LogSoftmax as LogSoftmax,
    ReLU as ReLU,
    Softmax as Softmax,
    log_softmax as log_softmax,
    relu as relu,
    softmax as softmax,
)
from tinyfn.layers.attention import (
    ATTENTION_FORMULATIONS as ATTENTION_FORMULATIONS,
    dot_product_attention as dot_product_attention,
)
from tinyfn.layers.avg_pool import (
    AvgPool2D as AvgPool2D,
    GlobalAvgPool2D as GlobalAvgPool2D,
    avg_pool2d as avg_pool2d,
    global_avg_pool2d as global_avg_pool2d,
)
from tinyfn.layers.base import (
    Layer as Layer,
    apply_with_state as apply_with_state,
    has_state as has_state,
    init_with_state as init_with_state,
    make_combinator as make_combinator,
    make_layer as make_layer,
    parameterless as parameterless,
    serial as serial,
)
from tinyfn.layers.combinators import (
    Add as Add,
    Concat as Concat,
    FanOut as FanOut,
    Identity as Identity,
    add_arrays as add_arrays,
    branch as branch,
    concat_arrays as concat_arrays,
    parallel as parallel,
    residual as residual,
)
from tinyfn.layers.conv import (
    Conv2D as Conv2D,
    Deconv2D as Deconv2D,
    conv2d as conv2d,
    conv_output_size as conv_output_size,
    deconv2d as deconv2d,
    deconv_output_size as deconv_output_size,
)
from tinyfn.layers.conv1d import Conv1D as Conv1D, conv1d as conv1d
from tinyfn.layers.conv_matrix import (
    conv2d_matrix as conv2d_matrix,
    deconv2d_matrix as deconv2d_matrix,
    unrolled_filter_matrix as unrolled_filter_matrix,
)
from tinyfn.layers.dropout import Dropout as Dropout, dropout as dropout
from tinyfn.layers.embedding import Embedding as Embedding, embedding as embedding
from tinyfn.layers.group_norm import GroupNorm as GroupNorm, group_norm as group_norm
from tinyfn.layers.kernels import (
    FORMULATIONS as FORMULATIONS,
    default_formulation as default_formulation,
    formulation as formulation,
)
from tinyfn.layers.linear import Linear as Linear, linear as linear
from tinyfn.layers.names import (
    SHORT as SHORT,
    LayerName as LayerName,
    Named as Named,
    layer_names as layer_names,
    leaf_names as leaf_names,
    named_params as named_params,
    param_mask as param_mask,
    params_at as params_at,
)
from tinyfn.layers.norm import (
    BatchNorm1D as BatchNorm1D,
    BatchNorm2D as BatchNorm2D,
    LayerNorm as LayerNorm,
    batch_norm as batch_norm,
    batch_norm_inference as batch_norm_inference,
    batch_norm_with_stats as batch_norm_with_stats,
    layer_norm as layer_norm,
)
from tinyfn.layers.pointwise import (
    GELU as GELU,
    LeakyReLU as LeakyReLU,
    Sigmoid as Sigmoid,
    SiLU as SiLU,
    Tanh as Tanh,
    gelu as gelu,
    leaky_relu as leaky_relu,
    sigmoid as sigmoid,
    silu as silu,
    tanh as tanh,
)
from tinyfn.layers.pool import (
    MaxPool2D as MaxPool2D,
    max_pool2d as max_pool2d,
    max_pool2d_with_switches as max_pool2d_with_switches,
    max_unpool2d as max_unpool2d,
)
from tinyfn.layers.precision import Float32 as Float32
from tinyfn.layers.reshape import Flatten as Flatten, Reshape as Reshape, flatten as flatten, reshape as reshape
from tinyfn.layers.spec import (
    LAYERS as LAYERS,
    from_spec as from_spec,
    register_layer as register_layer,
    to_spec as to_spec,
)
from tinyfn.layers.tabulate import summary as summary
from tinyfn.layers.transformer import (
    MultiHeadAttention as MultiHeadAttention,
    PatchEmbedding as PatchEmbedding,
    PositionEmbedding as PositionEmbedding,
    TakeToken as TakeToken,
    TransformerBlock as TransformerBlock,
    attention_probabilities as attention_probabilities,
    multi_head_attention as multi_head_attention,
    take_token as take_token,
)
from tinyfn.layers.upsample import Upsample as Upsample, upsample_nearest2d as upsample_nearest2d
