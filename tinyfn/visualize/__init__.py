"""Seeing inside a trained network: DeconvNet projections, saliency, guided backprop and pictures.

``record`` runs a model once and keeps every layer's input, output and
max-pool switches; ``deconvnet``, ``saliency`` and ``guided_backprop`` walk a
chosen activation back down to pixels with tinyfn's own transposed maps
(``max_unpool2d``, ``deconv2d``, ``relu``); ``top_activations`` finds the
images of a dataset that excite each feature map most; ``attention_maps`` and
``attention_rollout`` show what a transformer attends to; ``plots`` draws them
(each returns a ``matplotlib.figure.Figure``). A library: it imports nothing
from ``tinyfn.train``, prints nothing and leaves matplotlib's backend alone.
"""

from tinyfn.visualize.attention import ATTENTION_LAYERS, attention_maps, attention_rollout
from tinyfn.visualize.plots import minmax, plot_comparison, plot_deconv_grid, plot_feature_maps, plot_filters
from tinyfn.visualize.project import (
    MODES,
    RULES,
    check_channel,
    check_walkable,
    deconvnet,
    guided_backprop,
    make_projector,
    project_down,
    receptive_field,
    saliency,
    select,
)
from tinyfn.visualize.record import LayerInfo, Recording, layer_table, record, resolve_layer
from tinyfn.visualize.top import TopActivations, top_activations

__all__ = [
    "record",
    "Recording",
    "LayerInfo",
    "layer_table",
    "resolve_layer",
    "select",
    "check_channel",
    "project_down",
    "make_projector",
    "deconvnet",
    "saliency",
    "guided_backprop",
    "receptive_field",
    "RULES",
    "check_walkable",
    "MODES",
    "top_activations",
    "TopActivations",
    "minmax",
    "plot_deconv_grid",
    "plot_filters",
    "plot_feature_maps",
    "plot_comparison",
    "attention_maps",
    "attention_rollout",
    "ATTENTION_LAYERS",
]
