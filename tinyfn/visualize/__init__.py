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

from tinyfn.visualize.attention import (
    ATTENTION_LAYERS as ATTENTION_LAYERS,
)
from tinyfn.visualize.attention import (
    attention_maps as attention_maps,
)
from tinyfn.visualize.attention import (
    attention_rollout as attention_rollout,
)
from tinyfn.visualize.plots import (
    minmax as minmax,
)
from tinyfn.visualize.plots import (
    plot_comparison as plot_comparison,
)
from tinyfn.visualize.plots import (
    plot_deconv_grid as plot_deconv_grid,
)
from tinyfn.visualize.plots import (
    plot_feature_maps as plot_feature_maps,
)
from tinyfn.visualize.plots import (
    plot_filters as plot_filters,
)
from tinyfn.visualize.project import (
    MODES as MODES,
)
from tinyfn.visualize.project import (
    RULES as RULES,
)
from tinyfn.visualize.project import (
    check_channel as check_channel,
)
from tinyfn.visualize.project import (
    check_walkable as check_walkable,
)
from tinyfn.visualize.project import (
    deconvnet as deconvnet,
)
from tinyfn.visualize.project import (
    guided_backprop as guided_backprop,
)
from tinyfn.visualize.project import (
    make_projector as make_projector,
)
from tinyfn.visualize.project import (
    project_down as project_down,
)
from tinyfn.visualize.project import (
    receptive_field as receptive_field,
)
from tinyfn.visualize.project import (
    saliency as saliency,
)
from tinyfn.visualize.project import (
    select as select,
)
from tinyfn.visualize.record import (
    LayerInfo as LayerInfo,
)
from tinyfn.visualize.record import (
    Recording as Recording,
)
from tinyfn.visualize.record import (
    layer_table as layer_table,
)
from tinyfn.visualize.record import (
    record as record,
)
from tinyfn.visualize.record import (
    resolve_layer as resolve_layer,
)
from tinyfn.visualize.top import TopActivations as TopActivations
from tinyfn.visualize.top import top_activations as top_activations
