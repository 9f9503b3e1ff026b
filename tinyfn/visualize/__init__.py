"""Seeing inside a trained network: DeconvNet projections, saliency, guided backprop and pictures.

``record`` runs a model once (evaluation mode; a stateful model with its
``model_state``) and keeps every layer's input, output and max-pool switches;
``deconvnet``, ``saliency`` and ``guided_backprop`` walk a chosen activation
back down to pixels with each layer's transposed map (``step_down``:
``deconv2d``, ``max_unpool2d``, batch norm's scale, average pooling spread
back, a residual block's two paths summed) and differ at the activations;
saliency and guided backprop work for every built-in model (a ViT included); ``top_activations`` finds the
images of a dataset that excite each feature map most; ``attention_maps`` and
``attention_rollout`` show what a transformer attends to; ``plots`` draws them
(each returns a ``matplotlib.figure.Figure``). A library: it imports nothing
from ``tinyfn.train``, prints nothing and leaves matplotlib's backend alone.
"""

from tinyfn.visualize.attention import (
    ATTENTION_LAYERS as ATTENTION_LAYERS,
    attention_maps as attention_maps,
    attention_rollout as attention_rollout,
)
from tinyfn.visualize.field import receptive_field as receptive_field
from tinyfn.visualize.plots import (
    minmax as minmax,
    plot_attention as plot_attention,
    plot_comparison as plot_comparison,
    plot_deconv_grid as plot_deconv_grid,
    plot_feature_maps as plot_feature_maps,
    plot_filters as plot_filters,
)
from tinyfn.visualize.project import (
    MODES as MODES,
    RULES as RULES,
    check_channel as check_channel,
    check_walkable as check_walkable,
    deconvnet as deconvnet,
    guided_backprop as guided_backprop,
    make_projector as make_projector,
    project_down as project_down,
    saliency as saliency,
    select as select,
)
from tinyfn.visualize.record import (
    LayerInfo as LayerInfo,
    Recording as Recording,
    layer_table as layer_table,
    record as record,
    resolve_layer as resolve_layer,
)
from tinyfn.visualize.top import TopActivations as TopActivations, top_activations as top_activations
from tinyfn.visualize.walk import step_down as step_down, transformer_block_inner as transformer_block_inner
